-- A key's own rate limits and usage credits (gateway/limits/). Apart from api_keys so a key
-- without any costs nothing. `limits` is a JSON list of limit names from the policy;
-- `credits` the remaining units (NULL: the key spends no credits), refilled per `refill`
-- (daily or monthly, by `refill_mode`: replace the balance with `refill_amount`, or add it).
-- `period` names the refill period the balance belongs to; `version` grows with every change
-- an administrator makes, so a write-behind of an older balance cannot undo it.
CREATE TABLE key_quotas (
    key_id        TEXT PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    limits        TEXT NOT NULL DEFAULT '[]',
    credits       BIGINT,
    refill        TEXT CHECK (refill IN ('daily', 'monthly')),
    refill_amount BIGINT NOT NULL DEFAULT 0,
    refill_mode   TEXT NOT NULL DEFAULT 'replace' CHECK (refill_mode IN ('replace', 'add')),
    period        TEXT,
    version       BIGINT NOT NULL DEFAULT 1
);
