"""Moderation routes: member nicknames and timeouts, kicks, bans, and the audit log.

The write functions (relay.storage.moderation) check the permission, the hierarchy and write
the audit entry in one transaction. A kicked or banned member is taken out of routing at once
(`announce_departure` announces `MemberLeft`), so no further event of the server reaches them.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from msgspec import UNSET, UnsetType
from quart import Blueprint, Response, request

from relay.accounts import now_ms
from relay.chat import commands, events
from relay.chat.args import field_error, snowflake
from relay.chat.members import announce_departure
from relay.chat.messages import announce_bulk_delete
from relay.chat.objects import audit_out, ban_out, member_out, member_update_out
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
from relay.storage import audit, moderation

if TYPE_CHECKING:
    from relay.runtime import Runtime


def time_field(text: str, field: str) -> int:
    """An ISO 8601 time with a zone ("2026-11-21T10:00:00Z") as Unix milliseconds."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise field_error(field, "must be an ISO 8601 time") from None
    if value.tzinfo is None:
        raise field_error(field, "must say its time zone (e.g. end in Z)")
    return int(value.timestamp() * 1000)


def moderation_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("moderation", __name__, url_prefix="/v1/api/servers/<server_id>")

    def member_id(text: str, user_id: int) -> int:
        return user_id if text == "@me" else snowflake(text, "member")

    # -- members -------------------------------------------------------------------------------

    @bp.patch("/members/<user_id>")
    async def update_member(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        uid = member_id(user_id, who.user_id)
        data = await body(commands.UpdateMember)
        until: int | UnsetType | None = UNSET
        if isinstance(data.communication_disabled_until, str):
            until = time_field(data.communication_disabled_until, "communication_disabled_until")
        elif data.communication_disabled_until is None:
            until = None
        member = await rt.store.write(
            moderation.update_member,
            sid,
            uid,
            who.user_id,
            nickname=data.nickname,
            communication_disabled_until=until,
            now_ms=now_ms(),
            reason=audit_reason(),
        )
        if data != commands.UpdateMember():
            rt.chat.fanout.to_server(sid, events.MemberUpdateEvent(d=member_update_out(member)))
        return json_response(member_out(member))

    @bp.delete("/members/<user_id>")
    async def kick(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        uid = snowflake(user_id, "member")
        member = await rt.store.write(moderation.kick, sid, uid, who.user_id, audit_reason())
        announce_departure(rt.chat, sid, member)
        return no_content()

    # -- bans ----------------------------------------------------------------------------------

    @bp.get("/bans")
    async def list_bans(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        after, limit = page_args()
        rows = await rt.store.read(moderation.bans_of, sid, who.user_id, after, limit)
        return json_response([ban_out(b) for b in rows])

    @bp.get("/bans/<user_id>")
    async def get_ban(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        uid = snowflake(user_id, "ban")
        return json_response(
            ban_out(await rt.store.read(moderation.get_ban, sid, uid, who.user_id))
        )

    @bp.put("/bans/<user_id>")
    async def ban(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        uid = snowflake(user_id, "user")
        data = await optional_body(commands.PutBan)
        banned = await rt.store.write(
            moderation.ban,
            sid,
            uid,
            who.user_id,
            delete_message_s=data.delete_message_days * 86_400,
            now_ms=now_ms(),
            reason=data.reason or audit_reason(),
        )
        if banned.member is not None:
            announce_departure(rt.chat, sid, banned.member)
        for channel_id, ids in banned.deleted.items():
            if ids:
                await announce_bulk_delete(rt.chat, channel_id, ids)
        return no_content()

    @bp.delete("/bans/<user_id>")
    async def unban(server_id: str, user_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        uid = snowflake(user_id, "ban")
        await rt.store.write(moderation.unban, sid, uid, who.user_id, audit_reason())
        return no_content()

    # -- audit log -----------------------------------------------------------------------------

    @bp.get("/audit-log")
    async def audit_log(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        action = request.args.get("action")
        if action is not None and action not in audit.ACTIONS:
            raise field_error("action", "not an audit log action")
        rows = await rt.store.read(
            audit.entries,
            sid,
            who.user_id,
            user_id=query_id("user_id"),
            action=action,
            before=query_id("before"),
            limit=query_limit(),
        )
        return json_response([audit_out(e) for e in rows])

    return bp
