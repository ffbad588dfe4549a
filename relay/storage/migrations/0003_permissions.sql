-- Migration 3: roles and permissions, channel overwrites, bans, pins, slowmode, timeouts, the
-- audit log and server discovery.

ALTER TABLE servers ADD COLUMN is_public INTEGER NOT NULL DEFAULT 0 CHECK (is_public IN (0, 1));
ALTER TABLE servers ADD COLUMN description TEXT;
ALTER TABLE channels ADD COLUMN rate_limit_per_user INTEGER NOT NULL DEFAULT 0;
ALTER TABLE channels ADD COLUMN permissions_synced INTEGER NOT NULL DEFAULT 0 CHECK (permissions_synced IN (0, 1));
ALTER TABLE members ADD COLUMN communication_disabled_until INTEGER;

-- Slowmode looks up an author's last message in a channel; a ban deletes an author's recent ones.
CREATE INDEX IF NOT EXISTS messages_author ON messages (author_id, channel_id, id);

-- A server's roles; @everyone has the server's id and position 0. permissions: relay/permissions.py.
CREATE TABLE IF NOT EXISTS roles (
    id INTEGER PRIMARY KEY,
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    permissions INTEGER NOT NULL,
    color INTEGER NOT NULL DEFAULT 0,
    position INTEGER NOT NULL,
    hoist INTEGER NOT NULL DEFAULT 0 CHECK (hoist IN (0, 1)),
    mentionable INTEGER NOT NULL DEFAULT 0 CHECK (mentionable IN (0, 1)),
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS roles_server ON roles (server_id, position);

-- Roles held by members (never @everyone, which every member has).
CREATE TABLE IF NOT EXISTS member_roles (
    server_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    role_id INTEGER NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    PRIMARY KEY (server_id, user_id, role_id),
    FOREIGN KEY (server_id, user_id) REFERENCES members (server_id, user_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS member_roles_role ON member_roles (role_id);

-- Per-channel allow/deny for a role or a member. A role's are deleted with the role.
CREATE TABLE IF NOT EXISTS overwrites (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    target_id INTEGER NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('role', 'member')),
    allow INTEGER NOT NULL DEFAULT 0,
    deny INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, target_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS bans (
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason TEXT,
    banned_by INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (server_id, user_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS pins (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    pinned_by INTEGER NOT NULL,
    pinned_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, message_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pins_message ON pins (message_id);

-- Every role, overwrite, channel, server, invite and moderation change, written in the same
-- transaction as the change. changes: JSON [{"key", "old", "new"}].
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY,
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    target_id INTEGER,
    reason TEXT,
    changes TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS audit_log_server ON audit_log (server_id, id);

-- Servers that existed before roles get their @everyone role with the default permissions
-- (relay.permissions.DEFAULT_EVERYONE; a test checks the number).
INSERT INTO roles (id, server_id, name, permissions, position, created_at)
SELECT id, id, '@everyone', 1845311, 0, created_at FROM servers;
