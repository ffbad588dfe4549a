"""Custom emoji: a server's small images, used in messages as `<:name:id>` and as reactions
`name:id`. Creating needs CREATE_EMOJIS (or MANAGE_EMOJIS); renaming and deleting need
MANAGE_EMOJIS, or being the creator with CREATE_EMOJIS. Each change sends the server's whole
list as SERVER_EMOJIS_UPDATE."""

from __future__ import annotations

import base64
import binascii
import re
from functools import partial
from typing import TYPE_CHECKING

from relay.chat import events
from relay.chat.args import snowflake
from relay.chat.commands import MAX_EMOJI_BYTES
from relay.chat.files import media_of
from relay.chat.images import square_blob
from relay.chat.objects import Emoji, EmojisUpdate, emoji_out
from relay.errors import BadRequest, NotFound, PayloadTooLarge
from relay.media.images import EMOJI_SIDE
from relay.storage import emojis, files
from relay.storage.access import now_ms, require_server

if TYPE_CHECKING:
    from relay.chat import commands
    from relay.chat.context import Chat

# In message content, like a mention: `<:name:id>`, `<a:name:id>` for an animated one.
_IN_TEXT = re.compile(r"<(a?):([A-Za-z0-9_]{2,32}):([1-9][0-9]{0,18})>")
MAX_PARSED = 50  # custom emoji counted per message


def parse_custom_emojis(content: str) -> list[tuple[str, int, bool]]:
    """The (name, id, animated) of each `<:name:id>` / `<a:name:id>` token, first occurrence
    of each id first, without repeats, at most MAX_PARSED."""
    seen: dict[int, tuple[str, int, bool]] = {}
    for match in _IN_TEXT.finditer(content):
        emoji_id = int(match.group(3))
        if emoji_id not in seen:
            seen[emoji_id] = (match.group(2), emoji_id, match.group(1) == "a")
            if len(seen) >= MAX_PARSED:
                break
    return list(seen.values())


def _image_of(text: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            "image: not base64", code="invalid_field", fields={"image": "base64"}
        ) from None
    if len(data) > MAX_EMOJI_BYTES:
        raise PayloadTooLarge(
            f"an emoji image may be at most {MAX_EMOJI_BYTES} bytes", code="file_too_large"
        )
    return data


async def list_all(chat: Chat, user_id: int, server_id: str) -> list[Emoji]:
    rows = await chat.store.read(emojis.list_emojis, snowflake(server_id, "server"), user_id)
    return [emoji_out(row) for row in rows]


async def _announce(chat: Chat, server_id: int) -> None:
    rows = await chat.store.read(emojis.server_emojis, server_id)
    payload = EmojisUpdate(server_id=str(server_id), emojis=[emoji_out(r) for r in rows])
    chat.fanout.to_server(server_id, events.ServerEmojisUpdate(d=payload))


async def create(chat: Chat, user_id: int, server_id: str, data: commands.CreateEmoji) -> Emoji:
    media = media_of(chat)
    sid = snowflake(server_id, "server")
    image = _image_of(data.image)
    await chat.store.read(require_server, sid, user_id)  # a member, before any image work
    media.require_disk()
    digest, animated = await square_blob(media, image, EMOJI_SIDE)
    try:
        row = await chat.store.write(
            emojis.create_emoji,
            chat.store.ids.next(),
            sid,
            user_id,
            data.name,
            digest,
            animated,
            now_ms(),
        )
    except BaseException:
        media.settled([digest])
        await media.release([digest], partial(chat.store.read, files.unreferenced))
        raise
    media.settled([digest])
    await _announce(chat, sid)
    return emoji_out(row)


async def rename(
    chat: Chat, user_id: int, server_id: str, emoji_id: str, data: commands.UpdateEmoji
) -> Emoji:
    sid = snowflake(server_id, "server")
    eid = _emoji_id(emoji_id)
    row = await chat.store.write(emojis.rename_emoji, sid, eid, user_id, data.name)
    await _announce(chat, sid)
    return emoji_out(row)


async def delete(chat: Chat, user_id: int, server_id: str, emoji_id: str) -> None:
    media = media_of(chat)
    sid = snowflake(server_id, "server")
    row = await chat.store.write(emojis.delete_emoji, sid, _emoji_id(emoji_id), user_id)
    await media.release([row.digest], partial(chat.store.read, files.unreferenced))
    await _announce(chat, sid)


def _emoji_id(text: str) -> int:
    try:
        return snowflake(text, "emoji")
    except NotFound:
        raise emojis.unknown_emoji() from None
