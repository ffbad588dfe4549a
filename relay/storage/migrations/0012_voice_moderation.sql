-- Migration 12: server mute and deafen are kept with the member (as Discord does), so they
-- outlive leaving voice and a restart, and apply again on the next join (docs/voice.md).

ALTER TABLE members ADD COLUMN voice_mute INTEGER NOT NULL DEFAULT 0
    CHECK (voice_mute IN (0, 1));
ALTER TABLE members ADD COLUMN voice_deaf INTEGER NOT NULL DEFAULT 0
    CHECK (voice_deaf IN (0, 1));
