-- Migration 14 (SQLite's 0014_fencing.sql): each channel's newest owner fencing token for
-- cluster mode (relay/storage/fencing.py, docs/ownership.md).

CREATE TABLE channel_fences (
    channel_id BIGINT PRIMARY KEY,
    fence BIGINT NOT NULL
);
