-- Key lifecycle: rotation with a grace period (the old key names its successor and stops
-- at its expiry).
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
-- IP allow-lists (JSON lists of CIDR networks; NULL: any address). A user's list, set by
-- administrators, bounds every key of his.
ALTER TABLE api_keys ADD COLUMN allowed_networks TEXT;
ALTER TABLE users ADD COLUMN allowed_networks TEXT;
-- The audit log, readable: whose account each entry concerns (the user, or the owner of the
-- key it names), so an owner sees his keys' history and admins filter by user.
ALTER TABLE audit_log ADD COLUMN subject_user TEXT;
UPDATE audit_log SET subject_user = substr(target, 6) WHERE target LIKE 'user:%';
UPDATE audit_log SET subject_user = (SELECT k.user_id FROM api_keys k WHERE 'key:' || k.id = audit_log.target)
    WHERE target LIKE 'key:%';
CREATE INDEX audit_log_subject_user ON audit_log (subject_user, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
-- Leaked keys: when a key was reported leaked (secret scanning, `gateway keys disclose`),
-- and the reports already received (body and signature hashed), for replay protection.
ALTER TABLE api_keys ADD COLUMN leaked_at TIMESTAMPTZ;
ALTER TABLE api_keys ADD COLUMN leak_source TEXT;
CREATE TABLE leak_reports (
    digest      BYTEA PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX leak_reports_received_at ON leak_reports (received_at);
-- Least privilege: when each of a key's permissions last let a request through (recorded
-- in batches, off the request path). Idle keys use api_keys.last_used_at.
CREATE TABLE key_permission_use (
    key_id       TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    permission   TEXT NOT NULL,
    last_used_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key_id, permission)
);
