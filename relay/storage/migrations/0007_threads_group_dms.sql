-- Migration 7: threads (channels of type "thread" under a text channel) and group DMs
-- (channels of type "group_dm" with 3 to 10 recipients, a name and an owner).
--
-- The channel type CHECK gains 'thread' and 'group_dm'. SQLite cannot ALTER a CHECK, and
-- rebuilding `channels` would cascade-delete every message (DROP TABLE runs the foreign key
-- actions); a CHECK that only widens changes nothing on disk, so the stored CREATE TABLE text
-- is edited in place (https://sqlite.org/lang_altertable.html#otheralter). The ADD COLUMNs
-- come first: they bump the schema cookie, so every connection re-reads the edited text.

-- Threads: who started it (also a group DM's owner), archived and locked flags, the auto-archive
-- duration in minutes, when it was last (un)archived or created (activity starts the clock),
-- and the message it was started from.
ALTER TABLE channels ADD COLUMN owner_id INTEGER;
ALTER TABLE channels ADD COLUMN archived INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1));
ALTER TABLE channels ADD COLUMN locked INTEGER NOT NULL DEFAULT 0 CHECK (locked IN (0, 1));
ALTER TABLE channels ADD COLUMN auto_archive INTEGER;
ALTER TABLE channels ADD COLUMN archive_ts INTEGER;
ALTER TABLE channels ADD COLUMN starter_message_id INTEGER;

PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, '''category'', ''dm'')', '''category'', ''dm'', ''thread'', ''group_dm'')')
WHERE type = 'table' AND name = 'channels';
PRAGMA writable_schema = RESET;

CREATE INDEX IF NOT EXISTS channels_parent ON channels (parent_id) WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS channels_starter ON channels (starter_message_id)
    WHERE starter_message_id IS NOT NULL;

-- Who follows a thread (joined, was added, or posted in it).
CREATE TABLE IF NOT EXISTS thread_members (
    channel_id INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS thread_members_user ON thread_members (user_id);

-- Servers made before: @everyone may start and post in threads where it may send messages
-- (CREATE_THREADS | SEND_MESSAGES_IN_THREADS = 1<<28 | 1<<29; SEND_MESSAGES = 1<<1), as new
-- servers' @everyone may (relay.permissions.DEFAULT_EVERYONE).
UPDATE roles SET permissions = permissions | 805306368
WHERE id = server_id AND permissions & 2 != 0;
