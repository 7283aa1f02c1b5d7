-- Connect sessions (SPEC 13): a 30-minute token a web front end gets for
-- one workspace (and optionally some providers), instead of an API key.
-- Only the token's digest is stored. Times are unix microseconds.
CREATE TABLE connect_sessions (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL,
    -- JSON array of provider names; NULL: any provider.
    providers TEXT,
    return_url TEXT NOT NULL,
    -- JSON object; NULL: none.
    connection_config TEXT,
    -- The API key that created it.
    created_by TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
