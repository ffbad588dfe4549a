"""THE IMAGE SEAM: where an image a preview or a sent embed points to becomes an image that
Relay serves itself.

Readers must never be sent to third-party hosts (that would tell every site who reads what),
so an embed only ever shows an image from Relay's own media store. Until that store (BlobStore,
the files issue) is merged, `relay_image` answers None: previews and sent embeds go out without
images, and sent embeds keep the asked-for URLs as pending (relay.chat.embeds.PENDING), to be
filled in when a message is next processed. Connecting the store means writing this one
function: fetch `source_url` with relay.netfetch.fetch (Limits with `max_bytes` and
content_types=("image/",)), check and store the bytes, and return the store's URL with the
image's size. Everything else (who calls it, when, what happens with the answer) is done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.chat.embeds import EmbedImage
    from relay.netfetch import FetchPolicy

IMAGE_MAX_BYTES = 8 * 1024 * 1024  # until the files issue's image limits exist


async def relay_image(
    source_url: str, policy: FetchPolicy, *, max_bytes: int = IMAGE_MAX_BYTES
) -> EmbedImage | None:
    """The image at `source_url` as served by Relay's media store, or None if it cannot be
    (today always: there is no media store yet)."""
    return None
