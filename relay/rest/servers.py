"""Server, channel, invite, member, discovery and DM routes under /v1/api, and the READY
helpers.

Every change is written first (one write function that also checks, in its transaction, that
the caller has the permission it needs), and its gateway events are dispatched through the hub
only after the write committed. What a caller may not see answers 404, never 403 (DESIGN §4).
Changes that can alter who sees which channel go through `relay.rest.visibility`, which
refreshes the gateway's permission cache and sends CHANNEL_* only to those who can see them.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, TypeVar

from msgspec import UNSET, UnsetType
from quart import Blueprint, Response, request

from relay.accounts import now_ms
from relay.chat import commands, events, objects, visibility
from relay.chat.args import field_error, id_field, overwrite_in, snowflake
from relay.chat.fanout import MemberJoined, ServerDeleted
from relay.chat.members import announce_departure, announce_join
from relay.chat.objects import (
    channel_out,
    dm_out,
    invite_out,
    iso,
    member_out,
    public_server_out,
    server_out,
    server_state_out,
)
from relay.errors import Conflict, NotFound
from relay.rest.http import (
    audit_reason,
    body,
    json_response,
    no_content,
    optional_body,
    page_args,
    principal,
)
from relay.storage import channels, dms, invites, members, servers
from relay.storage.dms import DmRow

if TYPE_CHECKING:
    from relay.runtime import Runtime

T = TypeVar("T")
MAX_SERVERS_OWNED = 100
MAX_CHANNELS = 500
INVITE_CODE_CHARS = 10
INVITE_CODE_TRIES = 3
MAX_QUERY_CHARS = 100


# -- READY -------------------------------------------------------------------------------------


async def ready_servers(rt: Runtime, user_id: int) -> list[objects.ServerWithChannels]:
    """The user's servers with the channels they can see and the roles, for READY (a fixed
    number of queries)."""
    return [server_state_out(s) for s in await rt.store.read(servers.ready_state, user_id)]


async def dm_channels(rt: Runtime, user_id: int) -> list[objects.Channel]:
    """The user's DM channels with their recipients, for READY (two queries in all)."""
    return [dm_out(dm) for dm in await rt.store.read(dms.dms_of, user_id)]


# -- request helpers ---------------------------------------------------------------------------


def invite_code() -> str:
    """10 random URL-safe characters (60 bits)."""
    return secrets.token_urlsafe(8)[:INVITE_CODE_CHARS]


def unknown_channel() -> NotFound:
    return NotFound("unknown channel", code="unknown_channel")


# -- routes ------------------------------------------------------------------------------------


def servers_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("servers", __name__, url_prefix="/v1/api")

    # -- servers -------------------------------------------------------------------------------

    @bp.post("/servers")
    async def create_server() -> Response:
        who = principal(rt)
        data = await body(commands.CreateServer)
        ids = rt.store.ids
        state = await rt.store.write(
            servers.create_server,
            ids.next(),
            (ids.next(), ids.next()),
            who.user_id,
            data.name,
            now_ms(),
            MAX_SERVERS_OWNED,
        )
        payload = server_state_out(state)
        rt.chat.fanout.announce(MemberJoined(state.server.id, who.user_id))
        rt.chat.fanout.to_users((who.user_id,), events.ServerCreate(d=payload))
        return json_response(payload, 201)  # with its channels, as SERVER_CREATE and joining

    @bp.get("/users/@me/servers")
    async def my_servers() -> Response:
        who = principal(rt)
        rows = await rt.store.read(servers.servers_of, who.user_id)
        return json_response([server_out(s) for s in rows])

    @bp.get("/servers/discover")
    async def discover() -> Response:
        principal(rt)
        query = request.args.get("q", "")
        if len(query) > MAX_QUERY_CHARS:
            raise field_error("q", f"at most {MAX_QUERY_CHARS} characters")
        after, limit = page_args()
        rows = await rt.store.read(servers.discover, query, after, limit)
        return json_response([public_server_out(p) for p in rows])

    @bp.post("/servers/<server_id>/join")
    async def join_public(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        joined = await rt.store.write(members.join_public, sid, who.user_id, now_ms())
        if joined.created:
            announce_join(rt.chat, joined, who.user_id)
        return json_response(server_state_out(joined.state), 201 if joined.created else 200)

    @bp.get("/servers/<server_id>")
    async def get_server(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        server = await rt.store.read(servers.require_member, sid, who.user_id)
        return json_response(server_out(server))

    @bp.patch("/servers/<server_id>")
    async def update_server(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        data = await body(commands.UpdateServer)
        name = data.name if isinstance(data.name, str) else None
        before = await rt.store.read(servers.require_member, sid, who.user_id)
        server = await rt.store.write(
            servers.update_server,
            sid,
            who.user_id,
            name,
            description=data.description,
            is_public=None if isinstance(data.public, UnsetType) else data.public,
            reason=audit_reason(),
        )
        payload = server_out(server)
        if server != before:
            rt.chat.fanout.to_server(sid, events.ServerUpdate(d=payload))
        return json_response(payload)

    @bp.delete("/servers/<server_id>")
    async def delete_server(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        await rt.store.write(servers.delete_server, sid, who.user_id)
        rt.chat.fanout.to_server(sid, events.ServerDelete(d=objects.Deleted(id=str(sid))))
        rt.chat.fanout.announce(ServerDeleted(sid))
        return no_content()

    @bp.put("/servers/<server_id>/owner")
    async def transfer_ownership(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        data = await body(commands.TransferOwnership)
        new_owner = id_field(data.owner_id, "owner_id")
        before = await visibility.before(rt.chat, sid)
        server = await rt.store.write(
            servers.transfer_ownership, sid, who.user_id, new_owner, audit_reason()
        )
        rt.chat.fanout.to_server(sid, events.ServerUpdate(d=server_out(server)))
        await visibility.after(rt.chat, sid, before, users={who.user_id, new_owner})
        return json_response(server_out(server))

    # -- channels ------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/channels")
    async def list_channels(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        rows = await rt.store.read(channels.channels_for, sid, who.user_id)
        return json_response([channel_out(c) for c in rows])

    @bp.post("/servers/<server_id>/channels")
    async def create_channel(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        data = await body(commands.CreateChannel)
        if data.topic is not None and data.type != "text":
            raise field_error("topic", "only text channels have a topic")
        if data.rate_limit_per_user and data.type != "text":
            raise field_error("rate_limit_per_user", "only text channels have a slowmode")
        parent_id = None
        if data.parent_id is not None:
            if data.type == "category":
                raise field_error("parent_id", "a category cannot have a parent")
            parent_id = id_field(data.parent_id, "parent_id")
        given = None
        if data.permission_overwrites is not None:
            given = tuple(
                overwrite_in(o, f"permission_overwrites[{n}]")
                for n, o in enumerate(data.permission_overwrites)
            )
        before = await visibility.before(rt.chat, sid)
        channel = await rt.store.write(
            channels.create_channel,
            rt.store.ids.next(),
            sid,
            who.user_id,
            name=data.name,
            kind=data.type,
            topic=data.topic,
            parent_id=parent_id,
            position=data.position,
            now_ms=now_ms(),
            max_channels=MAX_CHANNELS,
            rate_limit_per_user=data.rate_limit_per_user,
            permission_overwrites=given,
            reason=audit_reason(),
        )
        await visibility.after(rt.chat, sid, before, channels={channel.id})
        return json_response(channel_out(channel), 201)

    @bp.get("/channels/<channel_id>")
    async def get_channel(channel_id: str) -> Response:
        who = principal(rt)
        cid = snowflake(channel_id, "channel")
        found = await rt.store.read(dms.channel_for, cid, who.user_id)
        if found is None:
            raise unknown_channel()
        if isinstance(found, DmRow):
            return json_response(dm_out(found))
        return json_response(channel_out(found))

    @bp.patch("/channels/<channel_id>")
    async def update_channel(channel_id: str) -> Response:
        who = principal(rt)
        cid = snowflake(channel_id, "channel")
        data = await body(commands.UpdateChannel)
        parent_id: int | UnsetType | None = UNSET if data.parent_id is UNSET else None
        if isinstance(data.parent_id, str):
            parent_id = id_field(data.parent_id, "parent_id")
        old = await rt.store.read(dms.channel_for, cid, who.user_id)
        if old is None:
            raise unknown_channel()
        sid = old.channel.server_id if isinstance(old, DmRow) else old.server_id
        before = await visibility.before(rt.chat, sid) if sid is not None else None
        channel = await rt.store.write(
            channels.update_channel,
            cid,
            who.user_id,
            name=data.name,
            topic=data.topic,
            position=data.position,
            parent_id=parent_id,
            rate_limit_per_user=data.rate_limit_per_user,
            permissions_synced=data.permissions_synced,
            reason=audit_reason(),
        )
        assert channel.server_id is not None
        if channel != old:
            await visibility.after(
                rt.chat, channel.server_id, before, channels={cid}, updated={cid}
            )
        return json_response(channel_out(channel))

    @bp.delete("/channels/<channel_id>")
    async def delete_channel(channel_id: str) -> Response:
        who = principal(rt)
        cid = snowflake(channel_id, "channel")
        old = await rt.store.read(dms.channel_for, cid, who.user_id)
        if old is None:
            raise unknown_channel()
        sid = old.channel.server_id if isinstance(old, DmRow) else old.server_id
        before = await visibility.before(rt.chat, sid) if sid is not None else None
        channel, orphans = await rt.store.write(
            channels.delete_channel, cid, who.user_id, audit_reason()
        )
        assert channel.server_id is not None
        # A deleted category's channels are now at the top level (CHANNEL_UPDATE).
        await visibility.after(
            rt.chat,
            channel.server_id,
            before,
            channels={cid, *(o.id for o in orphans)},
            updated={o.id for o in orphans},
            deleted=[channel],
        )
        return no_content()

    # -- invites -------------------------------------------------------------------------------

    @bp.post("/servers/<server_id>/invites")
    async def create_invite(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        data = await optional_body(commands.CreateInvite)
        reason = audit_reason()
        now = now_ms()
        expires_at = now + data.max_age * 1000 if data.max_age else None
        for _ in range(INVITE_CODE_TRIES):  # 60 random bits: a clash is all but impossible
            try:
                invite = await rt.store.write(
                    invites.create_invite,
                    invite_code(),
                    sid,
                    who.user_id,
                    data.max_uses or None,
                    expires_at,
                    now,
                    reason,
                )
            except Conflict:
                continue
            return json_response(invite_out(invite), 201)
        raise Conflict("could not pick a free invite code; try again", code="invite_code_taken")

    @bp.get("/servers/<server_id>/invites")
    async def list_invites(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        rows = await rt.store.read(invites.invites_of, sid, who.user_id)
        return json_response([invite_out(i) for i in rows])

    @bp.get("/invites/<code>")
    async def preview_invite(code: str) -> Response:
        principal(rt)
        preview = await rt.store.read(invites.invite_preview, code, now_ms())
        invite = preview.invite
        return json_response(
            objects.InvitePreview(
                code=invite.code,
                server=objects.InviteServer(id=str(invite.server_id), name=preview.server_name),
                member_count=preview.member_count,
                expires_at=None if invite.expires_at is None else iso(invite.expires_at),
            )
        )

    @bp.post("/invites/<code>")
    async def join(code: str) -> Response:
        who = principal(rt)
        joined = await rt.store.write(invites.use_invite, code, who.user_id, now_ms())
        if joined.created:
            announce_join(rt.chat, joined, who.user_id)
        return json_response(server_state_out(joined.state), 201 if joined.created else 200)

    @bp.delete("/invites/<code>")
    async def delete_invite(code: str) -> Response:
        who = principal(rt)
        await rt.store.write(invites.delete_invite, code, who.user_id, audit_reason())
        return no_content()

    # -- members -------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/members")
    async def list_members(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        after, limit = page_args()
        rows = await rt.store.read(members.members_page, sid, who.user_id, after, limit)
        return json_response([member_out(m) for m in rows])

    @bp.delete("/servers/<server_id>/members/@me")
    async def leave(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        member = await rt.store.write(members.leave_server, sid, who.user_id)
        announce_departure(rt.chat, sid, member)
        return no_content()

    # -- direct messages -----------------------------------------------------------------------

    @bp.post("/users/@me/channels")
    async def open_dm() -> Response:
        who = principal(rt)
        if (refused := rt.chat.action_refused(who.user_id)) is not None:
            raise refused  # a DM, once made, is there for good and in both users' READY
        data = await body(commands.OpenDm)
        recipient_id = id_field(data.recipient_id, "recipient_id")
        opened = await rt.store.write(
            dms.open_dm, rt.store.ids.next(), who.user_id, recipient_id, now_ms()
        )
        payload = dm_out(opened.dm)
        if not opened.created:
            return json_response(payload)
        recipients = [u.id for u in opened.dm.recipients]
        rt.chat.fanout.to_users(recipients, events.ChannelCreate(d=payload), dm=True)
        return json_response(payload, 201)

    return bp
