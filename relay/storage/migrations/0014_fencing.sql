-- Migration 14: fencing tokens for cluster mode (relay.cluster, docs/ownership.md). Each
-- channel's newest owner token: a write carrying an older one is refused (StaleOwner), so a
-- process that lost a channel's lease can never commit for it. Empty in the single process.
-- (PostgreSQL's mirror: BIGINT columns, no table options; relay/storage/fencing.py's
-- statements run unchanged on both.)

CREATE TABLE IF NOT EXISTS channel_fences (
    channel_id INTEGER PRIMARY KEY,
    fence INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
