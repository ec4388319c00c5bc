-- Hosted pages: browser sessions and the one-time codes of the authorize code flow.
-- Both hold only a keyed hash of their token; a row never holds a key or a password.
-- Declared type TIMESTAMPTZ selects the converter registered in sqlite.py.
CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE authorization_codes (
    code_hash              BLOB PRIMARY KEY,
    user_id                TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permissions            TEXT NOT NULL DEFAULT '[]',
    label                  TEXT NOT NULL,
    application_identifier TEXT,
    redirect_origin        TEXT NOT NULL,
    code_challenge         TEXT,
    replace_key_id         TEXT,
    created_at             TIMESTAMPTZ NOT NULL,
    expires_at             TIMESTAMPTZ NOT NULL
);
CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at);
