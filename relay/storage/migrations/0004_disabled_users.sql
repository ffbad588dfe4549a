-- Migration 4: accounts an operator disabled (`relay user disable`): they cannot log in or
-- refresh, and their logins were revoked in the same transaction. And an index on revocations,
-- which a running server polls to learn of logins another process (the admin CLI) revoked.

ALTER TABLE users ADD COLUMN disabled_at INTEGER;

CREATE INDEX IF NOT EXISTS auth_sessions_revoked ON auth_sessions (revoked_at)
    WHERE revoked_at IS NOT NULL;
