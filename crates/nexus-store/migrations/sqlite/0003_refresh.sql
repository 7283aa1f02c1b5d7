-- Token lifecycle: when the refresher should next look at a connection (unix
-- seconds; NULL when it has nothing to refresh), its backoff state, and a lease
-- so replicas never work on the same connection.
ALTER TABLE connections ADD COLUMN next_refresh_at BIGINT;
ALTER TABLE connections ADD COLUMN refresh_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN lease_until BIGINT;
ALTER TABLE connections ADD COLUMN last_refreshed_at BIGINT;
CREATE INDEX connections_refresh_due ON connections (next_refresh_at) WHERE next_refresh_at IS NOT NULL;
