-- Edge signing keys sealed at rest with the data directory's secrets key, as secrets are
-- (`vault.rs`: XChaCha20-Poly1305, 24-byte nonce, then ciphertext and tag; associated data
-- `edge-key:<kid>`; the sealed text is the key's hex). Keys made before this migration keep
-- their hex in `legacy_secret` until the engine's next start seals them and clears it (SQL
-- cannot encrypt). Secure delete is on while the old table's pages are freed, so the clear
-- bytes are overwritten rather than left in free pages.
PRAGMA secure_delete = ON;
CREATE TABLE edge_keys_sealed (
    kid            TEXT PRIMARY KEY NOT NULL,
    sealed         BLOB,
    legacy_secret  TEXT,                     -- hex in clear, only until the next start
    created_at     INTEGER NOT NULL,         -- Unix milliseconds
    CHECK ((sealed IS NULL) <> (legacy_secret IS NULL))
);
INSERT INTO edge_keys_sealed (kid, sealed, legacy_secret, created_at)
    SELECT kid, NULL, secret, created_at FROM edge_keys;
DROP TABLE edge_keys;
ALTER TABLE edge_keys_sealed RENAME TO edge_keys;
PRAGMA secure_delete = OFF;
