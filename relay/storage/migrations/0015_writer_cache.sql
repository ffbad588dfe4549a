-- Migration 15: nothing changes in SQLite. On PostgreSQL it adds the counter that tells a
-- writer's permission-row cache when another process changed what it holds
-- (relay/storage/postgres/migrations/0015_writer_cache.sql); SQLite's writer learns the same
-- from PRAGMA data_version (relay/storage/sqlite/writecache.py).
SELECT 1;
