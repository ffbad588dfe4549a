"""THE IMAGE SEAM: where an image a preview, a sent embed or a webhook's avatar_url points to
becomes an image that Relay serves itself.

Readers must never be sent to third-party hosts (that would tell every site who reads what),
so an embed only ever shows an image from Relay's own media store: `relay_image` fetches the
URL through relay.netfetch's guarded fetch (images only, at most `max_bytes`), stores it with
relay.chat.images.store_image (re-encoded as a still WebP without metadata, at most
EMBED_IMAGE_SIDE px a side) and answers Relay's URL with the image's size. Anything that cannot
become an image (a refused or failed fetch, not an image, a corrupt one) is None: the embed goes
out without it. The message that shows the image records it (relay.chat.images.show_images),
and it is released when no message shows it any more.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from relay.chat.embeds import EmbedImage
from relay.chat.images import MAX_IMAGE_BYTES, store_image
from relay.errors import BadRequest
from relay.netfetch import FetchError, Limits, fetch

if TYPE_CHECKING:
    from relay.chat.context import Chat
    from relay.netfetch import FetchPolicy

log = logging.getLogger("relay.embedmedia")

IMAGE_MAX_BYTES = MAX_IMAGE_BYTES  # the files issue's limit for an image before it is shrunk
EMBED_IMAGE_SIDE = 1280


async def relay_image(
    chat: Chat,
    source_url: str,
    policy: FetchPolicy,
    *,
    max_bytes: int = IMAGE_MAX_BYTES,
    max_side: int = EMBED_IMAGE_SIDE,
) -> EmbedImage | None:
    """The image at `source_url` as served by Relay's media store (at most `max_side` px a
    side), or None if it cannot be."""
    if chat.media is None:
        return None  # a Chat built without files (some tests): no store to serve from
    limits = Limits(max_bytes=max_bytes, content_types=("image/",))
    try:
        answer = await fetch(source_url, policy, limits, headers={"Accept": "image/*"})
        if answer.status != 200:
            return None
        stored = await store_image(chat, answer.body, max_side=max_side)
    except FetchError as e:
        log.info("image not fetched", extra={"url": source_url, "reason": e.reason})
        return None
    except BadRequest:  # bad_image: not a usable PNG, JPEG, GIF or WebP
        log.info("not an image", extra={"url": source_url})
        return None
    return EmbedImage(url=stored.url, width=stored.width, height=stored.height)
