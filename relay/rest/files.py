"""File routes: the two-phase upload (POST /v1/api/channels/{id}/attachments) and the signed
file URLs (/v1/files/...), streamed with Range, ETag and the headers that keep an uploaded
HTML or SVG file from running on Relay's origin. Uploads are read from the body as it arrives
(`body_chunks`); `UploadRequest` lifts the app's body limit for the upload routes, whose own
limits (relay.media.service) are checked byte by byte."""

from __future__ import annotations

import re
from email.utils import formatdate
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote

import msgspec
import trio
from msgspec import Meta
from quart import Blueprint, Response, request
from quart_trio.wrappers import TrioRequest
from quart_trio.wrappers.request import TrioBody

from relay.chat import commands, objects
from relay.chat import files as chat_files
from relay.chat import images as chat_images
from relay.chat.args import field_error
from relay.errors import BadRequest
from relay.rest.apidoc import doc
from relay.rest.http import invalid, json_response, no_content, principal
from relay.storage.files import MAX_FILES

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from werkzeug.datastructures import Headers

    from relay.chat.files import ServedFile
    from relay.config import Settings
    from relay.runtime import Runtime

MAX_FILENAME_QUERY = 1024
CACHE_CONTROL = "private, max-age=86400, immutable"  # content-addressed: never changes
PUBLIC_CACHE_CONTROL = "public, max-age=31536000, immutable"  # the URL names the blob
# Paths whose bodies are uploads: the app-wide max_body_bytes does not apply to them.
T = TypeVar("T")
_UPLOAD_PATHS = re.compile(
    r"^/v1/api/(channels/[0-9]{1,20}/(messages|attachments|icon)|users/@me(/avatar)?"
    r"|servers/[0-9]{1,20}/icon|webhooks/[0-9]{1,20}/[^/]{1,200})$"
)
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


BODY_BUFFER_BYTES = 1024 * 1024  # request body received but not yet read by the route
PACE_WAIT_S = 1.0  # the longest a connection waits for the route to take a piece


class PacedBody(TrioBody):
    """A request body that holds at most about BODY_BUFFER_BYTES the route has not read yet.

    Quart's own appends every chunk the server hands it, however far ahead of the route, so a
    fast client's 25 MiB upload sat in memory while the route encrypted it to disk. Here the
    connection waits (`wait_for_room`, see relay.app.HTTPConnection) until the route has taken
    what is buffered; hypercorn then stops reading the socket, and TCP slows the client."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None):
        super().__init__(expected_content_length, max_content_length)
        self._taken = trio.Event()
        # Only upload routes read their body piece by piece; a route that awaits the whole body
        # (get_data, json) never takes a piece, and pacing it would wait forever.
        self.paced = False

    async def __anext__(self) -> bytes:
        data = await super().__anext__()
        self._taken.set()
        self._taken = trio.Event()
        return data

    async def wait_for_room(self) -> None:
        if self.paced and len(self._data) >= BODY_BUFFER_BYTES and self._must_raise is None:
            # Bounded: a route that stopped reading (it answered early) must not hold the
            # connection forever; Quart's max_content_length still bounds what is buffered.
            with trio.move_on_after(PACE_WAIT_S):
                await self._taken.wait()


def upload_request_class(settings: Settings) -> type[TrioRequest]:
    """The app's request class: on upload routes, the body may be as long as the files of one
    message (the routes count every byte themselves; Quart's limit also bounds what it
    buffers for a route that reads slower than the client sends)."""
    upload_limit = settings.max_upload_bytes * MAX_FILES + settings.max_body_bytes

    class UploadRequest(TrioRequest):
        body_class = PacedBody

        def __init__(
            self,
            method: str,
            scheme: str,
            path: str,
            query_string: bytes,
            headers: Headers,
            *args: Any,
            **kw: Any,
        ) -> None:
            match = _UPLOAD_PATHS.match(path) if method in ("POST", "PUT", "PATCH") else None
            # A JSON body on the same path keeps max_body_bytes: it is read whole.
            multipart_only = match is not None and (
                match.group(2) == "messages"
                or match.group(1) == "users/@me"
                or match.group(1).startswith("webhooks/")
            )
            upload = match is not None and (
                not multipart_only or is_multipart(headers.get("Content-Type", ""))
            )
            if upload:
                kw["max_content_length"] = upload_limit
            super().__init__(method, scheme, path, query_string, headers, *args, **kw)
            if upload:
                self.body.paced = True  # type: ignore[attr-defined]

    return UploadRequest


def is_multipart(content_type: str) -> bool:
    return content_type.lower().lstrip().startswith("multipart/form-data")


def decode_payload(raw: bytes | None) -> commands.CreateMessage:
    """A multipart message's payload_json (none: a message of files alone)."""
    return decode_form_json(raw, _payload, commands.CreateMessage())


def decode_form_json(raw: bytes | None, decoder: msgspec.json.Decoder[T], empty: T) -> T:
    """A multipart body's payload_json as `decoder` reads it (`empty` if there is none)."""
    if raw is None or not raw.strip():
        return empty
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise invalid(str(e)) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BadRequest(f"payload_json is not valid JSON: {e}", code="malformed_json") from None


_payload = msgspec.json.Decoder(commands.CreateMessage)


async def body_chunks() -> AsyncGenerator[bytes, None]:
    """The request body as it arrives (never whole in memory)."""
    async for data in request.body:
        if data:
            yield data


class UploadQuery(msgspec.Struct, frozen=True, kw_only=True):
    filename: Annotated[
        str, Meta(min_length=1, max_length=MAX_FILENAME_QUERY, description="the file's name")
    ]


class FileQuery(msgspec.Struct, frozen=True, kw_only=True):
    ex: Annotated[str, Meta(description="expiry, Unix seconds (signed)")]
    sig: Annotated[str, Meta(description="the URL's signature")]


def files_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("files", __name__)

    @bp.post("/v1/api/channels/<channel_id>/attachments")
    @doc(
        "Upload a file (the raw body) for a later message's `attachments`",
        response=chat_files.UploadCreated,
        query=UploadQuery,
        status={201: "stored; claim it within an hour"},
        errors=(
            "unknown_channel",
            "not_a_text_channel",
            "missing_permission",
            "timed_out",
            "bad_image",
            "file_too_large",
            "upload_quota",
            "upload_too_slow",
            "insufficient_storage",
        ),
    )
    async def upload(channel_id: str) -> Response:
        who = principal(rt)
        filename = request.args.get("filename", "")
        if not 0 < len(filename) <= MAX_FILENAME_QUERY:
            raise field_error("filename", f"1 to {MAX_FILENAME_QUERY} characters")
        created = await chat_files.upload(rt.chat, who.user_id, channel_id, filename, body_chunks())
        return json_response(created, 201)

    @bp.route("/v1/files/attachments/<attachment_id>/<filename>", methods=["GET"])
    @doc(
        "A message's file, by its signed URL (as given in the message object)",
        query=FileQuery,
        response=bytes,
        status={200: "the file", 206: "part of it (Range)"},
        errors=("unknown_file",),
        auth="none",
    )
    async def attachment(attachment_id: str, filename: str) -> Response:
        found = await chat_files.served(rt.chat, "file", attachment_id, filename, *_signature())
        return _serve(rt, found)

    @bp.route("/v1/files/previews/<attachment_id>.webp", methods=["GET"])
    @doc(
        "An image's preview (WebP, at most 1280 px a side), by its signed URL",
        query=FileQuery,
        response=bytes,
        status={200: "the file", 206: "part of it (Range)"},
        errors=("unknown_file",),
        auth="none",
    )
    async def preview(attachment_id: str) -> Response:
        found = await chat_files.served(rt.chat, "preview", attachment_id, None, *_signature())
        return _serve(rt, found)

    @bp.route("/v1/files/thumbnails/<attachment_id>.webp", methods=["GET"])
    @doc(
        "An image's thumbnail (WebP, at most 320 px a side), by its signed URL",
        query=FileQuery,
        response=bytes,
        status={200: "the file", 206: "part of it (Range)"},
        errors=("unknown_file",),
        auth="none",
    )
    async def thumbnail(attachment_id: str) -> Response:
        found = await chat_files.served(rt.chat, "thumbnail", attachment_id, None, *_signature())
        return _serve(rt, found)

    # -- avatars, icons, stored images (public: the URL names the blob) -----------------------

    @bp.put("/v1/api/users/@me/avatar")
    @doc(
        "Set one's avatar (the raw body: a PNG, JPEG, GIF or WebP image)",
        response=objects.User,
        errors=("bad_image", "file_too_large", "upload_too_slow", "insufficient_storage"),
    )
    async def put_avatar() -> Response:
        who = principal(rt)
        media = chat_files.media_of(rt.chat)
        media.require_disk()
        data = await chat_images.read_image(media, body_chunks(), chat_images.MAX_IMAGE_BYTES)
        return json_response(await chat_images.set_avatar(rt.chat, who.user_id, data))

    @bp.delete("/v1/api/users/@me/avatar")
    @doc("Remove one's avatar")
    async def delete_avatar() -> Response:
        who = principal(rt)
        await chat_images.set_avatar(rt.chat, who.user_id, None)
        return no_content()

    @bp.put("/v1/api/servers/<server_id>/icon")
    @doc(
        "Set the server's icon (MANAGE_SERVER; the raw body: a PNG, JPEG, GIF or WebP image)",
        response=objects.Server,
        errors=(
            "unknown_server",
            "missing_permission",
            "bad_image",
            "file_too_large",
            "upload_too_slow",
            "insufficient_storage",
        ),
    )
    async def put_icon(server_id: str) -> Response:
        who = principal(rt)
        media = chat_files.media_of(rt.chat)
        media.require_disk()
        data = await chat_images.read_image(media, body_chunks(), chat_images.MAX_IMAGE_BYTES)
        return json_response(await chat_images.set_icon(rt.chat, who.user_id, server_id, data))

    @bp.delete("/v1/api/servers/<server_id>/icon")
    @doc(
        "Remove the server's icon (MANAGE_SERVER)", errors=("unknown_server", "missing_permission")
    )
    async def delete_icon(server_id: str) -> Response:
        who = principal(rt)
        await chat_images.set_icon(rt.chat, who.user_id, server_id, None)
        return no_content()

    @bp.put("/v1/api/channels/<channel_id>/icon")
    @doc(
        "Set a group DM's icon (any recipient; the raw body: a PNG, JPEG, GIF or WebP image)",
        response=objects.Channel,
        errors=(
            "unknown_channel",
            "not_a_group_dm",
            "bad_image",
            "file_too_large",
            "upload_too_slow",
            "insufficient_storage",
        ),
    )
    async def put_group_icon(channel_id: str) -> Response:
        who = principal(rt)
        media = chat_files.media_of(rt.chat)
        media.require_disk()
        data = await chat_images.read_image(media, body_chunks(), chat_images.MAX_IMAGE_BYTES)
        icon = await chat_images.set_group_icon(rt.chat, who.user_id, channel_id, data)
        return json_response(icon)

    @bp.delete("/v1/api/channels/<channel_id>/icon")
    @doc("Remove a group DM's icon (any recipient)", errors=("unknown_channel", "not_a_group_dm"))
    async def delete_group_icon(channel_id: str) -> Response:
        who = principal(rt)
        await chat_images.set_group_icon(rt.chat, who.user_id, channel_id, None)
        return no_content()

    public = {200: "the image", 206: "part of it (Range)"}

    @bp.route("/v1/files/avatars/<user_id>/<digest>.webp", methods=["GET"])
    @doc("A user's avatar", response=bytes, status=public, errors=("unknown_file",), auth="none")
    async def avatar(user_id: str, digest: str) -> Response:
        return _serve(rt, await chat_images.public_image(rt.chat, "avatar", user_id, digest))

    @bp.route("/v1/files/icons/<server_id>/<digest>.webp", methods=["GET"])
    @doc("A server's icon", response=bytes, status=public, errors=("unknown_file",), auth="none")
    async def icon(server_id: str, digest: str) -> Response:
        return _serve(rt, await chat_images.public_image(rt.chat, "icon", server_id, digest))

    @bp.route("/v1/files/channel-icons/<channel_id>/<digest>.webp", methods=["GET"])
    @doc("A group DM's icon", response=bytes, status=public, errors=("unknown_file",), auth="none")
    async def group_icon(channel_id: str, digest: str) -> Response:
        found = await chat_images.public_image(rt.chat, "group_icon", channel_id, digest)
        return _serve(rt, found)

    @bp.route("/v1/files/emojis/<emoji_id>.webp", methods=["GET"])
    @doc("A custom emoji", response=bytes, status=public, errors=("unknown_file",), auth="none")
    async def emoji(emoji_id: str) -> Response:
        return _serve(rt, await chat_images.public_image(rt.chat, "emoji", None, emoji_id))

    @bp.route("/v1/files/images/<digest>.webp", methods=["GET"])
    @doc(
        "An image another feature stored (e.g. a link preview's)",
        response=bytes,
        status=public,
        errors=("unknown_file",),
        auth="none",
    )
    async def image(digest: str) -> Response:
        return _serve(rt, await chat_images.public_image(rt.chat, "image", None, digest))

    return bp


def _signature() -> tuple[str | None, str | None]:
    return request.args.get("ex"), request.args.get("sig")


def file_headers(found: ServedFile) -> dict[str, str]:
    """What every file response carries: never sniffed, never run (CSP sandbox), cached."""
    disposition = "inline" if found.inline else "attachment"
    ascii_name = found.filename.encode("ascii", "replace").decode().replace('"', "_")
    return {
        "Content-Type": found.content_type if found.inline else "application/octet-stream",
        "Content-Disposition": (
            f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(found.filename)}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Cache-Control": PUBLIC_CACHE_CONTROL if found.public else CACHE_CONTROL,
        "ETag": f'"{found.digest[:32]}"',
        "Accept-Ranges": "bytes",
    } | (
        {"Last-Modified": formatdate(found.created_ms / 1000, usegmt=True)}
        if found.created_ms
        else {}
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """[start, end) of a single `Range: bytes=` range; None for no (or an ignored) Range;
    False for one that cannot be satisfied (416)."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # multiple ranges or another unit: the whole file (RFC 9110 14.2)
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0:
            return False
        return max(0, size - length), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or (last and int(last) < start):
        return False
    return start, end


def _serve(rt: Runtime, found: ServedFile) -> Response:
    media = chat_files.media_of(rt.chat)
    headers = file_headers(found)
    size = found.reader.size
    if request.headers.get("If-None-Match") in (headers["ETag"], "*"):
        found.reader.close()
        return Response(b"", status=304, headers=headers)
    wanted = parse_range(request.headers.get("Range"), size)
    if wanted is False:
        found.reader.close()
        headers["Content-Range"] = f"bytes */{size}"
        return Response(b"", status=416, headers=headers)
    status = 200
    start, end = 0, size
    if isinstance(wanted, tuple):
        start, end = wanted
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        found.reader.close()
        return Response(b"", status=status, headers=headers)
    response = Response(media.stream(found.reader, start, end), status=status, headers=headers)
    response.timeout = None  # a large file over a slow link may take long; the client sets pace
    return response
