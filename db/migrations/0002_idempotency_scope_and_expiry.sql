-- Idempotency keys belong to the caller that sent them and expire (issue 10, item 11).
-- `caller` is API Gateway's usage identifier of the API key (requestContext.identity.apiKeyId), else the SHA-256
-- of the key presented: two callers may use the same key for different reports. Keys from before this
-- migration have no known caller (''), so no request matches them again; they expire like any other.
ALTER TABLE ingest.idempotency_keys ADD COLUMN IF NOT EXISTS caller TEXT NOT NULL DEFAULT '';
ALTER TABLE ingest.idempotency_keys ALTER COLUMN caller DROP DEFAULT;
ALTER TABLE ingest.idempotency_keys DROP CONSTRAINT IF EXISTS idempotency_keys_pkey;
ALTER TABLE ingest.idempotency_keys ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (caller, key);
-- The purge and the claim's takeover of an expired key find old keys by age.
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at_idx ON ingest.idempotency_keys (created_at);
