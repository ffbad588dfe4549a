"""Moderation routes: member nicknames and timeouts, kicks, bans, and the audit log. Each
decodes, calls relay.chat.moderation and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType
from quart import Blueprint, Response, request

from relay.chat import commands, objects
from relay.chat import moderation as chat_moderation
from relay.rest.apidoc import doc
from relay.rest.http import (
    Limit,
    PageQuery,
    QueryId,
    audit_reason,
    body,
    json_response,
    no_content,
    optional_body,
    page_args,
    principal,
)
from relay.rest.messages import DEFAULT_LIMIT, query_id, query_limit
from relay.storage.audit import ACTIONS

if TYPE_CHECKING:
    from relay.runtime import Runtime


class AuditLogQuery(msgspec.Struct, frozen=True, kw_only=True):
    user_id: Annotated[QueryId, Meta(description="entries of this user's doing")] | UnsetType = (
        UNSET
    )
    action: (
        Annotated[
            str,
            Meta(description="entries of this action", extra_json_schema={"enum": sorted(ACTIONS)}),
        ]
        | UnsetType
    ) = UNSET
    before: Annotated[QueryId, Meta(description="entries before this id")] | UnsetType = UNSET
    limit: Limit = DEFAULT_LIMIT


MEMBER_UPDATE_ERRORS = (
    "unknown_server",
    "unknown_member",
    "missing_permission",
    "role_hierarchy",
    "cannot_time_out",
    "unknown_channel",
    "not_a_voice_channel",
    "not_in_voice",
    "voice_channel_full",
    "voice_unavailable",
    "too_many_voice_channels",
)


def moderation_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("moderation", __name__, url_prefix="/v1/api/servers/<server_id>")

    # -- members -------------------------------------------------------------------------------

    @bp.patch("/members/<user_id>")
    @doc(
        "Change a member's nickname (MANAGE_NICKNAMES), timeout (MODERATE_MEMBERS), server"
        " mute (MUTE_MEMBERS) or deafen (DEAFEN_MEMBERS), or move them to another voice channel"
        " or disconnect them (voice_channel_id, MOVE_MEMBERS)",
        body=commands.UpdateMember,
        response=objects.Member,
        errors=MEMBER_UPDATE_ERRORS,
        path={"user_id": "the member's user id"},
    )
    async def update_member(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateMember)
        member = await chat_moderation.update_member(
            rt.chat, who.user_id, server_id, user_id, data, audit_reason()
        )
        return json_response(member)

    # Its own rule, though `/members/<user_id>` matches "@me" too: the document describes
    # `/members/@me` (DELETE: leave) apart, so its PATCH is written here.
    @bp.patch("/members/@me")
    @doc(
        "Change one's own nickname (CHANGE_NICKNAME) or timeout",
        body=commands.UpdateMember,
        response=objects.Member,
        errors=MEMBER_UPDATE_ERRORS,
    )
    async def update_own_member(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateMember)
        member = await chat_moderation.update_member(
            rt.chat, who.user_id, server_id, "@me", data, audit_reason()
        )
        return json_response(member)

    @bp.delete("/members/<user_id>")
    @doc(
        "Kick a member (KICK_MEMBERS, above them)",
        errors=(
            "unknown_server",
            "unknown_member",
            "missing_permission",
            "role_hierarchy",
            "cannot_kick_self",
        ),
        path={"user_id": "the member's user id"},
    )
    async def kick(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        await chat_moderation.kick(rt.chat, who.user_id, server_id, user_id, audit_reason())
        return no_content()

    # -- bans ----------------------------------------------------------------------------------

    @bp.get("/bans")
    @doc(
        "A page of the server's bans, by user id (BAN_MEMBERS)",
        response=list[objects.Ban],
        query=PageQuery,
        errors=("unknown_server", "missing_permission"),
    )
    async def list_bans(server_id: str) -> Response:
        who = principal(rt)
        after, limit = page_args()
        return json_response(
            await chat_moderation.bans(rt.chat, who.user_id, server_id, after, limit)
        )

    @bp.get("/bans/<user_id>")
    @doc(
        "One ban (BAN_MEMBERS)",
        response=objects.Ban,
        errors=("unknown_server", "missing_permission", "unknown_ban"),
    )
    async def get_ban(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        return json_response(
            await chat_moderation.get_ban(rt.chat, who.user_id, server_id, user_id)
        )

    @bp.put("/bans/<user_id>")
    @doc(
        "Ban a user, a member or not (BAN_MEMBERS, above them)",
        body=commands.PutBan,
        errors=(
            "unknown_server",
            "unknown_user",
            "missing_permission",
            "role_hierarchy",
            "cannot_ban_self",
        ),
    )
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
    @doc(
        "Lift a ban (BAN_MEMBERS)",
        errors=("unknown_server", "missing_permission", "unknown_ban"),
    )
    async def unban(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        await chat_moderation.unban(rt.chat, who.user_id, server_id, user_id, audit_reason())
        return no_content()

    # -- audit log -----------------------------------------------------------------------------

    @bp.get("/audit-log")
    @doc(
        "The server's audit log, newest first (VIEW_AUDIT_LOG)",
        response=list[objects.AuditEntry],
        query=AuditLogQuery,
        errors=("unknown_server", "missing_permission"),
    )
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
