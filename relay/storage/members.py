"""Queries for a server's members: joining (a public server directly; invites are
relay.storage.invites), listing, looking one up and leaving. Kicks, bans, nicknames and timeouts
are relay.storage.moderation.

Like every storage module, plain sync functions, `db` first, that check what the acting user may
do in the same transaction as the change (see relay.storage.servers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from relay.errors import Forbidden, Unprocessable
from relay.storage.access import unknown_server
from relay.storage.roles import held_roles
from relay.storage.servers import (
    ServerState,
    get_server,
    is_banned,
    is_member,
    require_member,
    server_state,
)

if TYPE_CHECKING:
    from sqlite_utils import Database


class UserBrief(msgspec.Struct, frozen=True):
    id: int
    username: str
    display_name: str | None
    bot: bool = False
    avatar: str | None = None  # the avatar's digest (users.avatar), for member lists


class MemberRow(msgspec.Struct, frozen=True):
    server_id: int
    user: UserBrief
    nickname: str | None
    joined_at: int
    roles: list[int] = msgspec.field(default_factory=list)  # without @everyone, ascending
    communication_disabled_until: int | None = None  # a timeout (may have ended already)
    managed_role: int | None = None  # a bot's: its managed role, which goes when it leaves


class Joined(msgspec.Struct, frozen=True):
    state: ServerState
    member: MemberRow
    created: bool  # False: the user was already a member and no use was spent


_MEMBER = (
    "m.server_id, m.user_id, u.username, u.display_name, m.nickname, m.joined_at,"
    " m.communication_disabled_until, u.bot, CASE WHEN u.bot THEN (SELECT r.id FROM roles r"
    "  WHERE r.server_id = m.server_id AND r.managed_by = m.user_id) END, u.avatar"
)


def _member(row: tuple[Any, ...], roles: list[int]) -> MemberRow:
    server_id, user_id, username, display_name, nickname, joined_at, until, bot, managed, av = row
    user = UserBrief(user_id, username, display_name, bool(bot), av)
    return MemberRow(server_id, user, nickname, joined_at, roles, until, managed)


def banned() -> Forbidden:
    return Forbidden("you are banned from this server", code="banned")


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


def join_public(
    db: Database, server_id: int, user_id: int, now_ms: int, *, max_joined: int = 200
) -> Joined:
    """Join a public server without an invite. Raises NotFound("unknown_server") for a server
    that is not public (or does not exist), and what `join` raises."""
    server = get_server(db, server_id)
    if server is None or not (server.is_public or is_member(db, server_id, user_id)):
        raise unknown_server()
    return join(db, server_id, user_id, now_ms, max_joined=max_joined)


def join(
    db: Database, server_id: int, user_id: int, now_ms: int, *, max_joined: int = 200
) -> Joined:
    """Make `user_id` a member once the caller has let them in (a public server, a usable
    invite); a member already gets the server back. Raises Forbidden("banned") or
    Unprocessable("too_many_servers_joined": the user is a member of `max_joined` servers,
    the setting max_servers_joined)."""
    member = get_member(db, server_id, user_id)
    if member is not None:
        return Joined(server_state(db, server_id, user_id), member, created=False)
    if is_banned(db, server_id, user_id):
        raise banned()
    joined = db.execute("SELECT count(*) FROM members WHERE user_id = ?", (user_id,)).fetchone()
    if joined[0] >= max_joined:
        raise Unprocessable(
            f"a user may be a member of at most {max_joined} servers; leave one first",
            code="too_many_servers_joined",
        )
    db.execute(
        "INSERT INTO members (server_id, user_id, joined_at) VALUES (?, ?, ?)",
        (server_id, user_id, now_ms),
    )
    member = get_member(db, server_id, user_id)
    assert member is not None
    return Joined(server_state(db, server_id, user_id), member, created=True)
