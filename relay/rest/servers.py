"""Server, channel, invite, member and DM routes under /v1/api, and the READY helpers.

Every change is written first (one write function that also checks who may make it), and its
gateway events are dispatched through the hub only after the write committed. What a caller may
not see answers 404, never 403 (DESIGN §4).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, TypeVar

from msgspec import UNSET, UnsetType
from quart import Blueprint, Response, request

from relay.accounts import now_ms
from relay.errors import Conflict, NotFound
from relay.ids import parse_id
from relay.rest import server_bodies
from relay.rest.http import body, field_error, iso, json_response, no_content, principal, snowflake
from relay.storage import servers
from relay.storage.servers import DmRow

if TYPE_CHECKING:
    from relay.runtime import Runtime
    from relay.storage.servers import (
        ChannelRow,
        InviteRow,
        MemberRow,
        ServerRow,
        ServerState,
        UserBrief,
    )

T = TypeVar("T")
MAX_SERVERS_OWNED = 100
MAX_CHANNELS = 500
MEMBERS_PAGE = 50
MAX_MEMBERS_PAGE = 100
INVITE_CODE_CHARS = 10
INVITE_CODE_TRIES = 3


# -- response bodies ---------------------------------------------------------------------------


def _id(value: int | None) -> str | None:
    return None if value is None else str(value)


def server_out(s: ServerRow) -> server_bodies.Server:
    return server_bodies.Server(
        id=str(s.id), name=s.name, owner_id=str(s.owner_id), created_at=iso(s.created_at)
    )


def channel_out(c: ChannelRow) -> server_bodies.Channel:
    return server_bodies.Channel(
        id=str(c.id),
        server_id=_id(c.server_id),
        type=c.type,
        name=c.name,
        topic=c.topic,
        position=c.position,
        parent_id=_id(c.parent_id),
        last_message_id=_id(c.last_message_id),
        created_at=iso(c.created_at),
    )


def server_state_out(state: ServerState) -> server_bodies.ServerWithChannels:
    s = state.server
    return server_bodies.ServerWithChannels(
        id=str(s.id),
        name=s.name,
        owner_id=str(s.owner_id),
        created_at=iso(s.created_at),
        channels=[channel_out(c) for c in state.channels],
    )


def user_brief_out(u: UserBrief) -> server_bodies.UserBrief:
    return server_bodies.UserBrief(id=str(u.id), username=u.username, display_name=u.display_name)


def dm_out(dm: DmRow) -> server_bodies.DmChannel:
    c = dm.channel
    return server_bodies.DmChannel(
        id=str(c.id),
        server_id=None,
        type=c.type,
        name=c.name,
        topic=c.topic,
        position=c.position,
        parent_id=None,
        last_message_id=_id(c.last_message_id),
        created_at=iso(c.created_at),
        recipients=[user_brief_out(u) for u in dm.recipients],
    )


def member_out(m: MemberRow) -> server_bodies.Member:
    return server_bodies.Member(
        user=user_brief_out(m.user), nickname=m.nickname, joined_at=iso(m.joined_at)
    )


def invite_out(i: InviteRow) -> server_bodies.Invite:
    return server_bodies.Invite(
        code=i.code,
        server_id=str(i.server_id),
        inviter_id=str(i.inviter_id),
        max_uses=i.max_uses or 0,
        uses=i.uses,
        expires_at=None if i.expires_at is None else iso(i.expires_at),
        created_at=iso(i.created_at),
    )


# -- READY -------------------------------------------------------------------------------------


async def ready_servers(rt: Runtime, user_id: int) -> list[server_bodies.ServerWithChannels]:
    """The user's servers with their channels, for READY (two queries in all)."""
    return [server_state_out(s) for s in await rt.store.read(servers.ready_state, user_id)]


async def dm_channels(rt: Runtime, user_id: int) -> list[server_bodies.DmChannel]:
    """The user's DM channels with their recipients, for READY (two queries in all)."""
    return [dm_out(dm) for dm in await rt.store.read(servers.dms_of, user_id)]


# -- request helpers ---------------------------------------------------------------------------


async def optional_body(kind: type[T]) -> T:
    """A body whose fields are all optional may be left out altogether."""
    if not await request.get_data(cache=True):
        return kind()
    return await body(kind)


def id_field(text: str, field: str) -> int:
    value = parse_id(text)
    if value is None:
        raise field_error(field, "must be an ID")
    return value


def page_args() -> tuple[int, int]:
    """`?after=ID&limit=N`: after defaults to the start (0 is accepted too), limit to 50."""
    after_text = request.args.get("after")
    after = 0
    if after_text is not None and after_text != "0":
        after = id_field(after_text, "after")
    limit_text = request.args.get("limit")
    limit = MEMBERS_PAGE
    if limit_text is not None:
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 3):
            raise field_error("limit", f"must be an integer from 1 to {MAX_MEMBERS_PAGE}")
        limit = int(limit_text)
        if not 1 <= limit <= MAX_MEMBERS_PAGE:
            raise field_error("limit", f"must be an integer from 1 to {MAX_MEMBERS_PAGE}")
    return after, limit


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
        data = await body(server_bodies.CreateServer)
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
        rt.hub.member_joined(state.server.id, who.user_id)
        rt.hub.dispatch_user(who.user_id, "SERVER_CREATE", payload)
        return json_response(payload, 201)  # with its channels, as SERVER_CREATE and joining

    @bp.get("/users/@me/servers")
    async def my_servers() -> Response:
        who = principal(rt)
        rows = await rt.store.read(servers.servers_of, who.user_id)
        return json_response([server_out(s) for s in rows])

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
        data = await body(server_bodies.UpdateServer)
        name = data.name if isinstance(data.name, str) else None
        server = await rt.store.write(servers.update_server, sid, who.user_id, name)
        payload = server_out(server)
        if name is not None:
            rt.hub.dispatch_server(sid, "SERVER_UPDATE", payload)
        return json_response(payload)

    @bp.delete("/servers/<server_id>")
    async def delete_server(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        await rt.store.write(servers.delete_server, sid, who.user_id)
        rt.hub.dispatch_server(sid, "SERVER_DELETE", server_bodies.Deleted(id=str(sid)))
        rt.hub.server_deleted(sid)
        return no_content()

    # -- channels ------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/channels")
    async def list_channels(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        rows = await rt.store.read(servers.channels_for, sid, who.user_id)
        return json_response([channel_out(c) for c in rows])

    @bp.post("/servers/<server_id>/channels")
    async def create_channel(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        data = await body(server_bodies.CreateChannel)
        if data.topic is not None and data.type != "text":
            raise field_error("topic", "only text channels have a topic")
        parent_id = None
        if data.parent_id is not None:
            if data.type == "category":
                raise field_error("parent_id", "a category cannot have a parent")
            parent_id = id_field(data.parent_id, "parent_id")
        channel = await rt.store.write(
            servers.create_channel,
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
        )
        payload = channel_out(channel)
        rt.hub.dispatch_server(sid, "CHANNEL_CREATE", payload)
        return json_response(payload, 201)

    @bp.get("/channels/<channel_id>")
    async def get_channel(channel_id: str) -> Response:
        who = principal(rt)
        cid = snowflake(channel_id, "channel")
        found = await rt.store.read(servers.channel_for, cid, who.user_id)
        if found is None:
            raise unknown_channel()
        if isinstance(found, DmRow):
            return json_response(dm_out(found))
        return json_response(channel_out(found))

    @bp.patch("/channels/<channel_id>")
    async def update_channel(channel_id: str) -> Response:
        who = principal(rt)
        cid = snowflake(channel_id, "channel")
        data = await body(server_bodies.UpdateChannel)
        parent_id: int | UnsetType | None = UNSET if data.parent_id is UNSET else None
        if isinstance(data.parent_id, str):
            parent_id = id_field(data.parent_id, "parent_id")
        channel = await rt.store.write(
            servers.update_channel,
            cid,
            who.user_id,
            name=data.name,
            topic=data.topic,
            position=data.position,
            parent_id=parent_id,
        )
        payload = channel_out(channel)
        if data != server_bodies.UpdateChannel():
            assert channel.server_id is not None
            rt.hub.dispatch_server(channel.server_id, "CHANNEL_UPDATE", payload)
        return json_response(payload)

    @bp.delete("/channels/<channel_id>")
    async def delete_channel(channel_id: str) -> Response:
        who = principal(rt)
        cid = snowflake(channel_id, "channel")
        channel, orphans = await rt.store.write(servers.delete_channel, cid, who.user_id)
        assert channel.server_id is not None
        rt.hub.dispatch_server(channel.server_id, "CHANNEL_DELETE", channel_out(channel))
        for orphan in orphans:  # a deleted category's channels are now at the top level
            rt.hub.dispatch_server(channel.server_id, "CHANNEL_UPDATE", channel_out(orphan))
        return no_content()

    # -- invites -------------------------------------------------------------------------------

    @bp.post("/servers/<server_id>/invites")
    async def create_invite(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        data = await optional_body(server_bodies.CreateInvite)
        now = now_ms()
        expires_at = now + data.max_age * 1000 if data.max_age else None
        for _ in range(INVITE_CODE_TRIES):  # 60 random bits: a clash is all but impossible
            try:
                invite = await rt.store.write(
                    servers.create_invite,
                    invite_code(),
                    sid,
                    who.user_id,
                    data.max_uses or None,
                    expires_at,
                    now,
                )
            except Conflict:
                continue
            return json_response(invite_out(invite), 201)
        raise Conflict("could not pick a free invite code; try again", code="invite_code_taken")

    @bp.get("/invites/<code>")
    async def preview_invite(code: str) -> Response:
        principal(rt)
        preview = await rt.store.read(servers.invite_preview, code, now_ms())
        invite = preview.invite
        return json_response(
            server_bodies.InvitePreview(
                code=invite.code,
                server=server_bodies.InviteServer(
                    id=str(invite.server_id), name=preview.server_name
                ),
                member_count=preview.member_count,
                expires_at=None if invite.expires_at is None else iso(invite.expires_at),
            )
        )

    @bp.post("/invites/<code>")
    async def join(code: str) -> Response:
        who = principal(rt)
        joined = await rt.store.write(servers.use_invite, code, who.user_id, now_ms())
        payload = server_state_out(joined.state)
        if not joined.created:
            return json_response(payload)
        sid = joined.state.server.id
        member = joined.member
        rt.hub.member_joined(sid, who.user_id)
        rt.hub.dispatch_server(
            sid,
            "MEMBER_ADD",
            server_bodies.MemberAdd(
                server_id=str(sid),
                user=user_brief_out(member.user),
                joined_at=iso(member.joined_at),
            ),
        )
        rt.hub.dispatch_user(who.user_id, "SERVER_CREATE", payload)
        return json_response(payload, 201)

    @bp.delete("/invites/<code>")
    async def delete_invite(code: str) -> Response:
        who = principal(rt)
        await rt.store.write(servers.delete_invite, code, who.user_id)
        return no_content()

    # -- members -------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/members")
    async def list_members(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        after, limit = page_args()
        rows = await rt.store.read(servers.members_page, sid, who.user_id, after, limit)
        return json_response([member_out(m) for m in rows])

    @bp.delete("/servers/<server_id>/members/@me")
    async def leave(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        member = await rt.store.write(servers.leave_server, sid, who.user_id)
        user = user_brief_out(member.user)
        rt.hub.dispatch_server(
            sid, "MEMBER_REMOVE", server_bodies.MemberRemove(server_id=str(sid), user=user)
        )
        rt.hub.member_left(sid, who.user_id)
        rt.hub.dispatch_user(who.user_id, "SERVER_DELETE", server_bodies.Deleted(id=str(sid)))
        return no_content()

    # -- direct messages -----------------------------------------------------------------------

    @bp.post("/users/@me/channels")
    async def open_dm() -> Response:
        who = principal(rt)
        data = await body(server_bodies.OpenDm)
        recipient_id = id_field(data.recipient_id, "recipient_id")
        opened = await rt.store.write(
            servers.open_dm, rt.store.ids.next(), who.user_id, recipient_id, now_ms()
        )
        payload = dm_out(opened.dm)
        if not opened.created:
            return json_response(payload)
        rt.hub.dispatch_users([u.id for u in opened.dm.recipients], "CHANNEL_CREATE", payload)
        return json_response(payload, 201)

    return bp
