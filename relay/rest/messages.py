"""Message routes: /v1/api/channels/{id}/messages/*, reactions, pins, bulk delete, read acks
and typing. Each decodes, calls relay.chat.messages and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType
from quart import Blueprint, Response, request

from relay.chat import commands, objects
from relay.chat import files as chat_files
from relay.chat import messages as chat_messages
from relay.chat.args import field_error
from relay.errors import BadRequest
from relay.ids import parse_id
from relay.rest.apidoc import doc
from relay.rest.files import body_chunks, decode_payload, is_multipart
from relay.rest.http import (
    Limit,
    QueryId,
    audit_reason,
    body,
    json_response,
    no_content,
    principal,
)

if TYPE_CHECKING:
    from relay.runtime import Runtime

MAX_LIMIT = 100
DEFAULT_LIMIT = 50


class HistoryQuery(msgspec.Struct, frozen=True, kw_only=True):
    """At most one of before, after and around; newest first, but oldest first with after."""

    before: Annotated[QueryId, Meta(description="messages before this id")] | UnsetType = UNSET
    after: Annotated[QueryId, Meta(description="messages after this id")] | UnsetType = UNSET
    around: Annotated[QueryId, Meta(description="messages around this id")] | UnsetType = UNSET
    limit: Limit = DEFAULT_LIMIT


class ReactorsQuery(msgspec.Struct, frozen=True, kw_only=True):
    after: Annotated[QueryId, Meta(description="users after this id")] | UnsetType = UNSET
    limit: Limit = DEFAULT_LIMIT


def query_id(name: str) -> int | None:
    text = request.args.get(name)
    if text is None:
        return None
    value = parse_id(text)
    if value is None:
        raise field_error(name, "must be an id")
    return value


def query_limit() -> int:
    text = request.args.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    # Length first: int() of thousands of digits is slow, and refused past 4300.
    if not (0 < len(text) <= 3 and text.isascii() and text.isdigit()) or not (
        1 <= int(text) <= MAX_LIMIT
    ):
        raise field_error("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


def upload_ids(refs: list[commands.UploadRef]) -> list[int]:
    return chat_messages.upload_ids([ref.id for ref in refs])


def messages_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("messages", __name__, url_prefix="/v1/api/channels")

    @bp.post("/<channel_id>/messages")
    @doc(
        "Post a message",
        body=commands.CreateMessage,
        response=objects.Message,
        status={201: "posted", 200: "a post with the same nonce made this message earlier"},
        errors=(
            "unknown_channel",
            "not_a_text_channel",
            "missing_permission",
            "timed_out",
            "thread_locked",
            "channel_busy",
            "bad_image",
            "malformed_form",
            "file_too_large",
            "too_many_files",
            "upload_quota",
            "upload_too_slow",
            "insufficient_storage",
        ),
    )
    async def create_message(channel_id: str) -> Response:
        who = principal(rt)
        uploaded: list[int] = []
        if is_multipart(request.headers.get("Content-Type", "")):
            # payload_json and files[0..9], each file stored as it arrives (docs/files.md)
            uploads = await chat_files.Uploads.open(rt.chat, who.user_id, channel_id)
            form = await uploads.receive_form(
                request.headers["Content-Type"], body_chunks(), rt.settings.max_body_bytes
            )
            data = decode_payload(form.payload)
            uploaded = form.upload_ids
        else:
            data = await body(commands.CreateMessage)
        message, created = await chat_messages.post(
            rt.chat,
            who.user_id,
            channel_id,
            data.content,
            data.nonce,
            data.reply_to,
            [*upload_ids(data.attachments), *uploaded],
            embeds=data.embeds,
            flags=data.flags,
            allowed=data.allowed_mentions,
        )
        return json_response(message, 201 if created else 200)

    @bp.get("/<channel_id>/messages")
    @doc(
        "A page of the channel's history",
        response=list[objects.Message],
        query=HistoryQuery,
        errors=("unknown_channel", "not_a_text_channel", "missing_permission"),
    )
    async def list_messages(channel_id: str) -> Response:
        who = principal(rt)
        given = [name for name in ("before", "after", "around") if name in request.args]
        if len(given) > 1:
            reason = "give at most one of before, after and around"
            raise BadRequest(reason, code="invalid_field", fields=dict.fromkeys(given, reason))
        page = await chat_messages.history(
            rt.chat,
            who.user_id,
            channel_id,
            before=query_id("before"),
            after=query_id("after"),
            around=query_id("around"),
            limit=query_limit(),
        )
        return json_response(page)

    @bp.get("/<channel_id>/messages/<message_id>")
    @doc(
        "One message",
        response=objects.Message,
        errors=("unknown_channel", "not_a_text_channel", "missing_permission", "unknown_message"),
    )
    async def get_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_messages.get(rt.chat, who.user_id, channel_id, message_id))

    @bp.patch("/<channel_id>/messages/<message_id>")
    @doc(
        "Edit one's own message",
        body=commands.EditMessage,
        response=objects.Message,
        errors=(
            "unknown_channel",
            "not_a_text_channel",
            "unknown_message",
            "not_author",
            "missing_permission",
            "timed_out",
        ),
    )
    async def edit_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.EditMessage)
        message = await chat_messages.edit(
            rt.chat,
            who.user_id,
            channel_id,
            message_id,
            None if isinstance(data.content, UnsetType) else data.content,
            embeds=data.embeds,
            flags=None if isinstance(data.flags, UnsetType) else data.flags,
        )
        return json_response(message)

    @bp.delete("/<channel_id>/messages/<message_id>")
    @doc(
        "Delete a message (one's own, or any with MANAGE_MESSAGES)",
        errors=(
            "unknown_channel",
            "not_a_text_channel",
            "unknown_message",
            "missing_permission",
            "timed_out",
        ),
    )
    async def delete_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        await chat_messages.delete(rt.chat, who.user_id, channel_id, message_id, audit_reason())
        return no_content()

    @bp.post("/<channel_id>/messages/bulk-delete")
    @doc(
        "Delete 2 to 100 messages at once (MANAGE_MESSAGES)",
        body=commands.BulkDelete,
        errors=("unknown_channel", "not_a_text_channel", "missing_permission", "timed_out"),
    )
    async def bulk_delete(channel_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.BulkDelete)
        await chat_messages.bulk_delete(
            rt.chat, who.user_id, channel_id, data.messages, audit_reason()
        )
        return no_content()

    # -- pins ----------------------------------------------------------------------------------

    @bp.get("/<channel_id>/pins")
    @doc(
        "The channel's pinned messages",
        response=list[objects.Message],
        errors=("unknown_channel", "not_a_text_channel", "missing_permission"),
    )
    async def list_pins(channel_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_messages.pins(rt.chat, who.user_id, channel_id))

    @bp.put("/<channel_id>/pins/<message_id>")
    @doc(
        "Pin a message (MANAGE_MESSAGES)",
        errors=(
            "unknown_channel",
            "not_a_text_channel",
            "unknown_message",
            "missing_permission",
            "timed_out",
            "too_many_pins",
        ),
    )
    async def pin_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        await chat_messages.set_pinned(
            rt.chat, who.user_id, channel_id, message_id, True, audit_reason()
        )
        return no_content()

    @bp.delete("/<channel_id>/pins/<message_id>")
    @doc(
        "Unpin a message (MANAGE_MESSAGES)",
        errors=(
            "unknown_channel",
            "not_a_text_channel",
            "unknown_message",
            "missing_permission",
            "timed_out",
        ),
    )
    async def unpin_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        await chat_messages.set_pinned(
            rt.chat, who.user_id, channel_id, message_id, False, audit_reason()
        )
        return no_content()

    # -- reactions -----------------------------------------------------------------------------

    @bp.put("/<channel_id>/messages/<message_id>/reactions/<emoji>/@me")
    @doc(
        "React to a message",
        errors=(
            "unknown_channel",
            "not_a_text_channel",
            "unknown_message",
            "invalid_emoji",
            "missing_permission",
            "timed_out",
            "too_many_reactions",
        ),
    )
    async def add_reaction(channel_id: str, message_id: str, emoji: str) -> Response:
        who = principal(rt)
        await chat_messages.react(rt.chat, who.user_id, channel_id, message_id, emoji, add=True)
        return no_content()

    @bp.delete("/<channel_id>/messages/<message_id>/reactions/<emoji>/@me")
    @doc(
        "Take one's reaction back",
        errors=(
            "unknown_channel",
            "not_a_text_channel",
            "unknown_message",
            "invalid_emoji",
            "missing_permission",
            "timed_out",
        ),
    )
    async def remove_reaction(channel_id: str, message_id: str, emoji: str) -> Response:
        who = principal(rt)
        await chat_messages.react(rt.chat, who.user_id, channel_id, message_id, emoji, add=False)
        return no_content()

    @bp.get("/<channel_id>/messages/<message_id>/reactions/<emoji>")
    @doc(
        "Who reacted with this emoji, by user id",
        response=list[objects.Author],
        query=ReactorsQuery,
        errors=(
            "unknown_channel",
            "not_a_text_channel",
            "unknown_message",
            "invalid_emoji",
            "missing_permission",
        ),
    )
    async def list_reactions(channel_id: str, message_id: str, emoji: str) -> Response:
        who = principal(rt)
        users = await chat_messages.reactors(
            rt.chat,
            who.user_id,
            channel_id,
            message_id,
            emoji,
            query_id("after") or 0,
            query_limit(),
        )
        return json_response(users)

    # -- read state and typing -----------------------------------------------------------------

    @bp.post("/<channel_id>/messages/<message_id>/ack")
    @doc(
        "Mark the channel read up to this message",
        errors=("unknown_channel", "not_a_text_channel", "unknown_message", "missing_permission"),
    )
    async def ack(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        await chat_messages.ack(rt.chat, who.user_id, channel_id, message_id)
        return no_content()

    @bp.post("/<channel_id>/typing")
    @doc(
        "Tell the channel the caller is typing",
        errors=("unknown_channel", "not_a_text_channel", "missing_permission", "timed_out"),
    )
    async def start_typing(channel_id: str) -> Response:
        who = principal(rt)
        await chat_messages.start_typing(rt.chat, who.user_id, channel_id)
        return no_content()

    return bp
