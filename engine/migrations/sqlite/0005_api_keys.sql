-- API key management: a short public prefix for display (never enough to use the key), the last
-- time a key was used and when it was revoked (NULL = live). Times are Unix milliseconds. Keys
-- stored before this migration show an empty prefix.
ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;
