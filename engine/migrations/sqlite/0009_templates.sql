-- Custom templates and their builds. A template row exists only for a build that finished; a
-- rebuild replaces the row (same id). Both keep their full record as JSON: the engine reads
-- them whole, and only the columns it looks up by are columns.
CREATE TABLE templates (
    name        TEXT PRIMARY KEY NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL,              -- CustomTemplate as JSON
    updated_at  INTEGER NOT NULL
);
CREATE TABLE template_builds (
    id          TEXT PRIMARY KEY NOT NULL,
    template    TEXT NOT NULL,
    status      TEXT NOT NULL,              -- building | ready | error
    body        TEXT NOT NULL,              -- TemplateBuild as JSON
    log         TEXT NOT NULL DEFAULT '[]', -- its log lines as JSON, once it ended
    created_at  INTEGER NOT NULL
);
CREATE INDEX template_builds_status ON template_builds (status);
