-- Keys imported from another server keep that server's format (`gateway import btcpay`):
-- `legacy` names it ('btcpay'); NULL for Keygate's own keys. Only the keyed hash is stored,
-- as for every key.
ALTER TABLE api_keys ADD COLUMN legacy TEXT;
