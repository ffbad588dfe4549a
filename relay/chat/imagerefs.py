"""Which messages show which stored images (relay.chat.images.store_image): embed and link
preview images and webhook avatars. A message records the images it shows when its embeds or
avatar change (`show_images`); an image goes (its URL, then its blob once nothing else names
it) when no message shows it any more (`release_images`), e.g. when its messages are deleted or
edited so that they no longer show it. Images whose messages went with their channel or server
are forgotten by the prune (relay.storage.files.prune_images).
"""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING, Any

from relay.media.urls import FILES_PREFIX
from relay.storage import files

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from relay.chat.context import Chat


async def release_images(chat: Chat, digests: Sequence[str]) -> None:
    """These stored images are no longer needed by what released them: each goes unless a
    message still shows it (its URL at once, its blob once nothing else names it)."""
    if not digests or chat.media is None:
        return
    gone = [d for d in dict.fromkeys(digests) if await chat.store.write(files.remove_image, d)]
    if gone:
        await chat.media.release(gone, partial(chat.store.read, files.unreferenced))


_DIGEST_IN_URL = re.compile(re.escape(FILES_PREFIX) + r"/images/([0-9a-f]{64})\.webp")


def image_digests(text: str | None) -> list[str]:
    """The stored images (by digest) that image URLs in `text` (e.g. embeds as JSON) name."""
    return list(dict.fromkeys(_DIGEST_IN_URL.findall(text or "")))


def embed_image_digests(embeds: Sequence[Mapping[str, Any]]) -> list[str]:
    """The stored images embeds (as stored, or Embed builtins) show in their image slots only
    (`image`, `thumbnail`, `author.icon_url`, `footer.icon_url`): text a sender wrote never
    counts as showing an image."""
    urls: list[str] = []
    for embed in embeds:
        for slot in ("image", "thumbnail"):
            urls.append((embed.get(slot) or {}).get("url") or "")
        for part in ("author", "footer"):
            urls.append((embed.get(part) or {}).get("icon_url") or "")
    return image_digests(" ".join(urls))


async def show_images(chat: Chat, message_id: int, candidates: Sequence[str] = ()) -> None:
    """After a message's embeds or avatar changed: record the stored images it shows (of
    `candidates`, freshly stored for it, and those it showed) and release the rest."""
    if chat.media is None:
        return
    if not candidates and not await chat.store.read(files.images_of_messages, [message_id]):
        return  # most edits: nothing to count, so no write
    unshown = await chat.store.write(files.sync_message_images, message_id, candidates)
    await release_images(chat, unshown)
