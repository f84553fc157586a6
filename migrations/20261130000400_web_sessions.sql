-- Browser sessions of the web pages. A session stands for the API token it was opened with:
-- it has that token's role and scope, and ends when the token is revoked (checked on every
-- request) or deleted. Only the SHA-256 of the 256-bit session id is kept, so a copy of this
-- table opens no session.
CREATE TABLE web_sessions (
    session_hash bytea PRIMARY KEY CHECK (length(session_hash) = 32),
    token_id     uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    -- Set by signing out.
    ended_at     timestamptz,
    CHECK (expires_at > created_at)
);

CREATE INDEX web_sessions_token ON web_sessions (token_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
