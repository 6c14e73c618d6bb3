-- Snapshots, checkpoints and pause-to-disk images. A row is inserted (ready = 0) before its
-- directory is written and marked ready once the signed manifest is in place, so a server that
-- dies in between finds the row at start and either adopts the finished directory or removes
-- the half-written one.
CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT,
    kind        TEXT NOT NULL,              -- snapshot | checkpoint | suspend
    sandbox_id  TEXT NOT NULL,
    template    TEXT NOT NULL,
    vcpus       INTEGER NOT NULL,
    memory_mib  INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    vmm         TEXT NOT NULL,
    accel       TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    timings     TEXT NOT NULL,              -- JSON SnapshotTimings
    env         TEXT NOT NULL,              -- JSON object
    metadata    TEXT NOT NULL,              -- JSON object
    ready       INTEGER NOT NULL
);
CREATE UNIQUE INDEX snapshots_name ON snapshots (name) WHERE name IS NOT NULL;
CREATE INDEX snapshots_sandbox ON snapshots (sandbox_id, created_at);
