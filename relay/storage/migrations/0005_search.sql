-- Migration 5: full-text search over messages (relay/storage/search.py, docs/search.md).
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
