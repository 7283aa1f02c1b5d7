-- Connections: the handshake in progress (single-use state, sealed PKCE verifier,
-- OIDC nonce, expiry) and the sealed credentials once active.
ALTER TABLE connections ADD COLUMN auth_type TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN provider_name TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN scopes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE connections ADD COLUMN return_url TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN metadata TEXT;
ALTER TABLE connections ADD COLUMN state_nonce TEXT;
ALTER TABLE connections ADD COLUMN handshake_expires_at BIGINT;
ALTER TABLE connections ADD COLUMN pkce_verifier_enc TEXT;
ALTER TABLE connections ADD COLUMN oidc_nonce TEXT;
ALTER TABLE connections ADD COLUMN credentials_enc TEXT;
ALTER TABLE connections ADD COLUMN refresh_token_enc TEXT;
ALTER TABLE connections ADD COLUMN expires_at BIGINT;
ALTER TABLE connections ADD COLUMN last_error TEXT;
CREATE INDEX connections_status ON connections (status, expires_at);
