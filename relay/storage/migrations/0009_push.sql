-- Migration 9: Web Push (docs/push.md). A push subscription belongs to one login
-- (auth_sessions row) and goes with it; its endpoint is unique (a browser's subscription moves
-- to whichever login registers it last). Notification settings per server and per channel
-- (level all | mentions | none, NULL to inherit; muted_until in Unix ms), and per user whether
-- pushes may carry message text.

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
