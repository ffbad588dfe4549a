"""Files: uploads (raw bodies and multipart messages), and the files a signed URL names.

Who may upload is checked before the first byte is stored: the channel must be one the user
may post in with ATTACH_FILES, the disk above its floor. Bytes go to relay.media as they
arrive, limits checked on the way (relay.media.service.Spool); each stored file becomes an
upload row (relay.storage.files) that a message claims in its own transaction. Serving checks
the URL's signature (made only for those who could read the message) and that the message
still exists.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from relay.chat.messages import sendable_channel
from relay.errors import BadRequest, NotFound, PayloadTooLarge, Unavailable
from relay.ids import parse_id
from relay.media import form
from relay.media.kinds import is_inline
from relay.media.service import Budget, Stored, bounded_chunks
from relay.media.urls import attachment_path, preview_path, thumbnail_path
from relay.permissions import P
from relay.storage import files
from relay.storage.access import now_ms
from relay.storage.files import MAX_FILES, NewUpload

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from relay.chat.context import Chat
    from relay.media.blobs import BlobReader
    from relay.media.service import Media, Spool


class UploadCreated(msgspec.Struct, frozen=True, kw_only=True):
    upload_id: str  # name it in a message's attachments within an hour


class Form(msgspec.Struct, frozen=True):
    """A multipart message body: its payload_json, and the uploads its files became."""

    payload: bytes | None
    upload_ids: list[int]


@dataclass(frozen=True, kw_only=True)
class ServedFile:
    reader: BlobReader
    digest: str
    content_type: str
    inline: bool
    filename: str
    created_ms: int  # 0: unknown (public images: their URL changes with them instead)
    public: bool = False  # avatars, icons, emoji, stored images: cacheable by anyone


def media_of(chat: Chat) -> Media:
    if chat.media is None:
        raise Unavailable("files are not available", code="unavailable")
    return chat.media


class Uploads:
    """One request's uploads to one channel: checked once, the quota shared by its files."""

    def __init__(self, chat: Chat, user_id: int, channel_id: int, budget: Budget) -> None:
        self.chat = chat
        self.media = media_of(chat)
        self.user_id = user_id
        self.channel_id = channel_id
        self.budget = budget

    @classmethod
    async def open(cls, chat: Chat, user_id: int, channel_id: str) -> Uploads:
        """Raises NotFound("unknown_channel"), Forbidden("missing_permission" for
        SEND_MESSAGES or ATTACH_FILES), InsufficientStorage (507)."""
        channel = await sendable_channel(chat, user_id, channel_id)
        channel.require(P.ATTACH_FILES)
        return await cls.for_uploader(chat, user_id, channel.id)

    @classmethod
    async def for_uploader(cls, chat: Chat, uploader_id: int, channel_id: int) -> Uploads:
        """Uploads whose permission the caller checked (a webhook's token), within the
        uploader's daily quota. Raises InsufficientStorage (507)."""
        media = media_of(chat)
        media.require_disk()
        used = await chat.store.read(files.used_today, uploader_id, now_ms())
        left = max(0, chat.settings.upload_quota_bytes - used)
        return cls(chat, uploader_id, channel_id, media.budget(left))

    async def receive(self, filename: str, chunks: AsyncGenerator[bytes, None]) -> int:
        """Store one file from its chunks; its upload id."""
        spool = await self.media.spool(filename, self.budget)
        try:
            async with aclosing(bounded_chunks(chunks, self.budget)) as body:
                async for data in body:
                    await spool.write(data)
            stored = await spool.finish()
        except BaseException:
            await spool.abort()
            raise
        return await self.record(stored)

    async def record(self, stored: Stored) -> int:
        upload_id = self.chat.store.ids.next()
        new = NewUpload(
            channel_id=self.channel_id,
            uploader_id=self.user_id,
            filename=stored.filename,
            digest=stored.blob.digest,
            size=stored.blob.size,
            content_type=stored.content_type,
            width=stored.width,
            height=stored.height,
            preview_digest=stored.preview.digest if stored.preview else None,
            thumb_digest=stored.thumbnail.digest if stored.thumbnail else None,
        )
        try:
            await self.chat.store.write(files.add_upload, upload_id, new, now_ms())
        finally:
            self.media.settled(stored.digests)
        return upload_id

    async def receive_form(
        self, content_type: str, chunks: AsyncGenerator[bytes, None], max_json_bytes: int
    ) -> Form:
        """Read a multipart message body: `payload_json` (at most max_json_bytes) and files
        `files[0]`..`files[9]`, each stored as it arrives. Other parts are refused."""
        try:
            stream = form.FormStream(form.boundary_of(content_type))
        except form.FormError as e:
            raise BadRequest(str(e), code="malformed_form") from None
        receiver = _FormReceiver(self, max_json_bytes)
        try:
            async with aclosing(bounded_chunks(chunks, self.budget)) as body:
                async for data in body:
                    try:
                        events = stream.feed(data)
                    except form.FormError as e:
                        raise BadRequest(str(e), code="malformed_form") from None
                    for event in events:
                        await receiver.on(event)
            try:
                stream.close()
            except form.FormError as e:
                raise BadRequest(str(e), code="malformed_form") from None
        except BaseException:
            if receiver.spool is not None:
                await receiver.spool.abort()
            raise
        payload = bytes(receiver.payload) if receiver.payload is not None else None
        return Form(payload, receiver.upload_ids)


class _FormReceiver:
    """Where each part of a multipart message goes: payload_json into memory (bounded),
    files into spools."""

    def __init__(self, uploads: Uploads, max_json_bytes: int) -> None:
        self.uploads = uploads
        self.max_json_bytes = max_json_bytes
        self.payload: bytearray | None = None
        self.in_payload = False
        self.spool: Spool | None = None
        self.upload_ids: list[int] = []

    async def on(self, event: form.Event) -> None:
        if isinstance(event, form.Part):
            await self._begin(event)
        elif isinstance(event, form.Data):
            if self.in_payload and self.payload is not None:
                self.payload += event.data
                if len(self.payload) > self.max_json_bytes:
                    raise PayloadTooLarge("payload_json is too large", code="payload_too_large")
            elif self.spool is not None:
                await self.spool.write(event.data)
        elif self.in_payload:
            self.in_payload = False
        elif self.spool is not None:
            done, self.spool = self.spool, None
            self.upload_ids.append(await self.uploads.record(await done.finish()))

    async def _begin(self, part: form.Part) -> None:
        if part.name == "payload_json" and self.payload is None:
            self.payload, self.in_payload = bytearray(), True
        elif _is_file_part(part.name) and part.filename is not None:
            if len(self.upload_ids) >= MAX_FILES:
                raise PayloadTooLarge(f"at most {MAX_FILES} files a message", code="too_many_files")
            self.spool = await self.uploads.media.spool(part.filename, self.uploads.budget)
        else:
            reason = "only payload_json and files[0] to files[9] are taken"
            raise BadRequest(f"unexpected part {part.name[:40]!r}: {reason}", code="malformed_form")


def _is_file_part(name: str) -> bool:
    if not (name.startswith("files[") and name.endswith("]")):
        return False
    index = name[6:-1]  # files[10] and on are counted, and refused as too_many_files
    return index.isascii() and index.isdigit() and len(index) <= 2


async def upload(
    chat: Chat, user_id: int, channel_id: str, filename: str, chunks: AsyncGenerator[bytes, None]
) -> UploadCreated:
    """A file for a later message (two-phase upload)."""
    uploads = await Uploads.open(chat, user_id, channel_id)
    return UploadCreated(upload_id=str(await uploads.receive(filename, chunks)))


# -- serving -------------------------------------------------------------------------------------

Variant = str  # "file", "preview" or "thumbnail"


async def served(
    chat: Chat,
    variant: Variant,
    attachment_id: str,
    filename: str | None,
    ex: str | None,
    sig: str | None,
) -> ServedFile:
    """The file a signed URL names, open for reading. Everything that is not a valid,
    unexpired URL of a file of an existing message is the same 404 unknown_file."""
    media = media_of(chat)
    gone = NotFound("unknown file", code="unknown_file")
    aid = parse_id(attachment_id)
    if aid is None:
        raise gone
    if variant == "file":
        path = attachment_path(aid, filename or "")
    elif variant == "preview":
        path = preview_path(aid)
    else:
        path = thumbnail_path(aid)
    if not media.verify(path, ex, sig):
        raise gone
    row = await chat.store.read(files.file, aid)
    if row is None or row.message_id is None:
        raise gone
    digest = {"file": row.digest, "preview": row.preview_digest, "thumbnail": row.thumb_digest}[
        variant
    ]
    if digest is None:
        raise gone
    reader = await media.open_blob(digest)
    if reader is None:
        raise gone
    if variant == "file":
        return ServedFile(
            reader=reader,
            digest=digest,
            content_type=row.content_type,
            inline=is_inline(row.content_type),
            filename=row.filename,
            created_ms=row.created_at,
        )
    return ServedFile(
        reader=reader,
        digest=digest,
        content_type="image/webp",
        inline=True,
        filename=f"{variant}.webp",
        created_ms=row.created_at,
    )
