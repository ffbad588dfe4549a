"""Roles: listing, creating, reordering, changing and deleting a server's roles, and giving or
taking one from a member.

The write functions (relay.storage.roles) check MANAGE_ROLES, the hierarchy and that nobody
grants what they lack, in the transaction that makes the change. Afterwards ROLE_* and
MEMBER_UPDATE go to the server, and every change that can alter who sees a channel goes through
relay.chat.visibility, scoped to whom it can affect: a role's holders (everybody for
@everyone), or the one member who got or lost it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import UNSET, UnsetType

from relay.chat import events, visibility
from relay.chat.args import id_field, mask_field, snowflake
from relay.chat.fanout import PermissionsChanged
from relay.chat.objects import RoleDeleted, RoleEvent, member_update_out, role_out
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.chat.objects import Role
    from relay.storage.roles import RoleRow


def _announce(chat: Chat, kind: type[events.RoleCreate | events.RoleUpdate], role: RoleRow) -> None:
    payload = RoleEvent(server_id=str(role.server_id), role=role_out(role))
    chat.fanout.to_server(role.server_id, kind(d=payload))


async def _holders(chat: Chat, server_id: int, role_id: int) -> set[int] | None:
    """Who a change of this role's permissions can affect (None: everybody)."""
    if role_id == server_id:  # @everyone
        return None
    view = await chat.views.get(server_id)
    return view.holders(role_id) if view is not None else set()


async def list_roles(chat: Chat, user_id: int, server_id: str) -> list[Role]:
    """The server's roles, for a member (404 unknown_server otherwise)."""
    sid = snowflake(server_id, "server")
    rows = await chat.store.read(chat.q.roles.roles_for, sid, user_id)
    return [role_out(r) for r in rows]


async def create(
    chat: Chat, user_id: int, server_id: str, data: commands.CreateRole, reason: str | None
) -> Role:
    """A new role (422 too_many_roles once the server has `max_roles_per_server`); ROLE_CREATE
    to the server."""
    sid = snowflake(server_id, "server")
    role = await chat.store.write(
        chat.q.roles.create_role,
        chat.store.ids.next(),
        sid,
        user_id,
        name=data.name,
        permissions=mask_field(data.permissions, "permissions"),
        color=data.color,
        hoist=data.hoist,
        mentionable=data.mentionable,
        position=data.position,
        now_ms=now_ms(),
        max_roles=chat.settings.max_roles_per_server,
        reason=reason,
    )
    chat.fanout.announce(PermissionsChanged(sid))  # nobody holds it yet
    _announce(chat, events.RoleCreate, role)
    return role_out(role)


async def reorder(
    chat: Chat, user_id: int, server_id: str, moves: commands.ReorderRoles, reason: str | None
) -> list[Role]:
    """Move roles to new positions; ROLE_UPDATE for each that moved. Returns all the roles."""
    sid = snowflake(server_id, "server")
    pairs = [(id_field(m.id, f"[{n}].id"), m.position) for n, m in enumerate(moves)]
    moved = await chat.store.write(chat.q.roles.reorder_roles, sid, user_id, pairs, reason)
    chat.fanout.announce(PermissionsChanged(sid))  # the hierarchy, not visibility
    for role in moved:
        _announce(chat, events.RoleUpdate, role)
    rows = await chat.store.read(chat.q.roles.roles_for, sid, user_id)
    return [role_out(r) for r in rows]


async def update(
    chat: Chat,
    user_id: int,
    server_id: str,
    role_id: str,
    data: commands.UpdateRole,
    reason: str | None,
) -> Role:
    """Change a role; ROLE_UPDATE, then what its holders gained or lost sight of."""
    sid = snowflake(server_id, "server")
    rid = snowflake(role_id, "role")
    permissions: int | UnsetType = UNSET
    if isinstance(data.permissions, str):
        permissions = mask_field(data.permissions, "permissions")
    before = await visibility.before(chat, sid)
    affected = await _holders(chat, sid, rid)
    role = await chat.store.write(
        chat.q.roles.update_role,
        sid,
        rid,
        user_id,
        name=data.name,
        permissions=permissions,
        color=data.color,
        hoist=data.hoist,
        mentionable=data.mentionable,
        reason=reason,
    )
    _announce(chat, events.RoleUpdate, role)
    await visibility.after(chat, sid, before, users=affected)
    return role_out(role)


async def delete(
    chat: Chat, user_id: int, server_id: str, role_id: str, reason: str | None
) -> None:
    """Delete a role (its holders lose it, its overwrites go); ROLE_DELETE, then what its
    holders gained or lost sight of."""
    sid = snowflake(server_id, "server")
    rid = snowflake(role_id, "role")
    before = await visibility.before(chat, sid)
    affected = await _holders(chat, sid, rid)
    await chat.store.write(chat.q.roles.delete_role, sid, rid, user_id, reason)
    deleted = RoleDeleted(server_id=str(sid), role_id=str(rid))
    chat.fanout.to_server(sid, events.RoleDelete(d=deleted))
    # Its overwrites went too, which can change any channel for anyone.
    await visibility.after(chat, sid, before, users=affected)


async def set_member_role(
    chat: Chat,
    user_id: int,
    server_id: str,
    member_id: str,
    role_id: str,
    *,
    add: bool,
    reason: str | None,
) -> None:
    """Give a member a role (`add`) or take it; when that changed something, MEMBER_UPDATE to
    the server and to the member what they gained or lost sight of."""
    sid = snowflake(server_id, "server")
    uid = snowflake(member_id, "member")
    rid = snowflake(role_id, "role")
    before = await visibility.before(chat, sid)
    write = chat.q.roles.add_member_role if add else chat.q.roles.remove_member_role
    if not await chat.store.write(write, sid, uid, rid, user_id, reason):
        return
    member = await chat.store.read(chat.q.members.get_member, sid, uid)
    if member is not None:
        chat.fanout.to_server(sid, events.MemberUpdateEvent(d=member_update_out(member)))
    await visibility.after(chat, sid, before, users={uid})
