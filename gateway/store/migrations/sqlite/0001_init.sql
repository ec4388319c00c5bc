-- Users, grants (as a JSON list of permission strings), resources, API keys, audit log.
-- Declared types TIMESTAMPTZ and BOOLEAN select the converters registered in sqlite.py.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT 0,
    is_service    BOOLEAN NOT NULL DEFAULT 0,
    disabled      BOOLEAN NOT NULL DEFAULT 0,
    grants        TEXT NOT NULL DEFAULT '[]',
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE resources (
    type TEXT NOT NULL,
    id   TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (type, id)
);

CREATE TABLE api_keys (
    id                     TEXT PRIMARY KEY,
    key_hash               BLOB NOT NULL UNIQUE,
    user_id                TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    label                  TEXT NOT NULL,
    permissions            TEXT NOT NULL DEFAULT '[]',
    path_rule              TEXT,
    status                 TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at             TIMESTAMPTZ NOT NULL,
    expires_at             TIMESTAMPTZ,
    last_used_at           TIMESTAMPTZ,
    application_identifier TEXT,
    redirect_origin        TEXT,
    encrypted_key          BLOB
);
CREATE INDEX api_keys_user_id ON api_keys (user_id);

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TIMESTAMPTZ NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_target ON audit_log (target);
