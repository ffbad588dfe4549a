-- Migration 13: which messages show which stored images (embed images, link preview images,
-- webhook avatars), so an image's row in `images`, and its blob, go once no message shows it
-- (relay.chat.images.release_image); a group DM's icon (a square WebP blob, like server icons).

CREATE TABLE IF NOT EXISTS message_images (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (message_id, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_images_digest ON message_images (digest);
ALTER TABLE channels ADD COLUMN icon TEXT;
CREATE INDEX IF NOT EXISTS channels_icon ON channels (icon) WHERE icon IS NOT NULL;
