"""Moderation routes: member nicknames and timeouts, kicks, bans, and the audit log. Each
decodes, calls relay.chat.moderation and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from relay.chat import commands
from relay.chat import moderation as chat_moderation
from relay.rest.http import (
    audit_reason,
    body,
    json_response,
    no_content,
    optional_body,
    page_args,
    principal,
)
from relay.rest.messages import query_id, query_limit

if TYPE_CHECKING:
    from relay.runtime import Runtime


def moderation_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("moderation", __name__, url_prefix="/v1/api/servers/<server_id>")

    # -- members -------------------------------------------------------------------------------

    @bp.patch("/members/<user_id>")
    async def update_member(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateMember)
        member = await chat_moderation.update_member(
            rt.chat, who.user_id, server_id, user_id, data, audit_reason()
        )
        return json_response(member)

    @bp.delete("/members/<user_id>")
    async def kick(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        await chat_moderation.kick(rt.chat, who.user_id, server_id, user_id, audit_reason())
        return no_content()

    # -- bans ----------------------------------------------------------------------------------

    @bp.get("/bans")
    async def list_bans(server_id: str) -> Response:
        who = principal(rt)
        after, limit = page_args()
        return json_response(
            await chat_moderation.bans(rt.chat, who.user_id, server_id, after, limit)
        )

    @bp.get("/bans/<user_id>")
    async def get_ban(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        return json_response(
            await chat_moderation.get_ban(rt.chat, who.user_id, server_id, user_id)
        )

    @bp.put("/bans/<user_id>")
    async def ban(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        data = await optional_body(commands.PutBan)
        await chat_moderation.ban(
            rt.chat,
            who.user_id,
            server_id,
            user_id,
            data.delete_message_days,
            data.reason or audit_reason(),  # the body's reason, else the header's
        )
        return no_content()

    @bp.delete("/bans/<user_id>")
    async def unban(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        await chat_moderation.unban(rt.chat, who.user_id, server_id, user_id, audit_reason())
        return no_content()

    # -- audit log -----------------------------------------------------------------------------

    @bp.get("/audit-log")
    async def audit_log(server_id: str) -> Response:
        who = principal(rt)
        entries = await chat_moderation.audit_log(
            rt.chat,
            who.user_id,
            server_id,
            by_user=query_id("user_id"),
            action=request.args.get("action"),
            before=query_id("before"),
            limit=query_limit(),
        )
        return json_response(entries)

    return bp
