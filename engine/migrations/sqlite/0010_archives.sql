-- Archives of sandboxes in object storage: one row per archived sandbox, holding its signed
-- archive manifest (every file as a list of chunk hashes) as JSON. Written before the sandbox
-- turns `archived` and its local copy is removed; removed once it is restored or deleted.
CREATE TABLE archives (
    sandbox_id  TEXT PRIMARY KEY NOT NULL,
    body        TEXT NOT NULL,              -- SignedArchive as JSON
    created_at  INTEGER NOT NULL
);
