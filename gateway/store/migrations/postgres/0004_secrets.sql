-- The hashing secrets this database has known, by fingerprint (an HMAC of a fixed label under
-- the secret; never the secret). Exactly one is current; a start with a secret that is neither
-- the current one nor rotating away from it is refused, instead of every key turning unknown.
CREATE TABLE hashing_secrets (
    fingerprint TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('current', 'retired')),
    since       TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX hashing_secrets_one_current ON hashing_secrets (state) WHERE state = 'current';

-- Which secret each key's stored hash was made with, so `gateway keys rehash-status` can say
-- when a previous secret is no longer needed. NULL only before the first start records one.
ALTER TABLE api_keys ADD COLUMN secret_fingerprint TEXT;
CREATE INDEX api_keys_secret_fingerprint ON api_keys (secret_fingerprint);
