-- Durable invalidation: every change the data plane must see writes one row per affected
-- key in the transaction of the change. Instances read new rows by increasing id (SQLite
-- has one writer, so ids commit in order) and prune old ones.
-- A row holds a key's keyed hash, never a key.
-- Declared type TIMESTAMPTZ selects the converter registered in sqlite.py.
CREATE TABLE invalidations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash   BLOB NOT NULL,
    user_id    TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX invalidations_key_hash ON invalidations (key_hash);
CREATE INDEX invalidations_created_at ON invalidations (created_at);
