-- Webhooks (SPEC 13): endpoints, an outbox of deliveries written in the same
-- transaction as the connection change they report, and every attempt.
-- Times are unix microseconds.
--
-- `prior_status` remembers, while a re-authorization is under way, what the
-- connection was before it (an `attention_required` connection becomes
-- `pending` for the handshake, and its success is `connection.recovered`).
ALTER TABLE connections ADD COLUMN prior_status TEXT;

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    -- JSON array of event types; NULL: every event.
    events TEXT,
    secret_enc TEXT NOT NULL,
    description TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    -- The message id, sent as `webhook-id` on every attempt.
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    connection_id TEXT,
    -- The exact bytes that are signed and sent.
    payload TEXT NOT NULL,
    -- pending | delivered | failed
    status TEXT NOT NULL,
    -- Attempts started so far; the next one is attempts + 1.
    attempts BIGINT NOT NULL DEFAULT 0,
    -- Attempts before the current retry schedule began (a redelivery restarts it).
    schedule_base BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until BIGINT,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    -- The receiver's HTTP status, when it answered.
    status_code BIGINT,
    -- delivered | http_status | timeout | unreachable | redirect_refused;
    -- NULL while the attempt is under way (or its replica died mid-way).
    outcome TEXT,
    error TEXT,
    duration_ms BIGINT,
    PRIMARY KEY (delivery_id, attempt)
);
