-- Providers: non-secret configuration as JSON, the client secret sealed by the vault.
-- Times are unix microseconds (BIGINT) so both backends sort and compare them alike.
CREATE TABLE providers (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    auth_type         TEXT NOT NULL,
    category          TEXT,
    config            TEXT NOT NULL,
    client_secret_enc TEXT,
    client_secret_fp  TEXT,
    discovery         TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX providers_auth_type ON providers (auth_type);

-- Connections: one user's credentials for one provider (filled in by later migrations).
CREATE TABLE connections (
    id           TEXT PRIMARY KEY,
    provider_id  TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX connections_provider ON connections (provider_id, status);
CREATE INDEX connections_workspace ON connections (workspace_id);

-- The audit log: append-only, each row hash-chained to the one before (seq - 1).
CREATE TABLE audit_log (
    seq           BIGINT PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    at            BIGINT NOT NULL,
    event_type    TEXT NOT NULL,
    ip            TEXT,
    user_agent    TEXT,
    provider_id   TEXT,
    connection_id TEXT,
    workspace_id  TEXT,
    data          TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX audit_log_event ON audit_log (event_type, seq);
CREATE INDEX audit_log_provider ON audit_log (provider_id, seq);
CREATE INDEX audit_log_connection ON audit_log (connection_id, seq);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, seq);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
