-- Key lifecycle: rotation with a grace period (the old key names its successor and stops
-- at its expiry).
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
