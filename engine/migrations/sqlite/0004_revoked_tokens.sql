-- Tokens revoked before their expiry (Daytona signed preview links, ...), so a revocation survives
-- a restart. Only a SHA-256 of the token is kept, never the token; rows are pruned once the token
-- would have expired anyway. `expires_at` is Unix seconds.
CREATE TABLE revoked_tokens (
    hash        TEXT PRIMARY KEY NOT NULL,   -- hex SHA-256 of the token
    kind        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER NOT NULL             -- Unix milliseconds
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
