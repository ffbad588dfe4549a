"""Server, channel, invite, member, discovery and DM routes under /v1/api. Each decodes, calls
relay.chat (servers, channels, invites, members, dms) and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from msgspec import Meta
from quart import Blueprint, Response, request

from relay.chat import channels, commands, dms, invites, members, objects, servers
from relay.chat.servers import MAX_QUERY_CHARS
from relay.rest.apidoc import doc
from relay.rest.http import (
    PageQuery,
    audit_reason,
    body,
    json_response,
    no_bots,
    no_content,
    optional_body,
    page_args,
    principal,
)

if TYPE_CHECKING:
    from relay.chat.members import JoinedServer
    from relay.runtime import Runtime


class DiscoverQuery(PageQuery, frozen=True, kw_only=True):
    q: Annotated[
        str, Meta(max_length=MAX_QUERY_CHARS, description="part of the name, any case")
    ] = ""


JOINED = {201: "joined", 200: "a member already: nothing changed"}


def joined_response(joined: JoinedServer) -> Response:
    """201 for a new member, 200 for one already there: the server with its channels and
    roles either way."""
    return json_response(joined.server, 201 if joined.created else 200)


def servers_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("servers", __name__, url_prefix="/v1/api")

    # -- servers -------------------------------------------------------------------------------

    @bp.post("/servers")
    @doc(
        "Create a server (with a text and a voice channel)",
        body=commands.CreateServer,
        response=objects.ServerWithChannels,
        status=201,
        errors=("too_many_servers",),
    )
    async def create_server() -> Response:
        who = principal(rt)
        data = await body(commands.CreateServer)
        # With its channels, as SERVER_CREATE and joining.
        return json_response(await servers.create(rt.chat, who.user_id, data), 201)

    @bp.get("/users/@me/servers")
    @doc("The servers the caller is a member of", response=list[objects.Server])
    async def my_servers() -> Response:
        who = principal(rt)
        return json_response(await servers.mine(rt.chat, who.user_id))

    @bp.get("/servers/discover")
    @doc(
        "Public servers whose name contains q",
        response=list[objects.PublicServer],
        query=DiscoverQuery,
    )
    async def discover() -> Response:
        who = principal(rt)
        query = request.args.get("q", "")
        after, limit = page_args()
        return json_response(await servers.discover(rt.chat, who.user_id, query, after, limit))

    @bp.post("/servers/<server_id>/join")
    @doc(
        "Join a public server without an invite",
        response=objects.ServerWithChannels,
        status=JOINED,
        errors=("unknown_server", "banned", "too_many_servers_joined", "bots_not_allowed"),
    )
    async def join_public(server_id: str) -> Response:
        who = no_bots(principal(rt))  # a bot joins only when added (POST /servers/{id}/bots)
        return joined_response(await servers.join_public(rt.chat, who.user_id, server_id))

    @bp.get("/servers/<server_id>")
    @doc("A server the caller is a member of", response=objects.Server, errors=("unknown_server",))
    async def get_server(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await servers.get(rt.chat, who.user_id, server_id))

    @bp.patch("/servers/<server_id>")
    @doc(
        "Change a server's name, description or public flag (MANAGE_SERVER)",
        body=commands.UpdateServer,
        response=objects.Server,
        errors=("unknown_server", "missing_permission"),
    )
    async def update_server(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateServer)
        server = await servers.update(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(server)

    @bp.delete("/servers/<server_id>")
    @doc("Delete a server (its owner only)", errors=("unknown_server", "not_owner"))
    async def delete_server(server_id: str) -> Response:
        who = principal(rt)
        await servers.delete(rt.chat, who.user_id, server_id)
        return no_content()

    @bp.put("/servers/<server_id>/owner")
    @doc(
        "Hand the server to another member (its owner only)",
        body=commands.TransferOwnership,
        response=objects.Server,
        errors=("unknown_server", "not_owner", "unknown_member"),
    )
    async def transfer_ownership(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.TransferOwnership)
        server = await servers.transfer(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(server)

    # -- channels ------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/channels")
    @doc(
        "The server's channels the caller can see",
        response=list[objects.Channel],
        errors=("unknown_server",),
    )
    async def list_channels(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await channels.of_server(rt.chat, who.user_id, server_id))

    @bp.post("/servers/<server_id>/channels")
    @doc(
        "Create a channel (MANAGE_CHANNELS; MANAGE_ROLES too with overwrites)",
        body=commands.CreateChannel,
        response=objects.Channel,
        status=201,
        errors=(
            "unknown_server",
            "missing_permission",
            "role_hierarchy",
            "unknown_role",
            "unknown_member",
            "too_many_channels",
        ),
    )
    async def create_channel(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.CreateChannel)
        channel = await channels.create(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(channel, 201)

    @bp.get("/channels/<channel_id>")
    @doc(
        "A channel the caller can see (a DM's too)",
        response=objects.Channel,
        errors=("unknown_channel",),
    )
    async def get_channel(channel_id: str) -> Response:
        who = principal(rt)
        return json_response(await channels.get(rt.chat, who.user_id, channel_id))

    @bp.patch("/channels/<channel_id>")
    @doc(
        "Change a channel (MANAGE_CHANNELS; MANAGE_ROLES too to resync its overwrites); a"
        " thread (MANAGE_THREADS, or its starter); a group DM's name (any recipient)",
        body=commands.UpdateChannel,
        response=objects.Channel,
        errors=(
            "unknown_channel",
            "dm_channel",
            "missing_permission",
            "thread_locked",
            "invalid_field",
        ),
    )
    async def update_channel(channel_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateChannel)
        channel = await channels.update(rt.chat, who.user_id, channel_id, data, audit_reason())
        return json_response(channel)

    @bp.delete("/channels/<channel_id>")
    @doc(
        "Delete a channel (MANAGE_CHANNELS), a thread (MANAGE_THREADS), or leave a group DM",
        errors=("unknown_channel", "dm_channel", "missing_permission"),
    )
    async def delete_channel(channel_id: str) -> Response:
        who = principal(rt)
        await channels.delete(rt.chat, who.user_id, channel_id, audit_reason())
        return no_content()

    # -- invites -------------------------------------------------------------------------------

    @bp.post("/servers/<server_id>/invites")
    @doc(
        "Create an invite (CREATE_INVITE)",
        body=commands.CreateInvite,
        response=objects.Invite,
        status=201,
        errors=("unknown_server", "missing_permission", "too_many_invites", "invite_code_taken"),
    )
    async def create_invite(server_id: str) -> Response:
        who = principal(rt)
        data = await optional_body(commands.CreateInvite)
        invite = await invites.create(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(invite, 201)

    @bp.get("/servers/<server_id>/invites")
    @doc(
        "The server's invites, newest first (MANAGE_SERVER)",
        response=list[objects.Invite],
        errors=("unknown_server", "missing_permission"),
    )
    async def list_invites(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await invites.of_server(rt.chat, who.user_id, server_id))

    @bp.get("/invites/<code>")
    @doc(
        "What an invite leads to, without joining",
        response=objects.InvitePreview,
        errors=("unknown_invite", "invite_expired", "invite_exhausted"),
    )
    async def preview_invite(code: str) -> Response:
        who = principal(rt)
        return json_response(await invites.preview(rt.chat, who.user_id, code))

    @bp.post("/invites/<code>")
    @doc(
        "Join the invite's server",
        response=objects.ServerWithChannels,
        status=JOINED,
        errors=(
            "unknown_invite",
            "invite_expired",
            "invite_exhausted",
            "banned",
            "too_many_servers_joined",
            "bots_not_allowed",
        ),
    )
    async def join(code: str) -> Response:
        who = no_bots(principal(rt))  # a bot joins only when added (POST /servers/{id}/bots)
        return joined_response(await invites.use(rt.chat, who.user_id, code))

    @bp.delete("/invites/<code>")
    @doc(
        "Delete an invite (its inviter, or MANAGE_SERVER)",
        errors=("unknown_invite", "missing_permission"),
    )
    async def delete_invite(code: str) -> Response:
        who = principal(rt)
        await invites.delete(rt.chat, who.user_id, code, audit_reason())
        return no_content()

    # -- members -------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/members")
    @doc(
        "A page of the server's members, by user id",
        response=list[objects.Member],
        query=PageQuery,
        errors=("unknown_server",),
    )
    async def list_members(server_id: str) -> Response:
        who = principal(rt)
        after, limit = page_args()
        return json_response(await members.page(rt.chat, who.user_id, server_id, after, limit))

    @bp.delete("/servers/<server_id>/members/@me")
    @doc("Leave a server", errors=("unknown_server", "owner_cannot_leave"))
    async def leave(server_id: str) -> Response:
        who = principal(rt)
        await members.leave(rt.chat, who.user_id, server_id)
        return no_content()

    # -- direct messages -----------------------------------------------------------------------

    @bp.post("/users/@me/channels")
    @doc(
        "Open the DM channel with a user who shares a server with the caller, or make a group"
        " DM with 2 to 9 of them",
        body=commands.OpenDm,
        response=objects.Channel,
        status={201: "opened", 200: "the two users had one already"},
        errors=("cannot_dm_self", "unknown_user", "no_shared_server", "invalid_field"),
    )
    async def open_dm() -> Response:
        who = principal(rt)
        data = await body(commands.OpenDm)
        opened = await dms.open_dm(rt.chat, who.user_id, data)
        return json_response(opened.channel, 201 if opened.created else 200)

    return bp
