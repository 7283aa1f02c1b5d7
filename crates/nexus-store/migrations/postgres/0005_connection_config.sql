-- Per-connection configuration (SPEC 10): the non-secret values a connection's
-- URL templates expand over (a Zendesk subdomain, a Salesforce instance_url),
-- as a JSON object. `handshake_config` holds what a re-authorization asked
-- for until its callback succeeds (an active connection keeps its own until then).
ALTER TABLE connections ADD COLUMN connection_config TEXT NOT NULL DEFAULT '{}';
ALTER TABLE connections ADD COLUMN handshake_config TEXT;
