-- Named persistent volumes: one row per volume, the whole record (attachments included) as
-- JSON; the name is unique so lookups by name are one row.
CREATE TABLE volumes (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL,              -- Volume as JSON
    created_at  INTEGER NOT NULL
);
