"""Role routes (`/servers/{id}/roles`), who holds them (`/servers/{id}/members/{uid}/roles`)
and channel permission overwrites (`/channels/{id}/permissions/{target_id}`). Each decodes,
calls relay.chat.roles or relay.chat.overwrites and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from relay.chat import commands, objects
from relay.chat import overwrites as chat_overwrites
from relay.chat import roles as chat_roles
from relay.rest.apidoc import doc
from relay.rest.http import audit_reason, body, json_response, no_content, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime


def roles_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("roles", __name__, url_prefix="/v1/api")

    # -- roles ---------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/roles")
    @doc(
        "The server's roles, lowest first",
        response=list[objects.Role],
        errors=("unknown_server",),
    )
    async def list_roles(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_roles.list_roles(rt.chat, who.user_id, server_id))

    @bp.post("/servers/<server_id>/roles")
    @doc(
        "Create a role (MANAGE_ROLES, below the caller's highest)",
        body=commands.CreateRole,
        response=objects.Role,
        status=201,
        errors=("unknown_server", "missing_permission", "role_hierarchy", "too_many_roles"),
    )
    async def create_role(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.CreateRole)
        role = await chat_roles.create(rt.chat, who.user_id, server_id, data, audit_reason())
        return json_response(role, 201)

    @bp.patch("/servers/<server_id>/roles")
    @doc(
        "Move roles to new positions (MANAGE_ROLES)",
        body=commands.ReorderRoles,
        response=list[objects.Role],
        errors=(
            "unknown_server",
            "missing_permission",
            "role_hierarchy",
            "unknown_role",
            "everyone_role",
        ),
    )
    async def reorder_roles(server_id: str) -> Response:
        who = principal(rt)
        moves = await body(commands.ReorderRoles)
        roles = await chat_roles.reorder(rt.chat, who.user_id, server_id, moves, audit_reason())
        return json_response(roles)

    @bp.patch("/servers/<server_id>/roles/<role_id>")
    @doc(
        "Change a role (MANAGE_ROLES, below the caller's highest)",
        body=commands.UpdateRole,
        response=objects.Role,
        errors=(
            "unknown_server",
            "unknown_role",
            "missing_permission",
            "role_hierarchy",
            "everyone_role",
        ),
    )
    async def update_role(server_id: str, role_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateRole)
        role = await chat_roles.update(
            rt.chat, who.user_id, server_id, role_id, data, audit_reason()
        )
        return json_response(role)

    @bp.delete("/servers/<server_id>/roles/<role_id>")
    @doc(
        "Delete a role (MANAGE_ROLES, below the caller's highest)",
        errors=(
            "unknown_server",
            "unknown_role",
            "missing_permission",
            "role_hierarchy",
            "everyone_role",
        ),
    )
    async def delete_role(server_id: str, role_id: str) -> Response:
        who = principal(rt)
        await chat_roles.delete(rt.chat, who.user_id, server_id, role_id, audit_reason())
        return no_content()

    # -- member roles --------------------------------------------------------------------------

    @bp.put("/servers/<server_id>/members/<user_id>/roles/<role_id>")
    @doc(
        "Give a member a role (MANAGE_ROLES, below the caller's highest)",
        errors=(
            "unknown_server",
            "unknown_member",
            "unknown_role",
            "missing_permission",
            "role_hierarchy",
            "everyone_role",
        ),
        path={"user_id": "the member's user id"},
    )
    async def add_member_role(server_id: str, user_id: str, role_id: str) -> Response:
        who = principal(rt)
        await chat_roles.set_member_role(
            rt.chat, who.user_id, server_id, user_id, role_id, add=True, reason=audit_reason()
        )
        return no_content()

    @bp.delete("/servers/<server_id>/members/<user_id>/roles/<role_id>")
    @doc(
        "Take a role from a member (MANAGE_ROLES, below the caller's highest)",
        errors=(
            "unknown_server",
            "unknown_member",
            "unknown_role",
            "missing_permission",
            "role_hierarchy",
            "everyone_role",
        ),
        path={"user_id": "the member's user id"},
    )
    async def remove_member_role(server_id: str, user_id: str, role_id: str) -> Response:
        who = principal(rt)
        await chat_roles.set_member_role(
            rt.chat, who.user_id, server_id, user_id, role_id, add=False, reason=audit_reason()
        )
        return no_content()

    # -- channel overwrites --------------------------------------------------------------------

    @bp.put("/channels/<channel_id>/permissions/<target_id>")
    @doc(
        "Set a channel's overwrite for a role or member (MANAGE_ROLES)",
        body=commands.PutOverwrite,
        errors=(
            "unknown_channel",
            "dm_channel",
            "thread_channel",
            "unknown_role",
            "unknown_member",
            "missing_permission",
            "too_many_overwrites",
        ),
    )
    async def put_overwrite(channel_id: str, target_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.PutOverwrite)
        await chat_overwrites.put(rt.chat, who.user_id, channel_id, target_id, data, audit_reason())
        return no_content()

    @bp.delete("/channels/<channel_id>/permissions/<target_id>")
    @doc(
        "Delete a channel's overwrite (MANAGE_ROLES)",
        errors=(
            "unknown_channel",
            "dm_channel",
            "thread_channel",
            "unknown_overwrite",
            "missing_permission",
        ),
    )
    async def delete_overwrite(channel_id: str, target_id: str) -> Response:
        who = principal(rt)
        await chat_overwrites.delete(rt.chat, who.user_id, channel_id, target_id, audit_reason())
        return no_content()

    return bp
