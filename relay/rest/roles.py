"""Role routes (`/servers/{id}/roles`), who holds them (`/servers/{id}/members/{uid}/roles`)
and channel permission overwrites (`/channels/{id}/permissions/{target_id}`). Each decodes,
calls relay.chat.roles or relay.chat.overwrites and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from relay.chat import commands
from relay.chat import overwrites as chat_overwrites
from relay.chat import roles as chat_roles
from relay.rest.http import audit_reason, body, json_response, no_content, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime


def roles_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("roles", __name__, url_prefix="/v1/api")

    # -- roles ---------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/roles")
    async def list_roles(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_roles.list_roles(rt.chat, who.user_id, server_id))

    @bp.post("/servers/<server_id>/roles")
    async def create_role(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.CreateRole)
        role = await chat_roles.create(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(role, 201)

    @bp.patch("/servers/<server_id>/roles")
    async def reorder_roles(server_id: str) -> Response:
        who = principal(rt)
        moves = await body(commands.ReorderRoles)
        roles = await chat_roles.reorder(rt.chat, who.user_id, server_id, moves, audit_reason())
        return json_response(roles)

    @bp.patch("/servers/<server_id>/roles/<role_id>")
    async def update_role(server_id: str, role_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateRole)
        role = await chat_roles.update(
            rt.chat, who.user_id, server_id, role_id, data, audit_reason()
        )
        return json_response(role)

    @bp.delete("/servers/<server_id>/roles/<role_id>")
    async def delete_role(server_id: str, role_id: str) -> Response:
        who = principal(rt)
        await chat_roles.delete(rt.chat, who.user_id, server_id, role_id, audit_reason())
        return no_content()

    # -- member roles --------------------------------------------------------------------------

    @bp.put("/servers/<server_id>/members/<user_id>/roles/<role_id>")
    async def add_member_role(server_id: str, user_id: str, role_id: str) -> Response:
        who = principal(rt)
        await chat_roles.set_member_role(
            rt.chat, who.user_id, server_id, user_id, role_id, add=True, reason=audit_reason()
        )
        return no_content()

    @bp.delete("/servers/<server_id>/members/<user_id>/roles/<role_id>")
    async def remove_member_role(server_id: str, user_id: str, role_id: str) -> Response:
        who = principal(rt)
        await chat_roles.set_member_role(
            rt.chat, who.user_id, server_id, user_id, role_id, add=False, reason=audit_reason()
        )
        return no_content()

    # -- channel overwrites --------------------------------------------------------------------

    @bp.put("/channels/<channel_id>/permissions/<target_id>")
    async def put_overwrite(channel_id: str, target_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.PutOverwrite)
        await chat_overwrites.put(rt.chat, who.user_id, channel_id, target_id, data, audit_reason())
        return no_content()

    @bp.delete("/channels/<channel_id>/permissions/<target_id>")
    async def delete_overwrite(channel_id: str, target_id: str) -> Response:
        who = principal(rt)
        await chat_overwrites.delete(rt.chat, who.user_id, channel_id, target_id, audit_reason())
        return no_content()

    return bp
