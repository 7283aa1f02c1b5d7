-- API keys with roles (SPEC 13). Only a digest of each key is stored
-- (SHA-256 of the whole key: keys are 256 random bits, so no slow hash is
-- needed); `prefix` is the key's first characters, for people to tell keys
-- apart. Times are unix microseconds.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- admin | agent | connect
    role TEXT NOT NULL,
    -- JSON array of workspace ids; NULL: every workspace.
    workspaces TEXT,
    digest TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
