-- Migration 8: full-text search over messages, and mentions of roles, @everyone and @here (relay/storage/search.py, docs/search.md).
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
INSERT INTO message_search_backfill (next_id) SELECT 0 WHERE EXISTS (SELECT 1 FROM messages);

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
