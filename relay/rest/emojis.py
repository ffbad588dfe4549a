"""Custom emoji routes: /v1/api/servers/{id}/emojis. Each decodes, calls relay.chat.emojis and
encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from relay.chat import commands, objects
from relay.chat import emojis as chat_emojis
from relay.rest.apidoc import doc
from relay.rest.http import body, json_response, no_content, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime


def emojis_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("emojis", __name__, url_prefix="/v1/api/servers")

    @bp.get("/<server_id>/emojis")
    @doc("The server's custom emoji", response=list[objects.Emoji], errors=("unknown_server",))
    async def list_emojis(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_emojis.list_all(rt.chat, who.user_id, server_id))

    @bp.post("/<server_id>/emojis")
    @doc(
        "Add a custom emoji (CREATE_EMOJIS)",
        body=commands.CreateEmoji,
        response=objects.Emoji,
        status=201,
        errors=(
            "unknown_server",
            "missing_permission",
            "timed_out",
            "bad_image",
            "file_too_large",
            "too_many_emojis",
            "insufficient_storage",
        ),
    )
    async def create_emoji(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.CreateEmoji)
        return json_response(await chat_emojis.create(rt.chat, who.user_id, server_id, data), 201)

    @bp.patch("/<server_id>/emojis/<emoji_id>")
    @doc(
        "Rename a custom emoji (MANAGE_EMOJIS, or its creator with CREATE_EMOJIS)",
        body=commands.UpdateEmoji,
        response=objects.Emoji,
        errors=("unknown_server", "unknown_emoji", "missing_permission", "timed_out"),
    )
    async def rename_emoji(server_id: str, emoji_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateEmoji)
        emoji = await chat_emojis.rename(rt.chat, who.user_id, server_id, emoji_id, data)
        return json_response(emoji)

    @bp.delete("/<server_id>/emojis/<emoji_id>")
    @doc(
        "Delete a custom emoji (MANAGE_EMOJIS, or its creator with CREATE_EMOJIS)",
        errors=("unknown_server", "unknown_emoji", "missing_permission", "timed_out"),
    )
    async def delete_emoji(server_id: str, emoji_id: str) -> Response:
        who = principal(rt)
        await chat_emojis.delete(rt.chat, who.user_id, server_id, emoji_id)
        return no_content()

    return bp
