"""Queries for a server's roles and the roles its members hold.

Every server has an @everyone role: its id is the server's id, its position 0, every member has
it without holding it in member_roles, and it cannot be renamed, moved, deleted or given.

Rules every write here enforces (relay.storage.access has the checks):
- MANAGE_ROLES is needed to change roles or who holds them.
- Hierarchy: a role at or above the actor's highest role cannot be edited, moved, deleted, given
  or taken; no role can be moved or created at or above it either; and a member whose highest
  role is at or above the actor's (or the owner) cannot be given or lose roles.
- A bot's managed role (`roles.managed_by`, relay.storage.applications) is never changed,
  moved, deleted, given or taken here: it comes and goes with the bot's membership.
- Nobody can grant a permission they do not have themselves (a role's new permissions may only
  add bits the actor holds), which is what stops an escalation through @everyone.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from relay.errors import BadRequest, Forbidden, NotFound, Unprocessable
from relay.permissions import DEFAULT_EVERYONE, P, Role
from relay.storage import audit
from relay.storage.access import Access, missing_permission, require_server, server_access

if TYPE_CHECKING:
    from sqlite_utils import Database

EVERYONE = "@everyone"


class RoleRow(msgspec.Struct, frozen=True):
    id: int
    server_id: int
    name: str
    permissions: int
    color: int
    position: int
    hoist: bool
    mentionable: bool
    created_at: int
    managed: bool = False  # a bot's role: given and taken with its membership, never by hand

    @property
    def is_everyone(self) -> bool:
        return self.id == self.server_id

    def as_role(self) -> Role:
        return Role(self.id, self.permissions, self.position)

    def audited(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "permissions": self.permissions,
            "color": self.color,
            "position": self.position,
            "hoist": self.hoist,
            "mentionable": self.mentionable,
        }


_ROLE = "id, server_id, name, permissions, color, position, hoist, mentionable, created_at"
_READ = f"{_ROLE}, managed_by IS NOT NULL"  # what is read: the columns, and whether managed


def _row(row: tuple[Any, ...]) -> RoleRow:
    role_id, server_id, name, permissions, color, position, hoist, mentionable, created = row[:9]
    return RoleRow(
        role_id,
        server_id,
        name,
        permissions,
        color,
        position,
        bool(hoist),
        bool(mentionable),
        created,
        bool(row[9]) if len(row) > 9 else False,
    )


def unknown_role() -> NotFound:
    return NotFound("unknown role", code="unknown_role")


def unknown_member() -> NotFound:
    return NotFound("unknown member", code="unknown_member")


def insert_everyone(db: Database, server_id: int, now_ms: int) -> RoleRow:
    role = RoleRow(server_id, server_id, EVERYONE, DEFAULT_EVERYONE, 0, 0, False, False, now_ms)
    db.execute(
        f"INSERT INTO roles ({_ROLE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*msgspec.structs.astuple(role)[:6], 0, 0, now_ms),
    )
    return role


def roles_where(db: Database, where: str, params: tuple[Any, ...]) -> list[RoleRow]:
    """Roles selected by `where` (on `r`)."""
    columns = ", ".join(f"r.{c}" for c in _READ.split(", "))
    rows = db.execute(f"SELECT {columns} FROM roles r {where}", params)
    return [_row(r) for r in rows.fetchall()]


def list_roles(db: Database, server_id: int) -> list[RoleRow]:
    """A server's roles, lowest first (by position, then id)."""
    return roles_where(db, "WHERE r.server_id = ? ORDER BY r.position, r.id", (server_id,))


def roles_for(db: Database, server_id: int, user_id: int) -> list[RoleRow]:
    """A server's roles, for a member. Raises NotFound("unknown_server")."""
    require_server(db, server_id, user_id)
    return list_roles(db, server_id)


def get_role(db: Database, server_id: int, role_id: int) -> RoleRow | None:
    row = db.execute(
        f"SELECT {_READ} FROM roles WHERE id = ? AND server_id = ?", (role_id, server_id)
    ).fetchone()
    return _row(row) if row is not None else None


def _existing(db: Database, server_id: int, role_id: int) -> RoleRow:
    role = get_role(db, server_id, role_id)
    if role is None:
        raise unknown_role()
    return role


def require_grantable(have: int, old: int, new: int) -> None:
    """Refuse a change of permissions (of a role or an overwrite) that adds bits the actor does
    not hold (`have`): nobody can hand out more than they have."""
    lacking = new & ~old & ~have
    if lacking:
        raise missing_permission(lacking & -lacking)


def _not_everyone(role: RoleRow, what: str) -> None:
    if role.is_everyone:
        raise BadRequest(f"@everyone cannot be {what}", code="everyone_role")
    if role.managed:
        raise Forbidden(
            f"a bot's managed role cannot be {what} by hand; remove the bot instead",
            code="managed_role",
        )


def create_role(
    db: Database,
    role_id: int,
    server_id: int,
    user_id: int,
    *,
    name: str,
    permissions: int,
    color: int,
    hoist: bool,
    mentionable: bool,
    position: int,
    now_ms: int,
    max_roles: int,
    reason: str | None = None,
) -> RoleRow:
    """A new role. Raises NotFound("unknown_server"), Forbidden("missing_permission" |
    "role_hierarchy") or Unprocessable("too_many_roles")."""
    actor = require_server(db, server_id, user_id, P.MANAGE_ROLES)
    require_grantable(actor.permissions(), 0, permissions)
    role = RoleRow(
        role_id, server_id, name, permissions, color, position, hoist, mentionable, now_ms
    )
    actor.require_above_role(role.as_role())
    count = db.execute("SELECT count(*) FROM roles WHERE server_id = ?", (server_id,)).fetchone()
    if count[0] >= max_roles:
        raise Unprocessable(f"a server has at most {max_roles} roles", code="too_many_roles")
    db.execute(
        f"INSERT INTO roles ({_ROLE}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (role_id, server_id, name, permissions, color, position, hoist, mentionable, now_ms),
    )
    audit.record(
        db, server_id, user_id, "role_create", role_id, audit.created(role.audited()), reason
    )
    return role


def update_role(
    db: Database,
    server_id: int,
    role_id: int,
    user_id: int,
    *,
    name: str | UnsetType = UNSET,
    permissions: int | UnsetType = UNSET,
    color: int | UnsetType = UNSET,
    hoist: bool | UnsetType = UNSET,
    mentionable: bool | UnsetType = UNSET,
    reason: str | None = None,
) -> RoleRow:
    """Change the given fields. @everyone may have its permissions changed by anyone with
    MANAGE_ROLES (it is below everybody), but not its name.

    Raises NotFound("unknown_server" | "unknown_role"), Forbidden("missing_permission" |
    "role_hierarchy") or BadRequest("everyone_role")."""
    actor = require_server(db, server_id, user_id, P.MANAGE_ROLES)
    role = _existing(db, server_id, role_id)
    if role.managed:
        _not_everyone(role, "edited")
    if not role.is_everyone:
        actor.require_above_role(role.as_role())
    elif not isinstance(name, UnsetType):
        _not_everyone(role, "renamed")
    if not isinstance(permissions, UnsetType):
        require_grantable(actor.permissions(), role.permissions, permissions)
    given = {
        "name": name,
        "permissions": permissions,
        "color": color,
        "hoist": hoist,
        "mentionable": mentionable,
    }
    changes = {k: v for k, v in given.items() if not isinstance(v, UnsetType)}
    updated = msgspec.structs.replace(role, **changes)
    if updated == role:
        return role
    assignments = ", ".join(f"{column} = ?" for column in changes)
    db.execute(f"UPDATE roles SET {assignments} WHERE id = ?", (*changes.values(), role_id))
    audit.record(
        db,
        server_id,
        user_id,
        "role_update",
        role_id,
        audit.diff(role.audited(), updated.audited()),
        reason,
    )
    return updated


def delete_role(
    db: Database, server_id: int, role_id: int, user_id: int, reason: str | None = None
) -> RoleRow:
    """Delete a role: its holders lose it, and channel overwrites for it go too."""
    actor = require_server(db, server_id, user_id, P.MANAGE_ROLES)
    role = _existing(db, server_id, role_id)
    _not_everyone(role, "deleted")
    actor.require_above_role(role.as_role())
    db.execute("DELETE FROM roles WHERE id = ?", (role_id,))
    db.execute(
        "DELETE FROM overwrites WHERE target_id = ? AND type = 'role'"
        " AND channel_id IN (SELECT id FROM channels WHERE server_id = ?)",
        (role_id, server_id),
    )
    audit.record(
        db, server_id, user_id, "role_delete", role_id, audit.removed(role.audited()), reason
    )
    return role


def reorder_roles(
    db: Database,
    server_id: int,
    user_id: int,
    moves: list[tuple[int, int]],
    reason: str | None = None,
) -> list[RoleRow]:
    """Give roles new positions (`(role_id, position)` pairs). Both a role's old and its new
    position must be below the actor's highest role. Returns the roles that moved."""
    actor = require_server(db, server_id, user_id, P.MANAGE_ROLES)
    moved: list[RoleRow] = []
    for role_id, position in moves:
        role = _existing(db, server_id, role_id)
        _not_everyone(role, "moved")
        actor.require_above_role(role.as_role())
        actor.require_above_role(Role(role_id, role.permissions, position))
        if position == role.position:
            continue
        db.execute("UPDATE roles SET position = ? WHERE id = ?", (position, role_id))
        changes = [audit.Change("position", role.position, position)]
        audit.record(db, server_id, user_id, "role_update", role_id, changes, reason)
        moved.append(msgspec.structs.replace(role, position=position))
    return moved


# -- who holds which role ----------------------------------------------------------------------


def held_roles(db: Database, server_id: int, user_ids: list[int]) -> dict[int, list[int]]:
    """The roles each of `user_ids` holds in the server, ascending (absent: none)."""
    found: dict[int, list[int]] = {}
    for uid, role_id in db.execute(
        "SELECT user_id, role_id FROM member_roles WHERE server_id = ?"
        " AND user_id IN (SELECT value FROM json_each(?)) ORDER BY user_id, role_id",
        (server_id, json.dumps(user_ids)),
    ):
        found.setdefault(uid, []).append(role_id)
    return found


def _member_change(
    db: Database, server_id: int, target_id: int, role_id: int, user_id: int
) -> tuple[Access, RoleRow]:
    actor = require_server(db, server_id, user_id, P.MANAGE_ROLES)
    role = _existing(db, server_id, role_id)
    _not_everyone(role, "given or taken")
    target = server_access(db, server_id, target_id)
    if target is None:
        raise unknown_member()
    actor.require_above_role(role.as_role())
    actor.require_above(target)
    return actor, role


def add_member_role(
    db: Database,
    server_id: int,
    target_id: int,
    role_id: int,
    user_id: int,
    reason: str | None = None,
) -> bool:
    """Give a member a role; False if they had it. Raises NotFound("unknown_server" |
    "unknown_role" | "unknown_member"), Forbidden, BadRequest("everyone_role")."""
    _member_change(db, server_id, target_id, role_id, user_id)
    cursor = db.execute(
        "INSERT INTO member_roles (server_id, user_id, role_id) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (server_id, target_id, role_id),
    )
    if cursor.rowcount != 1:
        return False
    changes = [audit.Change("role_id", None, role_id)]
    audit.record(db, server_id, user_id, "member_role_add", target_id, changes, reason)
    return True


def remove_member_role(
    db: Database,
    server_id: int,
    target_id: int,
    role_id: int,
    user_id: int,
    reason: str | None = None,
) -> bool:
    """Take a role from a member; False if they did not have it."""
    _member_change(db, server_id, target_id, role_id, user_id)
    cursor = db.execute(
        "DELETE FROM member_roles WHERE server_id = ? AND user_id = ? AND role_id = ?",
        (server_id, target_id, role_id),
    )
    if cursor.rowcount != 1:
        return False
    changes = [audit.Change("role_id", role_id, None)]
    audit.record(db, server_id, user_id, "member_role_remove", target_id, changes, reason)
    return True
