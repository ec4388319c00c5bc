-- Users, grants (as a JSON list of permission strings), resources, API keys, audit log.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    is_service    BOOLEAN NOT NULL DEFAULT FALSE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    grants        TEXT NOT NULL DEFAULT '[]',
    created_at    TIMESTAMPTZ NOT NULL
);
-- Emails are compared case-insensitively: one account per mailbox.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE resources (
    type TEXT NOT NULL,
    id   TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (type, id)
);

CREATE TABLE api_keys (
    id                     TEXT PRIMARY KEY,
    key_hash               BYTEA NOT NULL UNIQUE,
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
    encrypted_key          BYTEA
);
CREATE INDEX api_keys_user_id ON api_keys (user_id);

-- Append-only: the application never updates or deletes rows here.
CREATE TABLE audit_log (
    id     BIGSERIAL PRIMARY KEY,
    at     TIMESTAMPTZ NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_target ON audit_log (target);
