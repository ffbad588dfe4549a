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
, disabled_at INTEGER, bot INTEGER NOT NULL DEFAULT 0 CHECK (bot IN (0, 1)), avatar TEXT) STRICT;
-- disabled_at: migration 4 (ALTER TABLE), Unix ms, NULL = enabled; bot: migration 6; avatar: migration 10
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
-- A running server polls recent revocations (relay.accounts.Accounts.follow_revocations).
CREATE INDEX IF NOT EXISTS auth_sessions_revoked ON auth_sessions (revoked_at)
    WHERE revoked_at IS NOT NULL;

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

-- Chat: servers, channels, members, invites, DMs, messages, reactions, mentions, read state.

-- Columns that migration 3 added with ALTER TABLE (is_public, description; rate_limit_per_user,
-- permissions_synced; communication_disabled_until) are written the way SQLite stores an added
-- column, odd commas included, so a fresh and a migrated database have the same schema text.
CREATE TABLE IF NOT EXISTS servers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    owner_id INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL
, is_public INTEGER NOT NULL DEFAULT 0 CHECK (is_public IN (0, 1)), description TEXT, icon TEXT) STRICT;

-- Text, voice and category channels of a server, threads (parent_id: their text channel), and
-- 1:1 and group DM channels (server_id NULL).
CREATE TABLE IF NOT EXISTS channels (
    id INTEGER PRIMARY KEY,
    server_id INTEGER REFERENCES servers (id) ON DELETE CASCADE,
    type TEXT NOT NULL CHECK (type IN ('text', 'voice', 'category', 'dm', 'thread', 'group_dm')),
    name TEXT,
    topic TEXT,
    position INTEGER NOT NULL DEFAULT 0,
    parent_id INTEGER REFERENCES channels (id) ON DELETE SET NULL,
    dm_key TEXT UNIQUE, -- "<lower user id>:<higher user id>" for DMs: one channel per pair
    last_message_id INTEGER,
    created_at INTEGER NOT NULL
, rate_limit_per_user INTEGER NOT NULL DEFAULT 0, permissions_synced INTEGER NOT NULL DEFAULT 0 CHECK (permissions_synced IN (0, 1)), owner_id INTEGER, archived INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)), locked INTEGER NOT NULL DEFAULT 0 CHECK (locked IN (0, 1)), auto_archive INTEGER, archive_ts INTEGER, starter_message_id INTEGER, user_limit INTEGER NOT NULL DEFAULT 0
    CHECK (user_limit BETWEEN 0 AND 99), e2ee_required INTEGER NOT NULL DEFAULT 0
    CHECK (e2ee_required IN (0, 1)), icon TEXT) STRICT;
CREATE INDEX IF NOT EXISTS channels_server ON channels (server_id, position);
CREATE INDEX IF NOT EXISTS channels_parent ON channels (parent_id) WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS channels_starter ON channels (starter_message_id)
    WHERE starter_message_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS members (
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    nickname TEXT,
    joined_at INTEGER NOT NULL, communication_disabled_until INTEGER, voice_mute INTEGER NOT NULL DEFAULT 0
    CHECK (voice_mute IN (0, 1)), voice_deaf INTEGER NOT NULL DEFAULT 0
    CHECK (voice_deaf IN (0, 1)),
    PRIMARY KEY (server_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_user ON members (user_id);

CREATE TABLE IF NOT EXISTS dm_recipients (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (channel_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dm_recipients_user ON dm_recipients (user_id);

-- Who follows a thread (joined, was added, or posted in it).
CREATE TABLE IF NOT EXISTS thread_members (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS thread_members_user ON thread_members (user_id);

CREATE TABLE IF NOT EXISTS invites (
    code TEXT PRIMARY KEY,
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    inviter_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    max_uses INTEGER, -- NULL: unlimited
    uses INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER, -- NULL: never
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS invites_server ON invites (server_id);

-- created_at is derivable from the snowflake id.
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    author_id INTEGER NOT NULL REFERENCES users (id),
    content TEXT NOT NULL,
    nonce TEXT,
    reply_to INTEGER,
    edited_at INTEGER
, embeds TEXT, flags INTEGER NOT NULL DEFAULT 0) STRICT; -- embeds, flags: migration 5 (ALTER TABLE), docs/embeds.md
CREATE INDEX IF NOT EXISTS messages_channel ON messages (channel_id, id);
CREATE INDEX IF NOT EXISTS messages_nonce ON messages (author_id, nonce) WHERE nonce IS NOT NULL;

CREATE TABLE IF NOT EXISTS message_mentions (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_mentions_user ON message_mentions (user_id, channel_id, message_id);

CREATE TABLE IF NOT EXISTS reactions (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    emoji TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
) STRICT, WITHOUT ROWID;

-- A user's read position per channel; the mention count is derived from message_mentions.
CREATE TABLE IF NOT EXISTS read_states (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    last_read_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, channel_id)
) STRICT, WITHOUT ROWID;

-- Roles, permissions and moderation (migration 3).

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
, managed_by INTEGER) STRICT; -- managed_by: migration 6, the bot whose managed role it is
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

-- Bots and webhooks (migration 6).
-- An application: a bot user owned by a person. token_hash: SHA-256 of the bot token (shown
-- once); token_id changes with every reset and stands for the bot's login (its gateway
-- sessions close when it goes).
CREATE TABLE IF NOT EXISTS applications (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    bot_id INTEGER NOT NULL UNIQUE REFERENCES users (id),
    name TEXT NOT NULL,
    public INTEGER NOT NULL DEFAULT 0 CHECK (public IN (0, 1)),
    token_hash BLOB NOT NULL UNIQUE,
    token_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS applications_owner ON applications (owner_id);

-- An incoming webhook; its id is also the id of the (bot) user its messages are written by.
CREATE TABLE IF NOT EXISTS webhooks (
    id INTEGER PRIMARY KEY REFERENCES users (id),
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    creator_id INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS webhooks_channel ON webhooks (channel_id);
CREATE INDEX IF NOT EXISTS webhooks_server ON webhooks (server_id);

-- Who a webhook's message shows as: the name (the webhook's, or the message's override) and
-- avatar URL it was posted with.
CREATE TABLE IF NOT EXISTS webhook_messages (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    webhook_id INTEGER NOT NULL,
    username TEXT NOT NULL,
    avatar_url TEXT
) STRICT;

-- A bot's managed role goes when the bot leaves the server (kick, ban, leave, app deleted).
CREATE TRIGGER IF NOT EXISTS members_managed_roles AFTER DELETE ON members
BEGIN
    DELETE FROM roles WHERE server_id = OLD.server_id AND managed_by = OLD.user_id;
END;

-- Full-text search over messages (relay/storage/search.py, docs/search.md).
-- `body` is the folded copy of the message's content (relay.storage.fulltext.fold); the rowid is
-- the message id. Creates and edits write it from Python in the same transaction; deletes of
-- any kind (one, bulk, a ban's, a channel's or server's cascade) through the trigger.
CREATE VIRTUAL TABLE IF NOT EXISTS message_search USING fts5 (
    body, tokenize = 'unicode61 remove_diacritics 0'
);
CREATE TRIGGER IF NOT EXISTS messages_search_delete AFTER DELETE ON messages BEGIN
    DELETE FROM message_search WHERE rowid = old.id;
END;
-- Where the backfill of existing messages has got to: one row while it is under way (the
-- server finishes it, in batches, before it serves; relay.storage.search.backfill).
CREATE TABLE IF NOT EXISTS message_search_backfill (next_id INTEGER NOT NULL) STRICT;

-- Mentions beyond users (relay/storage/mentions.py): roles mentioned, @everyone/@here, and for
-- @here the members it reached (online and able to see the channel when it was posted).
CREATE TABLE IF NOT EXISTS message_role_mentions (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    PRIMARY KEY (message_id, role_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_role_mentions_role
    ON message_role_mentions (role_id, channel_id, message_id);
CREATE TABLE IF NOT EXISTS message_everyone (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    here INTEGER NOT NULL CHECK (here IN (0, 1))
) STRICT;
CREATE INDEX IF NOT EXISTS message_everyone_channel ON message_everyone (channel_id, message_id);
CREATE TABLE IF NOT EXISTS message_here (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_here_user ON message_here (user_id, channel_id, message_id);

-- Web Push subscriptions (one login each) and notification settings (docs/push.md).
CREATE TABLE IF NOT EXISTS push_subscriptions (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_session_id INTEGER NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    p256dh BLOB NOT NULL,
    auth BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS push_subscriptions_user ON push_subscriptions (user_id);
CREATE INDEX IF NOT EXISTS push_subscriptions_session ON push_subscriptions (auth_session_id);

CREATE TABLE IF NOT EXISTS server_notification_settings (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    level TEXT,
    muted_until INTEGER,
    PRIMARY KEY (user_id, server_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS channel_notification_settings (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    level TEXT,
    muted_until INTEGER,
    PRIMARY KEY (user_id, channel_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS notification_preferences (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    hide_content INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE IF NOT EXISTS attachments (
    id INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    uploader_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    message_id INTEGER REFERENCES messages (id) ON DELETE CASCADE,
    position INTEGER NOT NULL DEFAULT 0,
    filename TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    preview_digest TEXT,
    thumb_digest TEXT,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS attachments_message ON attachments (message_id, position)
    WHERE message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS attachments_unclaimed ON attachments (created_at)
    WHERE message_id IS NULL;
CREATE INDEX IF NOT EXISTS attachments_digest ON attachments (digest);
CREATE INDEX IF NOT EXISTS attachments_preview ON attachments (preview_digest)
    WHERE preview_digest IS NOT NULL;
CREATE INDEX IF NOT EXISTS attachments_thumb ON attachments (thumb_digest)
    WHERE thumb_digest IS NOT NULL;

-- Bytes each user uploaded per UTC day (day = Unix ms // 86400000): the daily quota.
CREATE TABLE IF NOT EXISTS upload_usage (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (user_id, day)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS users_avatar ON users (avatar) WHERE avatar IS NOT NULL;
CREATE INDEX IF NOT EXISTS servers_icon ON servers (icon) WHERE icon IS NOT NULL;
CREATE TABLE IF NOT EXISTS emojis (
    id INTEGER PRIMARY KEY,
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    animated INTEGER NOT NULL DEFAULT 0 CHECK (animated IN (0, 1)),
    creator_id INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS emojis_server ON emojis (server_id, id);
CREATE INDEX IF NOT EXISTS emojis_digest ON emojis (digest);
CREATE TABLE IF NOT EXISTS images (
    digest TEXT PRIMARY KEY,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS message_images (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (message_id, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_images_digest ON message_images (digest);
CREATE INDEX IF NOT EXISTS channels_icon ON channels (icon) WHERE icon IS NOT NULL;

CREATE TABLE IF NOT EXISTS channel_fences (
    channel_id INTEGER PRIMARY KEY,
    fence INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

PRAGMA user_version = 15;
