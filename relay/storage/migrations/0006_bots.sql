-- Migration 6: bot accounts (applications, each with a bot user) and incoming webhooks.
-- users.bot marks bot and webhook users (no password, never a login); roles.managed_by is the
-- bot whose managed role it is (deleted with the bot's membership, by the trigger below).

ALTER TABLE users ADD COLUMN bot INTEGER NOT NULL DEFAULT 0 CHECK (bot IN (0, 1));
ALTER TABLE roles ADD COLUMN managed_by INTEGER;

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
