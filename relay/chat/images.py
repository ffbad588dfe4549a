"""Images that are not message files: avatars, server icons, and images other features store
(link previews). Each is re-encoded to WebP without metadata (relay.media.images) and stored
as a blob; its URL names the blob, so it never changes for the same image and is cached for
good (docs/files.md). A replaced avatar's or icon's blob is released when nothing else uses it.
"""

from __future__ import annotations

from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING

import msgspec

from relay.chat import events
from relay.chat.args import snowflake
from relay.chat.files import ServedFile, media_of
from relay.chat.imagerefs import release_images
from relay.chat.objects import dm_out, server_out, user_out
from relay.errors import BadRequest, NotFound, PayloadTooLarge
from relay.ids import parse_id
from relay.media import form, images
from relay.media.blobs import is_digest
from relay.media.kinds import SNIFF_BYTES, sniff
from relay.media.service import bounded_chunks
from relay.media.urls import image_path
from relay.permissions import P
from relay.storage import files, group_dms
from relay.storage.access import now_ms, require_server
from relay.storage.users import get_user

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from relay.chat.context import Chat
    from relay.chat.objects import Channel, Server, User
    from relay.media.service import Media

MAX_IMAGE_BYTES = 10 * 1024 * 1024  # an avatar or icon upload, before it is shrunk
PREVIEW_SIDE = images.PREVIEW_SIDE


class StoredImage(msgspec.Struct, frozen=True, kw_only=True):
    """An image stored for another feature: `url` is stable and needs no signature."""

    digest: str
    url: str
    content_type: str  # always image/webp
    width: int
    height: int


async def read_image(media: Media, chunks: AsyncGenerator[bytes, None], limit: int) -> bytes:
    """A whole (small) image body, refused at the first byte over `limit` (413) or when it
    arrives slower than the upload floor (408)."""
    budget = media.budget(limit)
    out = bytearray()
    async with aclosing(bounded_chunks(chunks, budget)) as body:
        async for data in body:
            out += data
            if len(out) > limit:
                raise PayloadTooLarge(
                    f"an image may be at most {limit} bytes", code="file_too_large"
                )
    return bytes(out)


class ImageForm(msgspec.Struct, frozen=True):
    """A multipart body with an image: its payload_json and the image's bytes (each None if
    the part was not sent)."""

    payload: bytes | None
    image: bytes | None


async def read_image_form(
    media: Media,
    content_type: str,
    chunks: AsyncGenerator[bytes, None],
    image_part: str,
    max_json_bytes: int,
) -> ImageForm:
    """Read a small multipart body: `payload_json` (at most max_json_bytes) and the image part
    named `image_part` (at most MAX_IMAGE_BYTES, refused at the first byte over: 413), once
    each; any other part is 400 malformed_form. Slower than the upload floor: 408."""
    try:
        stream = form.FormStream(form.boundary_of(content_type))
    except form.FormError as e:
        raise BadRequest(str(e), code="malformed_form") from None
    parts: dict[str, bytearray] = {}
    limits = {"payload_json": max_json_bytes, image_part: MAX_IMAGE_BYTES}
    current: str | None = None
    budget = media.budget(MAX_IMAGE_BYTES + max_json_bytes)
    try:
        async with aclosing(bounded_chunks(chunks, budget)) as body:
            async for data in body:
                for event in stream.feed(data):
                    if isinstance(event, form.Part):
                        if event.name not in limits or event.name in parts:
                            reason = f"only payload_json and {image_part}, once each"
                            raise BadRequest(reason, code="malformed_form")
                        current = event.name
                        parts[current] = bytearray()
                    elif isinstance(event, form.Data) and current is not None:
                        parts[current] += event.data
                        if len(parts[current]) > limits[current]:
                            raise PayloadTooLarge(
                                f"{current} may be at most {limits[current]} bytes",
                                code="file_too_large",
                            )
                    else:
                        current = None
        stream.close()
    except form.FormError as e:
        raise BadRequest(str(e), code="malformed_form") from None
    payload, image = parts.get("payload_json"), parts.get(image_part)
    return ImageForm(
        bytes(payload) if payload is not None else None,
        bytes(image) if image is not None else None,
    )


def image_type(data: bytes) -> str:
    kind = sniff(data[:SNIFF_BYTES])
    if not kind.image:
        raise BadRequest("not a PNG, JPEG, GIF or WebP image", code="bad_image")
    return kind.content_type


async def square_blob(media: Media, data: bytes, side: int) -> tuple[str, bool]:
    """Store `data` as a square WebP (pending: settle it once its row is written); its
    digest, and whether it is animated."""
    content_type = image_type(data)
    try:
        shaped = await media.workers.square(data, content_type, side)
    except images.BadImage as e:
        raise BadRequest(str(e), code="bad_image") from None
    ref = await media.put(shaped.data)
    return ref.digest, shaped.animated


async def store_image(chat: Chat, data: bytes, max_side: int = PREVIEW_SIDE) -> StoredImage:
    """Store an image fetched or made by another feature (e.g. a link preview): oriented,
    stripped, re-encoded as a still WebP at most `max_side` px a side. Identical images are
    stored once. Its URL (`image_path`) stays valid until `release_image`. Raises
    BadRequest("bad_image") for anything that is not a usable PNG, JPEG, GIF or WebP."""
    media = media_of(chat)
    content_type = image_type(data)
    try:
        fitted = await media.workers.fit_webp(data, content_type, max_side)
    except images.BadImage as e:
        raise BadRequest(str(e), code="bad_image") from None
    ref = await media.put(fitted.data)
    try:
        await chat.store.write(files.add_image, ref.digest, fitted.width, fitted.height, now_ms())
    finally:
        media.settled([ref.digest])
    return StoredImage(
        digest=ref.digest,
        url=image_path(ref.digest),
        content_type="image/webp",
        width=fitted.width,
        height=fitted.height,
    )


async def release_image(chat: Chat, digest: str) -> None:
    """The feature that stored an image no longer needs it: unless a message still shows it
    (relay.chat.imagerefs keeps count), its URL stops working and its
    blob goes once nothing else uses it."""
    await release_images(chat, [digest])


# -- avatars -------------------------------------------------------------------------------------


async def set_avatar(chat: Chat, user_id: int, data: bytes | None) -> User:
    """Set (None: remove) the user's avatar: square, at most 512 px; their sessions hear
    USER_UPDATE."""
    media = media_of(chat)
    digest = None
    if data is not None:
        digest, _ = await square_blob(media, data, images.AVATAR_SIDE)
    try:
        before = await chat.store.write(files.set_avatar, user_id, digest)
    finally:
        if digest is not None:
            media.settled([digest])
    if before is not None and before != digest:
        await media.release([before], partial(chat.store.read, files.unreferenced))
    row = await chat.store.read(get_user, user_id)
    assert row is not None
    user = user_out(row)
    chat.fanout.to_users((user_id,), events.UserUpdate(d=user))
    return user


# -- server icons --------------------------------------------------------------------------------


async def set_icon(chat: Chat, user_id: int, server_id: str, data: bytes | None) -> Server:
    """Set (None: remove) the server's icon (MANAGE_SERVER): square, at most 512 px; its
    members hear SERVER_UPDATE."""
    media = media_of(chat)
    sid = snowflake(server_id, "server")
    await chat.store.read(require_server, sid, user_id, P.MANAGE_SERVER)  # before any work
    digest = None
    if data is not None:
        digest, _ = await square_blob(media, data, images.AVATAR_SIDE)
    try:
        server, before = await chat.store.write(files.set_server_icon, sid, user_id, digest)
    finally:
        if digest is not None:
            media.settled([digest])
    if before is not None and before != digest:
        await media.release([before], partial(chat.store.read, files.unreferenced))
    payload = server_out(server)
    chat.fanout.to_server(sid, events.ServerUpdate(d=payload))
    return payload


# -- group DM icons ------------------------------------------------------------------------------


async def set_group_icon(chat: Chat, user_id: int, channel_id: str, data: bytes | None) -> Channel:
    """Set (None: remove) a group DM's icon (any recipient, as a rename): square, at most
    512 px; its recipients hear CHANNEL_UPDATE. Raises NotFound("unknown_channel"),
    BadRequest("not_a_group_dm" | "bad_image")."""
    media = media_of(chat)
    cid = snowflake(channel_id, "channel")
    await chat.store.read(group_dms.group, cid, user_id)  # before any work
    digest = None
    if data is not None:
        digest, _ = await square_blob(media, data, images.AVATAR_SIDE)
    try:
        dm, before = await chat.store.write(group_dms.set_icon, cid, user_id, digest)
    finally:
        if digest is not None:
            media.settled([digest])
    if before is not None and before != digest:
        await media.release([before], partial(chat.store.read, files.unreferenced))
    payload = dm_out(dm)
    if before != digest:
        recipients = [u.id for u in dm.recipients]
        chat.fanout.to_users(recipients, events.ChannelUpdate(d=payload), dm=True)
    return payload


# -- serving -------------------------------------------------------------------------------------


async def public_image(chat: Chat, kind: str, owner: str | None, digest: str) -> ServedFile:
    """An avatar ("avatar", owner: the user id), icon ("icon", the server id; "group_icon",
    the group DM's id), emoji
    ("emoji", owner: None, digest: the emoji id) or stored image ("image"): 404 unknown_file
    unless the URL names what is current."""
    media = media_of(chat)
    gone = NotFound("unknown file", code="unknown_file")
    if kind == "emoji":
        emoji_id = parse_id(digest)
        found = await chat.store.read(files.emoji_digest, emoji_id) if emoji_id else None
        if found is None:
            raise gone
        digest = found
    elif not is_digest(digest):
        raise gone
    elif kind == "image":
        if not await chat.store.read(files.has_image, digest):
            raise gone
    elif kind == "group_icon":
        channel = parse_id(owner or "")
        if channel is None or await chat.store.read(files.group_icon_of, channel) != digest:
            raise gone
    else:
        owner_id = parse_id(owner or "")
        lookup = files.avatar_of if kind == "avatar" else files.icon_of
        if owner_id is None or await chat.store.read(lookup, owner_id) != digest:
            raise gone
    reader = await media.open_blob(digest)
    if reader is None:
        raise gone
    return ServedFile(
        reader=reader,
        digest=digest,
        content_type="image/webp",
        inline=True,
        filename=f"{kind}.webp",
        created_ms=0,
        public=True,
    )
