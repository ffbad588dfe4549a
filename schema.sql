-- The whole schema of a fresh Relay database. Older databases reach the same schema through the
-- numbered migrations in relay/storage/migrations/ (a test checks the two agree).
-- IDs are 64-bit snowflakes; times are Unix milliseconds.

CREATE TABLE IF NOT EXISTS server_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    display_name TEXT,
    password_hash TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS users_username ON users (username COLLATE NOCASE);

CREATE TABLE IF NOT EXISTS user_keys (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    public_key BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS user_keys_user ON user_keys (user_id);

-- A login session: one refresh-token family. Revoking it ends every token of the family.
CREATE TABLE IF NOT EXISTS auth_sessions (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_reason TEXT,
    user_agent TEXT,
    ip TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS auth_sessions_user ON auth_sessions (user_id);

-- Every refresh token ever issued, by SHA-256; a used one presented again revokes its session.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    used_at INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refresh_tokens_session ON refresh_tokens (session_id);

-- Single-use Ed25519 login challenges.
CREATE TABLE IF NOT EXISTS auth_challenges (
    challenge BLOB PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS auth_challenges_user ON auth_challenges (user_id);

PRAGMA user_version = 1;
