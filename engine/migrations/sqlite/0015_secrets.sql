-- Secrets brokered at egress. `body` is the Secret as answered (never the value); `sealed` is
-- the value encrypted with the data directory's secrets key (XChaCha20-Poly1305: 24-byte nonce,
-- then ciphertext and tag; the secret's id is the associated data).
CREATE TABLE secrets (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Which secrets each sandbox holds placeholders of, by the environment variable that holds it.
CREATE TABLE sandbox_secrets (
    sandbox_id  TEXT NOT NULL,
    env         TEXT NOT NULL,
    secret_id   TEXT NOT NULL,
    PRIMARY KEY (sandbox_id, env)
);
CREATE INDEX sandbox_secrets_by_secret ON sandbox_secrets (secret_id);
