-- Secrets: the bookkeeping (keys, versions, which sites have values of their own) in plain
-- JSON, and the values only encrypted: one JSON document under a data key of its own per
-- version, the data key wrapped under the master key named by key_id.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    meta        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Small named values of the control plane itself, such as the master key's check value.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The X25519 public key each host's secrets are sealed to.
ALTER TABLE hosts ADD COLUMN recipient TEXT;
