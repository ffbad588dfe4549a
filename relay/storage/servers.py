"""Queries for servers, their members, invites and discovery, and 1:1 DM channels (a server's
channels are relay.storage.channels).

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

import sqlite3
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from relay.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unprocessable
from relay.permissions import P
from relay.storage import audit
from relay.storage.access import (
    accesses_of,
    require_server,
    server_access,
    unknown_server,
    visible_ids,
)
from relay.storage.audience import visible_channel
from relay.storage.channels import (
    ChannelRow,
    channels_where,
    get_channel,
    insert_channel,
    list_channels,
)
from relay.storage.roles import RoleRow, held_roles, insert_everyone, list_roles, roles_where

if TYPE_CHECKING:
    from sqlite_utils import Database


class ServerRow(msgspec.Struct, frozen=True):
    id: int
    name: str
    owner_id: int
    created_at: int
    is_public: bool = False  # listed by discovery; joinable without an invite
    description: str | None = None


class UserBrief(msgspec.Struct, frozen=True):
    id: int
    username: str
    display_name: str | None


class MemberRow(msgspec.Struct, frozen=True):
    server_id: int
    user: UserBrief
    nickname: str | None
    joined_at: int
    roles: list[int] = msgspec.field(default_factory=list)  # without @everyone, ascending
    communication_disabled_until: int | None = None  # a timeout (may have ended already)


class InviteRow(msgspec.Struct, frozen=True):
    code: str
    server_id: int
    inviter_id: int
    max_uses: int | None  # None: unlimited
    uses: int
    expires_at: int | None  # None: never
    created_at: int


class InvitePreview(msgspec.Struct, frozen=True):
    invite: InviteRow
    server_name: str
    member_count: int


class ServerState(msgspec.Struct, frozen=True):
    """A server with the channels one member can see, and its roles (SERVER_CREATE, READY,
    joining)."""

    server: ServerRow
    channels: list[ChannelRow]
    roles: list[RoleRow] = msgspec.field(default_factory=list)


class Joined(msgspec.Struct, frozen=True):
    state: ServerState
    member: MemberRow
    created: bool  # False: the user was already a member and no use was spent


class DmRow(msgspec.Struct, frozen=True):
    channel: ChannelRow
    recipients: list[UserBrief]  # both users, by id


class DmOpened(msgspec.Struct, frozen=True):
    dm: DmRow
    created: bool


class PublicServer(msgspec.Struct, frozen=True):
    server: ServerRow
    member_count: int


MAX_INVITES = 1000  # usable ones per server; spent ones are pruned (prune_invites)
MAX_JOINED = 200  # servers one user may be a member of, by invite or public join
_SERVER = "s.id, s.name, s.owner_id, s.created_at, s.is_public, s.description"
_MEMBER = (
    "m.server_id, m.user_id, u.username, u.display_name, m.nickname, m.joined_at,"
    " m.communication_disabled_until"
)


def _server(row: tuple[Any, ...]) -> ServerRow:
    server_id, name, owner_id, created_at, is_public, description = row
    return ServerRow(server_id, name, owner_id, created_at, bool(is_public), description)


def _servers(db: Database, where: str, params: tuple[Any, ...]) -> list[ServerRow]:
    rows = db.execute(f"SELECT {_SERVER} FROM servers s {where}", params).fetchall()
    return [_server(r) for r in rows]


def _member(row: tuple[Any, ...], roles: list[int]) -> MemberRow:
    server_id, user_id, username, display_name, nickname, joined_at, until = row
    return MemberRow(
        server_id, UserBrief(user_id, username, display_name), nickname, joined_at, roles, until
    )


def _unknown_invite() -> NotFound:
    return NotFound("unknown invite", code="unknown_invite")


def _banned() -> Forbidden:
    return Forbidden("you are banned from this server", code="banned")


# -- access ------------------------------------------------------------------------------------


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


# -- servers -----------------------------------------------------------------------------------


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
    Unprocessable("too_many_servers")."""
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
    """Every server of a user with the channels they can see and its roles (for READY), in a
    fixed number of queries however many servers and channels there are."""
    servers = servers_of(db, user_id)
    if not servers:
        return []
    accesses = accesses_of(db, user_id)
    mine = "JOIN members m ON m.server_id = {}.server_id AND m.user_id = ?"
    channels: dict[int, list[ChannelRow]] = {s.id: [] for s in servers}
    for c in channels_where(
        db,
        f"{mine.format('c')} ORDER BY c.server_id, c.position, c.id",
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


# -- discovery ---------------------------------------------------------------------------------


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


def join_public(db: Database, server_id: int, user_id: int, now_ms: int) -> Joined:
    """Join a public server without an invite. Raises NotFound("unknown_server") for a server
    that is not public (or does not exist) and Forbidden("banned")."""
    server = get_server(db, server_id)
    if server is None or not (server.is_public or is_member(db, server_id, user_id)):
        raise unknown_server()
    return _join(db, server_id, user_id, now_ms)


def _join(db: Database, server_id: int, user_id: int, now_ms: int) -> Joined:
    member = get_member(db, server_id, user_id)
    if member is not None:
        return Joined(server_state(db, server_id, user_id), member, created=False)
    if is_banned(db, server_id, user_id):
        raise _banned()
    joined = db.execute("SELECT count(*) FROM members WHERE user_id = ?", (user_id,)).fetchone()
    if joined[0] >= MAX_JOINED:
        raise Unprocessable(
            f"a user may be a member of at most {MAX_JOINED} servers; leave one first",
            code="too_many_servers_joined",
        )
    db.execute(
        "INSERT INTO members (server_id, user_id, joined_at) VALUES (?, ?, ?)",
        (server_id, user_id, now_ms),
    )
    member = get_member(db, server_id, user_id)
    assert member is not None
    return Joined(server_state(db, server_id, user_id), member, created=True)


def channel_for(db: Database, channel_id: int, user_id: int) -> ChannelRow | DmRow | None:
    """The channel if `user_id` may see it: a DM comes with its recipients."""
    if visible_channel(db, channel_id, user_id) is None:
        return None
    channel = get_channel(db, channel_id)
    if channel is None:
        return None
    if channel.type == "dm":
        return _dm(db, channel)
    return channel


# -- members -----------------------------------------------------------------------------------


def _members(db: Database, where: str, params: tuple[Any, ...]) -> list[MemberRow]:
    rows = db.execute(
        f"SELECT {_MEMBER} FROM members m JOIN users u ON u.id = m.user_id {where}", params
    ).fetchall()
    if not rows:
        return []
    roles = held_roles(db, rows[0][0], [r[1] for r in rows])
    return [_member(r, roles.get(r[1], [])) for r in rows]


def list_members(db: Database, server_id: int, after: int, limit: int) -> list[MemberRow]:
    return _members(
        db,
        "WHERE m.server_id = ? AND m.user_id > ? ORDER BY m.user_id LIMIT ?",
        (server_id, after, limit),
    )


def members_page(
    db: Database, server_id: int, user_id: int, after: int, limit: int
) -> list[MemberRow]:
    """Members by user id, after `after`, if `user_id` is one. Raises NotFound("unknown_server")."""
    require_member(db, server_id, user_id)
    return list_members(db, server_id, after, limit)


def get_member(db: Database, server_id: int, user_id: int) -> MemberRow | None:
    found = _members(db, "WHERE m.server_id = ? AND m.user_id = ?", (server_id, user_id))
    return found[0] if found else None


def leave_server(db: Database, server_id: int, user_id: int) -> MemberRow:
    """Raises NotFound("unknown_server") or Unprocessable("owner_cannot_leave")."""
    server = require_member(db, server_id, user_id)
    if server.owner_id == user_id:
        raise Unprocessable(
            "the owner cannot leave; delete the server instead", code="owner_cannot_leave"
        )
    member = get_member(db, server_id, user_id)
    assert member is not None
    db.execute("DELETE FROM members WHERE server_id = ? AND user_id = ?", (server_id, user_id))
    return member


# -- invites -----------------------------------------------------------------------------------


def create_invite(
    db: Database,
    code: str,
    server_id: int,
    inviter_id: int,
    max_uses: int | None,
    expires_at: int | None,
    now_ms: int,
    reason: str | None = None,
    *,
    max_invites: int = MAX_INVITES,
) -> InviteRow:
    """Raises NotFound("unknown_server"), Forbidden("missing_permission"),
    Unprocessable("too_many_invites": the server has `max_invites` usable ones) or
    Conflict("invite_code_taken") (retry another code)."""
    require_server(db, server_id, inviter_id, P.CREATE_INVITE)
    usable = db.execute(
        "SELECT count(*) FROM invites WHERE server_id = ?"
        " AND (expires_at IS NULL OR expires_at > ?) AND (max_uses IS NULL OR uses < max_uses)",
        (server_id, now_ms),
    ).fetchone()[0]
    if usable >= max_invites:
        raise Unprocessable(
            f"a server has at most {max_invites} usable invites; delete some first",
            code="too_many_invites",
        )
    try:
        db.execute(
            "INSERT INTO invites (code, server_id, inviter_id, max_uses, expires_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (code, server_id, inviter_id, max_uses, expires_at, now_ms),
        )
    except sqlite3.IntegrityError:
        raise Conflict("that invite code is taken", code="invite_code_taken") from None
    invite = InviteRow(code, server_id, inviter_id, max_uses, 0, expires_at, now_ms)
    values = {"code": code, "max_uses": max_uses, "expires_at": expires_at}
    audit.record(db, server_id, inviter_id, "invite_create", None, audit.created(values), reason)
    return invite


def prune_invites(db: Database, now_ms: int) -> int:
    """Delete invites that expired or were used up: nobody can use them again."""
    cursor = db.execute(
        "DELETE FROM invites WHERE expires_at <= ? OR (max_uses IS NOT NULL AND uses >= max_uses)",
        (now_ms,),
    )
    return int(cursor.rowcount)


def get_invite(db: Database, code: str) -> InviteRow | None:
    row = db.execute(
        "SELECT code, server_id, inviter_id, max_uses, uses, expires_at, created_at"
        " FROM invites WHERE code = ?",
        (code,),
    ).fetchone()
    return InviteRow(*row) if row is not None else None


def invites_of(db: Database, server_id: int, user_id: int) -> list[InviteRow]:
    """A server's invites, newest first (MANAGE_SERVER)."""
    require_server(db, server_id, user_id, P.MANAGE_SERVER)
    rows = db.execute(
        "SELECT code, server_id, inviter_id, max_uses, uses, expires_at, created_at"
        " FROM invites WHERE server_id = ? ORDER BY created_at DESC, code",
        (server_id,),
    ).fetchall()
    return [InviteRow(*r) for r in rows]


def _usable_invite(db: Database, code: str, now_ms: int) -> InviteRow:
    invite = get_invite(db, code)
    if invite is None:
        raise _unknown_invite()
    if invite.expires_at is not None and invite.expires_at <= now_ms:
        raise Gone("this invite has expired", code="invite_expired")
    if invite.max_uses is not None and invite.uses >= invite.max_uses:
        raise Gone("this invite has been used up", code="invite_exhausted")
    return invite


def invite_preview(db: Database, code: str, now_ms: int) -> InvitePreview:
    """Raises NotFound("unknown_invite") or Gone("invite_expired" | "invite_exhausted")."""
    invite = _usable_invite(db, code, now_ms)
    row = db.execute(
        "SELECT s.name, (SELECT count(*) FROM members m WHERE m.server_id = s.id)"
        " FROM servers s WHERE s.id = ?",
        (invite.server_id,),
    ).fetchone()
    return InvitePreview(invite, row[0], row[1])


def use_invite(db: Database, code: str, user_id: int, now_ms: int) -> Joined:
    """Join the invite's server, spending one use. The check and the increment happen in this
    one write, so two joins on an invite with one use left cannot both pass.

    A user who is already a member gets the server back and spends nothing (even if the invite
    has expired or is used up since). Raises NotFound("unknown_invite"),
    Gone("invite_expired" | "invite_exhausted") or Forbidden("banned").
    """
    invite = get_invite(db, code)
    if invite is None:
        raise _unknown_invite()
    if not is_member(db, invite.server_id, user_id):
        _usable_invite(db, code, now_ms)
        if is_banned(db, invite.server_id, user_id):
            raise _banned()
        db.execute("UPDATE invites SET uses = uses + 1 WHERE code = ?", (code,))
    return _join(db, invite.server_id, user_id, now_ms)


def delete_invite(db: Database, code: str, user_id: int, reason: str | None = None) -> InviteRow:
    """The inviter or a member with MANAGE_SERVER may delete an invite; for non-members it does
    not exist. Raises NotFound("unknown_invite") or Forbidden("missing_permission")."""
    invite = get_invite(db, code)
    if invite is None:
        raise _unknown_invite()
    access = server_access(db, invite.server_id, user_id)
    if access is None:
        raise _unknown_invite()
    if invite.inviter_id != user_id:
        access.require(P.MANAGE_SERVER)
    db.execute("DELETE FROM invites WHERE code = ?", (code,))
    values = {"code": code, "max_uses": invite.max_uses, "uses": invite.uses}
    audit.record(
        db, invite.server_id, user_id, "invite_delete", None, audit.removed(values), reason
    )
    return invite


# -- direct messages ---------------------------------------------------------------------------


def dm_key(a: int, b: int) -> str:
    return f"{min(a, b)}:{max(a, b)}"


def _recipients(db: Database, where: str, params: tuple[Any, ...]) -> dict[int, list[UserBrief]]:
    """Recipients of the DM channels `where` selects (a condition on `r`), by channel."""
    rows = db.execute(
        "SELECT r.channel_id, u.id, u.username, u.display_name FROM dm_recipients r"
        f" JOIN users u ON u.id = r.user_id WHERE {where} ORDER BY r.channel_id, u.id",
        params,
    )
    found: dict[int, list[UserBrief]] = {}
    for channel_id, uid, username, display_name in rows.fetchall():
        found.setdefault(channel_id, []).append(UserBrief(uid, username, display_name))
    return found


def _dm(db: Database, channel: ChannelRow) -> DmRow:
    return DmRow(channel, _recipients(db, "r.channel_id = ?", (channel.id,)).get(channel.id, []))


def open_dm(
    db: Database, channel_id: int, user_id: int, recipient_id: int, now_ms: int
) -> DmOpened:
    """The DM channel between two users, created if they have none yet (then they must share a
    server). An existing DM is returned as it is: both users can already see it.

    Raises BadRequest("cannot_dm_self"), NotFound("unknown_user") or
    Forbidden("no_shared_server").
    """
    if recipient_id == user_id:
        raise BadRequest("you cannot open a DM with yourself", code="cannot_dm_self")
    key = dm_key(user_id, recipient_id)
    existing = db.execute("SELECT id FROM channels WHERE dm_key = ?", (key,)).fetchone()
    if existing is not None:
        channel = get_channel(db, existing[0])
        assert channel is not None
        return DmOpened(_dm(db, channel), created=False)
    if db.execute("SELECT 1 FROM users WHERE id = ?", (recipient_id,)).fetchone() is None:
        raise NotFound("unknown user", code="unknown_user")
    shared = db.execute(
        "SELECT 1 FROM members a JOIN members b ON b.server_id = a.server_id"
        " WHERE a.user_id = ? AND b.user_id = ? LIMIT 1",
        (user_id, recipient_id),
    ).fetchone()
    if shared is None:
        raise Forbidden("you share no server with this user", code="no_shared_server")
    channel = ChannelRow(channel_id, None, "dm", None, None, 0, None, None, now_ms)
    insert_channel(db, channel, dm_key=key)
    for uid in (user_id, recipient_id):
        db.execute(
            "INSERT INTO dm_recipients (channel_id, user_id) VALUES (?, ?)", (channel_id, uid)
        )
    return DmOpened(_dm(db, channel), created=True)


def dms_of(db: Database, user_id: int) -> list[DmRow]:
    """Every DM channel of a user with its recipients, in two queries (for READY)."""
    channels = channels_where(
        db,
        "JOIN dm_recipients r ON r.channel_id = c.id WHERE r.user_id = ? ORDER BY c.id",
        (user_id,),
    )
    recipients = _recipients(
        db, "r.channel_id IN (SELECT channel_id FROM dm_recipients WHERE user_id = ?)", (user_id,)
    )
    return [DmRow(c, recipients.get(c.id, [])) for c in channels]
