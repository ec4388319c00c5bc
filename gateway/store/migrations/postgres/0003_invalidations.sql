-- Durable invalidation: every change the data plane must see writes one row per affected
-- key in the transaction of the change. Instances read new rows by increasing id (the
-- writers serialise on an advisory lock, so ids commit in order) and prune old ones.
-- A row holds a key's keyed hash, never a key.
CREATE TABLE invalidations (
    id         BIGSERIAL PRIMARY KEY,
    key_hash   BYTEA NOT NULL,
    user_id    TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX invalidations_key_hash ON invalidations (key_hash);
CREATE INDEX invalidations_created_at ON invalidations (created_at);
