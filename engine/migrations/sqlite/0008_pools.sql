-- Warm pools: sandboxes kept restored and running for a template (or a snapshot) at one size, so
-- a create claims one instead of starting a VM. A pooled sandbox is an ordinary sandbox row with
-- `pool_id` set; the claim clears it in the same statement that hands the row to its caller, so
-- one sandbox is never claimed twice. Pooled rows are not listed to callers.
CREATE TABLE pools (
    id          TEXT PRIMARY KEY NOT NULL,
    template    TEXT NOT NULL,
    snapshot    TEXT,                       -- id of the snapshot restored, if not the template's
    vcpus       INTEGER NOT NULL,
    memory_mib  INTEGER NOT NULL,
    size        INTEGER NOT NULL,           -- sandboxes to keep ready
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
ALTER TABLE sandboxes ADD COLUMN pool_id TEXT;
CREATE INDEX sandboxes_pool ON sandboxes (pool_id, state) WHERE pool_id IS NOT NULL;
