-- Sandbox names and lifecycle rules (first needed by the Daytona front end; every front end may
-- use them). A name is unique among sandboxes that are not deleted; rule columns are seconds and
-- NULL means "never".
ALTER TABLE sandboxes ADD COLUMN name TEXT;
ALTER TABLE sandboxes ADD COLUMN stop_after_idle_secs INTEGER;
ALTER TABLE sandboxes ADD COLUMN archive_after_stopped_secs INTEGER;
ALTER TABLE sandboxes ADD COLUMN delete_after_stopped_secs INTEGER;
CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes (name)
    WHERE name IS NOT NULL AND state != 'deleted';
