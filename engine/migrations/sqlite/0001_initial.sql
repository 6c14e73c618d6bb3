-- Sandboxes, API keys and the audit trail. Times are Unix milliseconds.
CREATE TABLE sandboxes (
    id               TEXT PRIMARY KEY NOT NULL,
    template         TEXT NOT NULL,
    state            TEXT NOT NULL,
    vcpus            INTEGER NOT NULL,
    memory_mib       INTEGER NOT NULL,
    env              TEXT NOT NULL,          -- JSON object
    metadata         TEXT NOT NULL,          -- JSON object
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    expires_at       INTEGER,
    on_timeout       TEXT NOT NULL,
    last_activity_at INTEGER NOT NULL,
    error            TEXT,
    runtime          TEXT                    -- JSON RuntimeInfo while a VM exists
);
CREATE INDEX sandboxes_state ON sandboxes (state);
CREATE INDEX sandboxes_created ON sandboxes (created_at DESC, id DESC);
CREATE INDEX sandboxes_expires ON sandboxes (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,       -- hex SHA-256 of the key
    created_at   INTEGER NOT NULL
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id  TEXT NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL                -- JSON
);
CREATE INDEX events_sandbox ON events (sandbox_id, id);
