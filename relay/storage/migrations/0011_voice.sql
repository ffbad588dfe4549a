-- Migration 11: voice. A voice channel's user limit (0: none): joining a full channel is refused
-- unless the joiner has MOVE_MEMBERS there.

ALTER TABLE channels ADD COLUMN user_limit INTEGER NOT NULL DEFAULT 0
    CHECK (user_limit BETWEEN 0 AND 99);
-- A voice channel that requires end-to-end encrypted media (docs/voice.md).
ALTER TABLE channels ADD COLUMN e2ee_required INTEGER NOT NULL DEFAULT 0
    CHECK (e2ee_required IN (0, 1));
