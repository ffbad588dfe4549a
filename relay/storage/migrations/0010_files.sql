-- Migration 10: files. An attachment row is an upload (message_id NULL until a message claims
-- it; unclaimed ones are pruned after an hour) or a message's file. Blobs are named by the
-- SHA-256 of their content (relay.media); a blob no row names is an orphan the prune removes.
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

-- Avatars, server icons and custom emoji: square WebP blobs (relay.media.images.square),
-- served by URLs naming the user, server or emoji and the blob. Images other features store
-- (link previews) have a row in `images`, which keeps their blob from the orphan sweep.
ALTER TABLE users ADD COLUMN avatar TEXT;
ALTER TABLE servers ADD COLUMN icon TEXT;
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
