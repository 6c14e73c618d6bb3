-- Front-end state (Daytona's public flag and preview-signing generation, E2B's public traffic
-- flag) moves out of the user's metadata into its own column, which only the engine's
-- `update_attributes` changes, under the sandbox lock. Keys under the reserved `platinum.`
-- prefix were only ever written by front ends, so they are the ones that move.
ALTER TABLE sandboxes ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
UPDATE sandboxes SET
    attributes = COALESCE(
        (SELECT json_group_object(key, value) FROM json_each(sandboxes.metadata)
         WHERE key LIKE 'platinum.%'),
        '{}'),
    metadata = COALESCE(
        (SELECT json_group_object(key, value) FROM json_each(sandboxes.metadata)
         WHERE key NOT LIKE 'platinum.%'),
        '{}');
