"""Server, channel, invite, member, discovery and DM routes under /v1/api. Each decodes, calls
relay.chat (servers, channels, invites, members, dms) and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from relay.chat import channels, commands, dms, invites, members, servers
from relay.rest.http import (
    audit_reason,
    body,
    json_response,
    no_content,
    optional_body,
    page_args,
    principal,
)

if TYPE_CHECKING:
    from relay.chat.members import JoinedServer
    from relay.runtime import Runtime


def joined_response(joined: JoinedServer) -> Response:
    """201 for a new member, 200 for one already there: the server with its channels and
    roles either way."""
    return json_response(joined.server, 201 if joined.created else 200)


def servers_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("servers", __name__, url_prefix="/v1/api")

    # -- servers -------------------------------------------------------------------------------

    @bp.post("/servers")
    async def create_server() -> Response:
        who = principal(rt)
        data = await body(commands.CreateServer)
        # With its channels, as SERVER_CREATE and joining.
        return json_response(await servers.create(rt.chat, who.user_id, data), 201)

    @bp.get("/users/@me/servers")
    async def my_servers() -> Response:
        who = principal(rt)
        return json_response(await servers.mine(rt.chat, who.user_id))

    @bp.get("/servers/discover")
    async def discover() -> Response:
        who = principal(rt)
        query = request.args.get("q", "")
        after, limit = page_args()
        return json_response(await servers.discover(rt.chat, who.user_id, query, after, limit))

    @bp.post("/servers/<server_id>/join")
    async def join_public(server_id: str) -> Response:
        who = principal(rt)
        return joined_response(await servers.join_public(rt.chat, who.user_id, server_id))

    @bp.get("/servers/<server_id>")
    async def get_server(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await servers.get(rt.chat, who.user_id, server_id))

    @bp.patch("/servers/<server_id>")
    async def update_server(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateServer)
        server = await servers.update(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(server)

    @bp.delete("/servers/<server_id>")
    async def delete_server(server_id: str) -> Response:
        who = principal(rt)
        await servers.delete(rt.chat, who.user_id, server_id)
        return no_content()

    @bp.put("/servers/<server_id>/owner")
    async def transfer_ownership(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.TransferOwnership)
        server = await servers.transfer(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(server)

    # -- channels ------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/channels")
    async def list_channels(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await channels.of_server(rt.chat, who.user_id, server_id))

    @bp.post("/servers/<server_id>/channels")
    async def create_channel(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.CreateChannel)
        channel = await channels.create(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(channel, 201)

    @bp.get("/channels/<channel_id>")
    async def get_channel(channel_id: str) -> Response:
        who = principal(rt)
        return json_response(await channels.get(rt.chat, who.user_id, channel_id))

    @bp.patch("/channels/<channel_id>")
    async def update_channel(channel_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateChannel)
        channel = await channels.update(rt.chat, who.user_id, channel_id, data, audit_reason())
        return json_response(channel)

    @bp.delete("/channels/<channel_id>")
    async def delete_channel(channel_id: str) -> Response:
        who = principal(rt)
        await channels.delete(rt.chat, who.user_id, channel_id, audit_reason())
        return no_content()

    # -- invites -------------------------------------------------------------------------------

    @bp.post("/servers/<server_id>/invites")
    async def create_invite(server_id: str) -> Response:
        who = principal(rt)
        data = await optional_body(commands.CreateInvite)
        invite = await invites.create(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(invite, 201)

    @bp.get("/servers/<server_id>/invites")
    async def list_invites(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await invites.of_server(rt.chat, who.user_id, server_id))

    @bp.get("/invites/<code>")
    async def preview_invite(code: str) -> Response:
        who = principal(rt)
        return json_response(await invites.preview(rt.chat, who.user_id, code))

    @bp.post("/invites/<code>")
    async def join(code: str) -> Response:
        who = principal(rt)
        return joined_response(await invites.use(rt.chat, who.user_id, code))

    @bp.delete("/invites/<code>")
    async def delete_invite(code: str) -> Response:
        who = principal(rt)
        await invites.delete(rt.chat, who.user_id, code, audit_reason())
        return no_content()

    # -- members -------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/members")
    async def list_members(server_id: str) -> Response:
        who = principal(rt)
        after, limit = page_args()
        return json_response(await members.page(rt.chat, who.user_id, server_id, after, limit))

    @bp.delete("/servers/<server_id>/members/@me")
    async def leave(server_id: str) -> Response:
        who = principal(rt)
        await members.leave(rt.chat, who.user_id, server_id)
        return no_content()

    # -- direct messages -----------------------------------------------------------------------

    @bp.post("/users/@me/channels")
    async def open_dm() -> Response:
        who = principal(rt)
        data = await body(commands.OpenDm)
        opened = await dms.open_dm(rt.chat, who.user_id, data)
        return json_response(opened.channel, 201 if opened.created else 200)

    return bp
