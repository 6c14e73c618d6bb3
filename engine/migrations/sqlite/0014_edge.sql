-- The product's edge proxy: the HMAC keys that sign edge tokens (the newest signs, every one
-- listed verifies; deleting a key revokes every token it signed) and the ports exposed per
-- sandbox (`public` ones need no token).
CREATE TABLE edge_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    secret      TEXT NOT NULL,               -- hex, 32 random bytes
    created_at  INTEGER NOT NULL             -- Unix milliseconds
);
CREATE TABLE edge_exposures (
    sandbox_id  TEXT NOT NULL,
    port        INTEGER NOT NULL,
    public      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,            -- Unix milliseconds
    PRIMARY KEY (sandbox_id, port)
);
