-- Conversations, newest first by `seq`; `seq` also serves as the opaque page cursor.
CREATE TABLE conversations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_updated_at TEXT NOT NULL,
    selected_repository TEXT,
    selected_branch TEXT,
    git_provider TEXT,
    trigger TEXT NOT NULL DEFAULT 'gui'
);

-- One row per event; ids are dense from 0 within a conversation. The JSON is exactly what
-- clients are sent, so replay is a copy, not a re-serialization.
CREATE TABLE events (
    conversation_id TEXT NOT NULL,
    id INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (conversation_id, id)
) WITHOUT ROWID;
