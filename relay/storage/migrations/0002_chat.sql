-- Migration 2: servers, channels, members, invites, direct messages, messages, reactions,
-- mentions and read state.

CREATE TABLE IF NOT EXISTS servers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    owner_id INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL
) STRICT;

-- Text, voice and category channels of a server, and 1:1 DM channels (server_id NULL).
CREATE TABLE IF NOT EXISTS channels (
    id INTEGER PRIMARY KEY,
    server_id INTEGER REFERENCES servers (id) ON DELETE CASCADE,
    type TEXT NOT NULL CHECK (type IN ('text', 'voice', 'category', 'dm')),
    name TEXT,
    topic TEXT,
    position INTEGER NOT NULL DEFAULT 0,
    parent_id INTEGER REFERENCES channels (id) ON DELETE SET NULL,
    dm_key TEXT UNIQUE, -- "<lower user id>:<higher user id>" for DMs: one channel per pair
    last_message_id INTEGER,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS channels_server ON channels (server_id, position);

CREATE TABLE IF NOT EXISTS members (
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    nickname TEXT,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (server_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_user ON members (user_id);

CREATE TABLE IF NOT EXISTS dm_recipients (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (channel_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dm_recipients_user ON dm_recipients (user_id);

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
) STRICT;
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
