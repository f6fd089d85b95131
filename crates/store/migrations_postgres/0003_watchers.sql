-- Which nodes have clients joined to which conversations, renewed while they do: the node that
-- runs a conversation's agent keeps it (and its shell) while someone on any node looks at it.
CREATE TABLE watchers (
    conversation_id TEXT NOT NULL,
    node TEXT NOT NULL,
    until TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (conversation_id, node)
);
