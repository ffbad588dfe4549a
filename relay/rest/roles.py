"""Role routes (`/servers/{id}/roles`), who holds them (`/servers/{id}/members/{uid}/roles`)
and channel permission overwrites (`/channels/{id}/permissions/{target_id}`).

The write functions (relay.storage.roles, relay.storage.overwrites) check MANAGE_ROLES, the
hierarchy and that nobody grants what they lack. Afterwards every change that can alter who
sees a channel goes through `relay.rest.visibility`, scoped to whom it can affect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import UNSET, UnsetType
from quart import Blueprint, Response

from relay.accounts import now_ms
from relay.chat import commands, events, objects, visibility
from relay.chat.args import id_field, mask_field, overwrite_of, snowflake
from relay.chat.fanout import PermissionsChanged
from relay.chat.objects import member_update_out, role_out
from relay.errors import Forbidden
from relay.rest.http import audit_reason, body, json_response, no_content, principal
from relay.rest.servers import unknown_channel
from relay.storage import channels, dms, members, overwrites, roles

if TYPE_CHECKING:
    from relay.chat.views import ServerView
    from relay.runtime import Runtime
    from relay.storage.roles import RoleRow

MAX_ROLES = 250


def roles_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("roles", __name__, url_prefix="/v1/api")

    def role_event(kind: type[events.RoleCreate | events.RoleUpdate], role: RoleRow) -> None:
        payload = objects.RoleEvent(server_id=str(role.server_id), role=role_out(role))
        rt.chat.fanout.to_server(role.server_id, kind(d=payload))

    async def holders(server_id: int, role_id: int) -> set[int] | None:
        """Who a change of this role's permissions can affect (None: everybody)."""
        if role_id == server_id:
            return None
        view = await rt.chat.views.get(server_id)
        return view.holders(role_id) if view is not None else set()

    # -- roles ---------------------------------------------------------------------------------

    @bp.get("/servers/<server_id>/roles")
    async def list_roles(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        rows = await rt.store.read(roles.roles_for, sid, who.user_id)
        return json_response([role_out(r) for r in rows])

    @bp.post("/servers/<server_id>/roles")
    async def create_role(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        data = await body(commands.CreateRole)
        role = await rt.store.write(
            roles.create_role,
            rt.store.ids.next(),
            sid,
            who.user_id,
            name=data.name,
            permissions=mask_field(data.permissions, "permissions"),
            color=data.color,
            hoist=data.hoist,
            mentionable=data.mentionable,
            position=data.position,
            now_ms=now_ms(),
            max_roles=MAX_ROLES,
            reason=audit_reason(),
        )
        rt.chat.fanout.announce(PermissionsChanged(sid))  # nobody holds it yet
        role_event(events.RoleCreate, role)
        return json_response(role_out(role), 201)

    @bp.patch("/servers/<server_id>/roles")
    async def reorder_roles(server_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        data = await body(commands.ReorderRoles)
        moves = [(id_field(m.id, f"[{n}].id"), m.position) for n, m in enumerate(data)]
        moved = await rt.store.write(roles.reorder_roles, sid, who.user_id, moves, audit_reason())
        rt.chat.fanout.announce(PermissionsChanged(sid))  # the hierarchy, not visibility
        for role in moved:
            role_event(events.RoleUpdate, role)
        rows = await rt.store.read(roles.roles_for, sid, who.user_id)
        return json_response([role_out(r) for r in rows])

    @bp.patch("/servers/<server_id>/roles/<role_id>")
    async def update_role(server_id: str, role_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        rid = snowflake(role_id, "role")
        data = await body(commands.UpdateRole)
        permissions: int | UnsetType = UNSET
        if isinstance(data.permissions, str):
            permissions = mask_field(data.permissions, "permissions")
        before = await visibility.before(rt.chat, sid)
        affected = await holders(sid, rid)
        role = await rt.store.write(
            roles.update_role,
            sid,
            rid,
            who.user_id,
            name=data.name,
            permissions=permissions,
            color=data.color,
            hoist=data.hoist,
            mentionable=data.mentionable,
            reason=audit_reason(),
        )
        role_event(events.RoleUpdate, role)
        await visibility.after(rt.chat, sid, before, users=affected)
        return json_response(role_out(role))

    @bp.delete("/servers/<server_id>/roles/<role_id>")
    async def delete_role(server_id: str, role_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        rid = snowflake(role_id, "role")
        before = await visibility.before(rt.chat, sid)
        affected = await holders(sid, rid)
        await rt.store.write(roles.delete_role, sid, rid, who.user_id, audit_reason())
        deleted = objects.RoleDeleted(server_id=str(sid), role_id=str(rid))
        rt.chat.fanout.to_server(sid, events.RoleDelete(d=deleted))
        # Its overwrites went too, which can change any channel for anyone.
        await visibility.after(rt.chat, sid, before, users=affected)
        return no_content()

    # -- member roles --------------------------------------------------------------------------

    async def change_member_role(server_id: str, user_id: str, role_id: str, add: bool) -> None:
        who = principal(rt)
        sid = snowflake(server_id, "server")
        uid = snowflake(user_id, "member")
        rid = snowflake(role_id, "role")
        before = await visibility.before(rt.chat, sid)
        write = roles.add_member_role if add else roles.remove_member_role
        changed = await rt.store.write(write, sid, uid, rid, who.user_id, audit_reason())
        if not changed:
            return
        member = await rt.store.read(members.get_member, sid, uid)
        if member is not None:
            rt.chat.fanout.to_server(sid, events.MemberUpdateEvent(d=member_update_out(member)))
        await visibility.after(rt.chat, sid, before, users={uid})

    @bp.put("/servers/<server_id>/members/<user_id>/roles/<role_id>")
    async def add_member_role(server_id: str, user_id: str, role_id: str) -> Response:
        await change_member_role(server_id, user_id, role_id, add=True)
        return no_content()

    @bp.delete("/servers/<server_id>/members/<user_id>/roles/<role_id>")
    async def remove_member_role(server_id: str, user_id: str, role_id: str) -> Response:
        await change_member_role(server_id, user_id, role_id, add=False)
        return no_content()

    # -- channel overwrites --------------------------------------------------------------------

    async def server_of(channel_id: int, user_id: int) -> int:
        """The server of a channel the user can see (else 404)."""
        found = await rt.store.read(dms.channel_for, channel_id, user_id)
        if found is None:
            raise unknown_channel()
        if isinstance(found, dms.DmRow) or found.server_id is None:
            raise Forbidden("a DM channel has no permission overwrites", code="dm_channel")
        return found.server_id

    async def overwrite_changed(server_id: int, channel_id: int, before: ServerView | None) -> None:
        """Announce the channel and those that follow it (a category's synced children)."""
        children = {
            c.id
            for c in await rt.store.read(channels.list_channels, server_id)
            if c.parent_id == channel_id and c.permissions_synced
        }
        scope = {channel_id, *children}
        await visibility.after(rt.chat, server_id, before, channels=scope, updated=scope)

    @bp.put("/channels/<channel_id>/permissions/<target_id>")
    async def put_overwrite(channel_id: str, target_id: str) -> Response:
        who = principal(rt)
        cid = snowflake(channel_id, "channel")
        data = await body(commands.PutOverwrite)
        tid = snowflake(target_id, data.type if data.type == "role" else "member")
        given = overwrite_of(tid, data.type, data.allow, data.deny, "")
        sid = await server_of(cid, who.user_id)
        before = await visibility.before(rt.chat, sid)
        await rt.store.write(overwrites.set_overwrite, cid, who.user_id, given, audit_reason())
        await overwrite_changed(sid, cid, before)
        return no_content()

    @bp.delete("/channels/<channel_id>/permissions/<target_id>")
    async def delete_overwrite(channel_id: str, target_id: str) -> Response:
        who = principal(rt)
        cid = snowflake(channel_id, "channel")
        tid = snowflake(target_id, "overwrite")
        sid = await server_of(cid, who.user_id)
        before = await visibility.before(rt.chat, sid)
        await rt.store.write(overwrites.delete_overwrite, cid, tid, who.user_id, audit_reason())
        await overwrite_changed(sid, cid, before)
        return no_content()

    return bp
