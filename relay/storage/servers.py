"""Queries for servers: creating, changing, deleting and giving one away, what a member sees of
them (server_state, ready_state), who is a member or banned, and discovery of public servers.
Their members are relay.storage.members, invites relay.storage.invites, 1:1 DM channels
relay.storage.dms, and a server's channels relay.storage.channels.

Plain sync functions over a sqlite-utils Database, `db` first; the Store runs them in its writer
or reader threads. Write functions take the acting user and check what that user may do inside
the same transaction as the change, so a check can never be overtaken by another write (a server
deleted, an invite used up). They raise the error the client gets; the Store rolls back just that
request's savepoint.

Who may see what: a server and everything in it exist only for its members (everyone else gets a
404, never a 403), and a channel only for members with VIEW_CHANNEL in it; a DM channel exists
only for its two recipients. What a member may do is decided by `relay.storage.access` (roles,
overwrites, hierarchy); deleting a server and giving it away are the owner's alone
(`require_owner`). Every change an operator may want to trace is written to the audit log in the
same transaction (`relay.storage.audit`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from relay.errors import Forbidden, NotFound, Unprocessable
from relay.permissions import P
from relay.storage import audit
from relay.storage.access import (
    accesses_of,
    require_server,
    server_access,
    unknown_server,
    visible_ids,
)
from relay.storage.channels import ChannelRow, channels_where, insert_channel, list_channels
from relay.storage.roles import RoleRow, insert_everyone, list_roles, roles_where

if TYPE_CHECKING:
    from sqlite_utils import Database


class ServerRow(msgspec.Struct, frozen=True):
    id: int
    name: str
    owner_id: int
    created_at: int
    is_public: bool = False  # listed by discovery; joinable without an invite
    description: str | None = None


class ServerState(msgspec.Struct, frozen=True):
    """A server with the channels one member can see, and its roles (SERVER_CREATE, READY,
    joining)."""

    server: ServerRow
    channels: list[ChannelRow]
    roles: list[RoleRow] = msgspec.field(default_factory=list)


class PublicServer(msgspec.Struct, frozen=True):
    server: ServerRow
    member_count: int


class ServerListing(msgspec.Struct, frozen=True):
    """A server as the admin CLI lists them: with its owner's username and member count."""

    server: ServerRow
    owner_name: str
    member_count: int


_SERVER = "s.id, s.name, s.owner_id, s.created_at, s.is_public, s.description"


def _server(row: tuple[Any, ...]) -> ServerRow:
    server_id, name, owner_id, created_at, is_public, description = row
    return ServerRow(server_id, name, owner_id, created_at, bool(is_public), description)


def _servers(db: Database, where: str, params: tuple[Any, ...]) -> list[ServerRow]:
    rows = db.execute(f"SELECT {_SERVER} FROM servers s {where}", params).fetchall()
    return [_server(r) for r in rows]


# -- access ----------------------------------------------------------------------------------------


def require_member(db: Database, server_id: int, user_id: int) -> ServerRow:
    """The server if `user_id` is a member; else NotFound (outsiders cannot tell it exists)."""
    server = server_for(db, server_id, user_id)
    if server is None:
        raise unknown_server()
    return server


def require_owner(db: Database, server_id: int, user_id: int) -> ServerRow:
    """The server if `user_id` owns it: deleting a server and giving it away are the owner's
    alone (no permission grants them)."""
    server = require_member(db, server_id, user_id)
    if server.owner_id != user_id:
        raise Forbidden("only the server owner may do this", code="not_owner")
    return server


def is_member(db: Database, server_id: int, user_id: int) -> bool:
    row = db.execute(
        "SELECT 1 FROM members WHERE server_id = ? AND user_id = ?", (server_id, user_id)
    ).fetchone()
    return row is not None


def is_banned(db: Database, server_id: int, user_id: int) -> bool:
    row = db.execute(
        "SELECT 1 FROM bans WHERE server_id = ? AND user_id = ?", (server_id, user_id)
    ).fetchone()
    return row is not None


# -- servers ---------------------------------------------------------------------------------------


def create_server(
    db: Database,
    server_id: int,
    channel_ids: tuple[int, int],
    owner_id: int,
    name: str,
    now_ms: int,
    max_owned: int,
) -> ServerState:
    """A server owned by (and with the single member) `owner_id`, with its @everyone role, a
    `general` text channel and a `General` voice channel. Raises
    Unprocessable("too_many_servers": `owner_id` owns `max_owned`, the setting
    max_servers_owned)."""
    owned = db.execute("SELECT count(*) FROM servers WHERE owner_id = ?", (owner_id,)).fetchone()
    if owned[0] >= max_owned:
        raise Unprocessable(f"a user may own at most {max_owned} servers", code="too_many_servers")
    db.execute(
        "INSERT INTO servers (id, name, owner_id, created_at) VALUES (?, ?, ?, ?)",
        (server_id, name, owner_id, now_ms),
    )
    everyone = insert_everyone(db, server_id, now_ms)
    db.execute(
        "INSERT INTO members (server_id, user_id, joined_at) VALUES (?, ?, ?)",
        (server_id, owner_id, now_ms),
    )
    text_id, voice_id = channel_ids
    channels = [
        ChannelRow(text_id, server_id, "text", "general", None, 0, None, None, now_ms),
        ChannelRow(voice_id, server_id, "voice", "General", None, 1, None, None, now_ms),
    ]
    for c in channels:
        insert_channel(db, c)
    return ServerState(ServerRow(server_id, name, owner_id, now_ms), channels, [everyone])


def get_server(db: Database, server_id: int) -> ServerRow | None:
    found = _servers(db, "WHERE s.id = ?", (server_id,))
    return found[0] if found else None


def server_for(db: Database, server_id: int, user_id: int) -> ServerRow | None:
    """The server if `user_id` is a member of it."""
    found = _servers(
        db,
        "JOIN members m ON m.server_id = s.id WHERE s.id = ? AND m.user_id = ?",
        (server_id, user_id),
    )
    return found[0] if found else None


def servers_of(db: Database, user_id: int) -> list[ServerRow]:
    return _servers(
        db, "JOIN members m ON m.server_id = s.id WHERE m.user_id = ? ORDER BY s.id", (user_id,)
    )


def update_server(
    db: Database,
    server_id: int,
    user_id: int,
    name: str | None,
    *,
    description: str | UnsetType | None = UNSET,
    is_public: bool | None = None,
    reason: str | None = None,
) -> ServerRow:
    """Change the given fields (MANAGE_SERVER). Raises NotFound("unknown_server") or
    Forbidden("missing_permission")."""
    require_server(db, server_id, user_id, P.MANAGE_SERVER)
    server = get_server(db, server_id)
    assert server is not None
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if not isinstance(description, UnsetType):
        changes["description"] = description
    if is_public is not None:
        changes["is_public"] = is_public
    updated = msgspec.structs.replace(server, **changes)
    if updated == server:
        return server
    assignments = ", ".join(f"{column} = ?" for column in changes)
    db.execute(f"UPDATE servers SET {assignments} WHERE id = ?", (*changes.values(), server_id))
    audited = ("name", "description", "is_public")
    audit.record(
        db,
        server_id,
        user_id,
        "server_update",
        server_id,
        audit.diff(
            {k: getattr(server, k) for k in audited}, {k: getattr(updated, k) for k in audited}
        ),
        reason,
    )
    return updated


def delete_server(db: Database, server_id: int, user_id: int) -> ServerRow:
    """Delete a server and (by cascade) its channels, messages, members, roles and invites."""
    server = require_owner(db, server_id, user_id)
    db.execute("DELETE FROM servers WHERE id = ?", (server_id,))
    return server


def transfer_ownership(
    db: Database, server_id: int, user_id: int, new_owner_id: int, reason: str | None = None
) -> ServerRow:
    """Make another member the owner (the owner only). Raises NotFound("unknown_server" |
    "unknown_member"), Forbidden("not_owner")."""
    server = require_owner(db, server_id, user_id)
    if not is_member(db, server_id, new_owner_id):
        raise NotFound("unknown member", code="unknown_member")
    if new_owner_id == user_id:
        return server
    db.execute("UPDATE servers SET owner_id = ? WHERE id = ?", (new_owner_id, server_id))
    changes = [audit.Change("owner_id", user_id, new_owner_id)]
    audit.record(db, server_id, user_id, "owner_transfer", new_owner_id, changes, reason)
    return msgspec.structs.replace(server, owner_id=new_owner_id)


def server_state(db: Database, server_id: int, viewer_id: int) -> ServerState:
    """The server with the channels `viewer_id` (a member) can see, and its roles."""
    server = get_server(db, server_id)
    access = server_access(db, server_id, viewer_id, None)
    if server is None or access is None:
        raise unknown_server()
    channels = list_channels(db, server_id)
    seen = visible_ids(access, [c.id for c in channels])
    return ServerState(server, [c for c in channels if c.id in seen], list_roles(db, server_id))


def ready_state(db: Database, user_id: int) -> list[ServerState]:
    """Every server of a user with the channels they can see (threads not included: READY
    has the user's own) and its roles (for READY), in a fixed number of queries however many
    servers and channels there are."""
    servers = servers_of(db, user_id)
    if not servers:
        return []
    accesses = accesses_of(db, user_id)
    mine = "JOIN members m ON m.server_id = {}.server_id AND m.user_id = ?"
    channels: dict[int, list[ChannelRow]] = {s.id: [] for s in servers}
    for c in channels_where(
        db,
        f"{mine.format('c')} WHERE c.type != 'thread' ORDER BY c.server_id, c.position, c.id",
        (user_id,),
        {sid: access.server for sid, access in accesses.items()},
    ):
        assert c.server_id is not None
        if accesses[c.server_id].permissions(c.id) & P.VIEW_CHANNEL:
            channels[c.server_id].append(c)
    roles: dict[int, list[RoleRow]] = {s.id: [] for s in servers}
    for role in roles_where(db, f"{mine.format('r')} ORDER BY r.position, r.id", (user_id,)):
        roles[role.server_id].append(role)
    return [ServerState(s, channels[s.id], roles[s.id]) for s in servers]


# -- discovery -------------------------------------------------------------------------------------


def discover(db: Database, query: str, after: int, limit: int) -> list[PublicServer]:
    """Public servers whose name contains `query` (case-insensitive), by id after `after`."""
    pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = db.execute(
        f"SELECT {_SERVER}, (SELECT count(*) FROM members m WHERE m.server_id = s.id)"
        " FROM servers s WHERE s.is_public = 1 AND s.id > ? AND s.name LIKE ? ESCAPE '\\'"
        " ORDER BY s.id LIMIT ?",
        (after, pattern, limit),
    ).fetchall()
    return [PublicServer(_server(r[:6]), r[6]) for r in rows]


def list_servers(db: Database, after: int, limit: int) -> list[ServerListing]:
    """Every server (public or not) by id after `after`, at most `limit`."""
    rows = db.execute(
        f"SELECT {_SERVER}, u.username, (SELECT count(*) FROM members m WHERE m.server_id = s.id)"
        " FROM servers s JOIN users u ON u.id = s.owner_id WHERE s.id > ? ORDER BY s.id LIMIT ?",
        (after, limit),
    ).fetchall()
    return [ServerListing(_server(r[:6]), r[6], r[7]) for r in rows]
