-- The shared store, for several ohd nodes on one PostgreSQL database.

-- Conversations, newest first by `seq`; `seq` also serves as the opaque page cursor.
-- `next_event_id` is the id the next appended event gets. Every append moves it forward with an
-- UPDATE inside its transaction; the row lock that takes serializes appends to a conversation
-- across all nodes, and its value keeps ids dense from 0.
CREATE TABLE conversations (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    last_updated_at TIMESTAMPTZ NOT NULL,
    selected_repository TEXT,
    selected_branch TEXT,
    git_provider TEXT,
    trigger TEXT NOT NULL DEFAULT 'gui',
    next_event_id BIGINT NOT NULL DEFAULT 0
);

-- One row per event; ids are dense from 0 within a conversation. The JSON is exactly what
-- clients are sent, so replay is a copy, not a re-serialization.
CREATE TABLE events (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id BIGINT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (conversation_id, id)
);

-- Which node runs a conversation's agent. Rows are never deleted (a release or a conversation's
-- deletion only expires the lease), so `token` keeps growing and an old fence never matches a
-- later grant. No foreign key: a conversation may be leased before it is created.
CREATE TABLE leases (
    conversation_id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Named JSON documents every node shares (settings, secrets, provider tokens), kept verbatim.
CREATE TABLE documents (
    name TEXT PRIMARY KEY,
    json TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
