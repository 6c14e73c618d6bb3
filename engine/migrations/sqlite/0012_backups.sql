-- Continuous backup. A backup is a snapshot row (kind `backup`) whose directory was uploaded to
-- the object store and then removed; `backups` holds its signed chunk list (SignedArchive as
-- JSON), written once the upload finished. A backup row without one is an upload a server did
-- not finish, removed at start. `backup_policies` holds each sandbox's schedule.
CREATE TABLE backups (
    snapshot_id TEXT PRIMARY KEY NOT NULL,
    sandbox_id  TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX backups_sandbox ON backups (sandbox_id, created_at);
CREATE TABLE backup_policies (
    sandbox_id    TEXT PRIMARY KEY NOT NULL,
    interval_secs INTEGER NOT NULL,
    keep          INTEGER NOT NULL
);
