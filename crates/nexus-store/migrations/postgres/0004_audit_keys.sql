-- Audit integrity v2 (SPEC 6b): rows are HMAC-SHA256 under an audit key.
-- hash_version: NULL or 1 = v1 (unkeyed SHA-256, valid only before the first
-- keyed row), 2 = HMAC under the key `key_id`. The API key that caused a row
-- is recorded (`bootstrap` for the environment's key).
ALTER TABLE audit_log ADD COLUMN hash_version INTEGER;
ALTER TABLE audit_log ADD COLUMN key_id TEXT;
ALTER TABLE audit_log ADD COLUMN api_key_id TEXT;
ALTER TABLE audit_log ADD COLUMN api_key_name TEXT;
CREATE INDEX audit_log_api_key ON audit_log (api_key_id, seq);
