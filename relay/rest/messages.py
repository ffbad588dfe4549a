"""Message routes: /v1/api/channels/{id}/messages/*, reactions, pins, bulk delete, read acks
and typing. Each decodes, calls relay.chat.messages and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from relay.chat import commands
from relay.chat import messages as chat_messages
from relay.chat.args import field_error
from relay.errors import BadRequest
from relay.ids import parse_id
from relay.rest.http import audit_reason, body, json_response, no_content, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime

MAX_LIMIT = 100
DEFAULT_LIMIT = 50


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


def messages_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("messages", __name__, url_prefix="/v1/api/channels")

    @bp.post("/<channel_id>/messages")
    async def create_message(channel_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.CreateMessage)
        message, created = await chat_messages.post(
            rt.chat,
            who.user_id,
            channel_id,
            data.content,
            data.nonce,
            data.reply_to,
        )
        return json_response(message, 201 if created else 200)

    @bp.get("/<channel_id>/messages")
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
    async def get_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_messages.get(rt.chat, who.user_id, channel_id, message_id))

    @bp.patch("/<channel_id>/messages/<message_id>")
    async def edit_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.EditMessage)
        message = await chat_messages.edit(
            rt.chat, who.user_id, channel_id, message_id, data.content
        )
        return json_response(message)

    @bp.delete("/<channel_id>/messages/<message_id>")
    async def delete_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        await chat_messages.delete(rt.chat, who.user_id, channel_id, message_id, audit_reason())
        return no_content()

    @bp.post("/<channel_id>/messages/bulk-delete")
    async def bulk_delete(channel_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.BulkDelete)
        await chat_messages.bulk_delete(
            rt.chat, who.user_id, channel_id, data.messages, audit_reason()
        )
        return no_content()

    # -- pins ----------------------------------------------------------------------------------

    @bp.get("/<channel_id>/pins")
    async def list_pins(channel_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_messages.pins(rt.chat, who.user_id, channel_id))

    @bp.put("/<channel_id>/pins/<message_id>")
    async def pin_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        await chat_messages.set_pinned(
            rt.chat, who.user_id, channel_id, message_id, True, audit_reason()
        )
        return no_content()

    @bp.delete("/<channel_id>/pins/<message_id>")
    async def unpin_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        await chat_messages.set_pinned(
            rt.chat, who.user_id, channel_id, message_id, False, audit_reason()
        )
        return no_content()

    # -- reactions -----------------------------------------------------------------------------

    @bp.put("/<channel_id>/messages/<message_id>/reactions/<emoji>/@me")
    async def add_reaction(channel_id: str, message_id: str, emoji: str) -> Response:
        who = principal(rt)
        await chat_messages.react(rt.chat, who.user_id, channel_id, message_id, emoji, add=True)
        return no_content()

    @bp.delete("/<channel_id>/messages/<message_id>/reactions/<emoji>/@me")
    async def remove_reaction(channel_id: str, message_id: str, emoji: str) -> Response:
        who = principal(rt)
        await chat_messages.react(rt.chat, who.user_id, channel_id, message_id, emoji, add=False)
        return no_content()

    @bp.get("/<channel_id>/messages/<message_id>/reactions/<emoji>")
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
    async def ack(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        await chat_messages.ack(rt.chat, who.user_id, channel_id, message_id)
        return no_content()

    @bp.post("/<channel_id>/typing")
    async def start_typing(channel_id: str) -> Response:
        who = principal(rt)
        await chat_messages.start_typing(rt.chat, who.user_id, channel_id)
        return no_content()

    return bp
