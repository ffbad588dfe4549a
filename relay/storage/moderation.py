"""Queries for moderating members: nicknames and timeouts, kicks, bans and unbans.

Every action here needs its permission (MANAGE_NICKNAMES / CHANGE_NICKNAME, MODERATE_MEMBERS,
KICK_MEMBERS, BAN_MEMBERS), follows the hierarchy (only members strictly below the actor's
highest role; never the owner) and is written to the audit log in the same transaction.
A ban removes the member, can delete their recent messages, and keeps them out: every way in
(invites, public servers) checks the ban list (relay.storage.members.join).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec import UNSET, UnsetType

from relay.errors import BadRequest, NotFound, Unprocessable
from relay.permissions import P
from relay.storage import audit
from relay.storage.access import Access, require_server, server_access
from relay.storage.members import MemberRow, UserBrief, get_member
from relay.storage.messages import delete_many, first_id_at
from relay.storage.roles import unknown_member

if TYPE_CHECKING:
    from sqlite_utils import Database

MAX_TIMEOUT_MS = 28 * 24 * 3600 * 1000


class BanRow(msgspec.Struct, frozen=True):
    user: UserBrief
    reason: str | None
    banned_by: int
    created_at: int


class Banned(msgspec.Struct, frozen=True):
    ban: BanRow
    member: MemberRow | None  # None: the user was not a member
    deleted: dict[int, list[int]]  # channel id -> ids of the messages deleted with the ban


def _target(db: Database, server_id: int, target_id: int) -> Access:
    target = server_access(db, server_id, target_id)
    if target is None:
        raise unknown_member()
    return target


def update_member(
    db: Database,
    server_id: int,
    target_id: int,
    user_id: int,
    *,
    nickname: str | UnsetType | None = UNSET,
    communication_disabled_until: int | UnsetType | None = UNSET,
    now_ms: int,
    reason: str | None = None,
) -> MemberRow:
    """Change a member's nickname (one's own: CHANGE_NICKNAME; another's: MANAGE_NICKNAMES)
    or timeout (MODERATE_MEMBERS; None ends it). Returns the member.

    Raises NotFound("unknown_server" | "unknown_member"), Forbidden("missing_permission" |
    "role_hierarchy"), BadRequest(communication_disabled_until) or
    Unprocessable("cannot_time_out").
    """
    actor = require_server(db, server_id, user_id)
    target = _target(db, server_id, target_id)
    before = get_member(db, server_id, target_id)
    assert before is not None
    changes: dict[str, object] = {}
    if not isinstance(nickname, UnsetType):
        if target_id == user_id:
            actor.require(P.CHANGE_NICKNAME)
        else:
            actor.require(P.MANAGE_NICKNAMES)
            actor.require_above(target)
        changes["nickname"] = nickname
    if not isinstance(communication_disabled_until, UnsetType):
        actor.require(P.MODERATE_MEMBERS)
        actor.require_above(target)
        until = communication_disabled_until
        if until is not None:
            if not now_ms < until <= now_ms + MAX_TIMEOUT_MS:
                reason_text = "must be in the future, at most 28 days ahead"
                raise BadRequest(
                    f"communication_disabled_until: {reason_text}",
                    code="invalid_field",
                    fields={"communication_disabled_until": reason_text},
                )
            if target.is_owner or target.permissions() & P.ADMINISTRATOR:
                raise Unprocessable(
                    "owners and administrators cannot be timed out", code="cannot_time_out"
                )
        changes["communication_disabled_until"] = until
    if not changes:
        return before
    assignments = ", ".join(f"{column} = ?" for column in changes)
    db.execute(
        f"UPDATE members SET {assignments} WHERE server_id = ? AND user_id = ?",
        (*changes.values(), server_id, target_id),
    )
    after = get_member(db, server_id, target_id)
    assert after is not None
    keys = ("nickname", "communication_disabled_until")
    changed = audit.diff(
        {k: getattr(before, k) for k in keys}, {k: getattr(after, k) for k in keys}
    )
    if changed:
        audit.record(db, server_id, user_id, "member_update", target_id, changed, reason)
    return after


def kick(
    db: Database, server_id: int, target_id: int, user_id: int, reason: str | None = None
) -> MemberRow:
    """Remove a member (KICK_MEMBERS); they may come back with an invite.

    Raises NotFound("unknown_server" | "unknown_member"), Forbidden("missing_permission" |
    "role_hierarchy") or Unprocessable("cannot_kick_self")."""
    actor = require_server(db, server_id, user_id, P.KICK_MEMBERS)
    target = _target(db, server_id, target_id)
    if target_id == user_id:
        raise Unprocessable("you cannot kick yourself; leave instead", code="cannot_kick_self")
    actor.require_above(target)
    member = get_member(db, server_id, target_id)
    assert member is not None
    db.execute("DELETE FROM members WHERE server_id = ? AND user_id = ?", (server_id, target_id))
    audit.record(db, server_id, user_id, "member_kick", target_id, [], reason)
    return member


def ban(
    db: Database,
    server_id: int,
    target_id: int,
    user_id: int,
    *,
    delete_message_s: int,
    now_ms: int,
    reason: str | None = None,
) -> Banned:
    """Ban a user (BAN_MEMBERS): a member is removed, and their messages of the last
    `delete_message_s` seconds in the server's channels are deleted. Banning someone who is
    not a member keeps them from ever joining. Banning again updates the reason.

    Raises NotFound("unknown_server" | "unknown_user"), Forbidden("missing_permission" |
    "role_hierarchy") or Unprocessable("cannot_ban_self").
    """
    actor = require_server(db, server_id, user_id, P.BAN_MEMBERS)
    if target_id == user_id:
        raise Unprocessable("you cannot ban yourself", code="cannot_ban_self")
    user = _user(db, target_id)
    target = server_access(db, server_id, target_id)
    if target is not None:
        actor.require_above(target)
    member = get_member(db, server_id, target_id)
    db.execute(
        "INSERT INTO bans (server_id, user_id, reason, banned_by, created_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (server_id, user_id)"
        " DO UPDATE SET reason = excluded.reason, banned_by = excluded.banned_by",
        (server_id, target_id, reason, user_id, now_ms),
    )
    db.execute("DELETE FROM members WHERE server_id = ? AND user_id = ?", (server_id, target_id))
    deleted: dict[int, list[int]] = {}
    if delete_message_s:
        since = first_id_at(now_ms - delete_message_s * 1000)
        rows = db.execute(
            "SELECT m.channel_id, m.id FROM messages m JOIN channels c ON c.id = m.channel_id"
            " WHERE m.author_id = ? AND c.server_id = ? AND m.id >= ?",
            (target_id, server_id, since),
        ).fetchall()
        by_channel: dict[int, list[int]] = {}
        for channel_id, message_id in rows:
            by_channel.setdefault(channel_id, []).append(message_id)
        for channel_id, ids in by_channel.items():
            deleted[channel_id] = delete_many(db, channel_id, ids)
    changes = [
        audit.Change("delete_message_seconds", None, delete_message_s),
        audit.Change("messages_deleted", None, sum(len(ids) for ids in deleted.values())),
    ]
    audit.record(db, server_id, user_id, "member_ban_add", target_id, changes, reason)
    return Banned(BanRow(user, reason, user_id, now_ms), member, deleted)


def _user(db: Database, user_id: int) -> UserBrief:
    row = db.execute(
        "SELECT id, username, display_name, bot FROM users WHERE id = ?", (user_id,)
    ).fetchone()
    if row is None:
        raise NotFound("unknown user", code="unknown_user")
    return UserBrief(row[0], row[1], row[2], bool(row[3]))


def unban(
    db: Database, server_id: int, target_id: int, user_id: int, reason: str | None = None
) -> None:
    """Lift a ban (BAN_MEMBERS). Raises NotFound("unknown_server" | "unknown_ban")."""
    require_server(db, server_id, user_id, P.BAN_MEMBERS)
    cursor = db.execute(
        "DELETE FROM bans WHERE server_id = ? AND user_id = ?", (server_id, target_id)
    )
    if cursor.rowcount != 1:
        raise NotFound("unknown ban", code="unknown_ban")
    audit.record(db, server_id, user_id, "member_ban_remove", target_id, [], reason)


_BAN = (
    "SELECT u.id, u.username, u.display_name, b.reason, b.banned_by, b.created_at, u.bot"
    " FROM bans b"
    " JOIN users u ON u.id = b.user_id"
)


def _ban(row: tuple[int, str, str | None, str | None, int, int, int]) -> BanRow:
    uid, username, display_name, why, by, at, bot = row
    return BanRow(UserBrief(uid, username, display_name, bool(bot)), why, by, at)


def bans_of(db: Database, server_id: int, user_id: int, after: int, limit: int) -> list[BanRow]:
    """A server's bans by user id, after `after` (BAN_MEMBERS)."""
    require_server(db, server_id, user_id, P.BAN_MEMBERS)
    rows = db.execute(
        f"{_BAN} WHERE b.server_id = ? AND b.user_id > ? ORDER BY b.user_id LIMIT ?",
        (server_id, after, limit),
    ).fetchall()
    return [_ban(r) for r in rows]


def get_ban(db: Database, server_id: int, target_id: int, user_id: int) -> BanRow:
    """One ban (BAN_MEMBERS). Raises NotFound("unknown_server" | "unknown_ban")."""
    require_server(db, server_id, user_id, P.BAN_MEMBERS)
    row = db.execute(
        f"{_BAN} WHERE b.server_id = ? AND b.user_id = ?", (server_id, target_id)
    ).fetchone()
    if row is None:
        raise NotFound("unknown ban", code="unknown_ban")
    return _ban(row)
