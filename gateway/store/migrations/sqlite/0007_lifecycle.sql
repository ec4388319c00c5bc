-- Key lifecycle: rotation with a grace period (the old key names its successor and stops
-- at its expiry).
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
-- IP allow-lists (JSON lists of CIDR networks; NULL: any address). A user's list, set by
-- administrators, bounds every key of his.
ALTER TABLE api_keys ADD COLUMN allowed_networks TEXT;
ALTER TABLE users ADD COLUMN allowed_networks TEXT;
