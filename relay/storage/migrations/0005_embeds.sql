-- Migration 5: embeds and flags on messages (docs/embeds.md). `embeds` is a JSON array of
-- Discord-shaped embed objects: the sender's rich embeds (type "rich") then link previews
-- (filled in after the commit by the preview fetchers); NULL when there are none. `flags` holds
-- message flags, of which Relay uses SUPPRESS_EMBEDS (1 << 2).

ALTER TABLE messages ADD COLUMN embeds TEXT;
ALTER TABLE messages ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;
