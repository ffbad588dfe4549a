"""Queries for servers, their channels, members and invites, and 1:1 DM channels.

Plain sync functions over a sqlite-utils Database, `db` first; the Store runs them in its writer
or reader threads. Write functions take the acting user and check what that user may do inside
the same transaction as the change, so a check can never be overtaken by another write (a server
deleted, an invite used up). They raise the error the client gets; the Store rolls back just that
request's savepoint.

Who may see what: a server and everything in it exist only for its members (everyone else gets a
404, never a 403); a DM channel exists only for its two recipients. Owner-only actions go through
`require_owner`, the one place the role/permission check will replace.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from relay.errors import BadRequest, Conflict, Forbidden, Gone, NotFound, Unprocessable
from relay.storage.audience import visible_channel

if TYPE_CHECKING:
    from sqlite_utils import Database


class ServerRow(msgspec.Struct, frozen=True):
    id: int
    name: str
    owner_id: int
    created_at: int


class ChannelRow(msgspec.Struct, frozen=True):
    id: int
    server_id: int | None  # None for a DM channel
    type: str  # text | voice | category | dm
    name: str | None
    topic: str | None
    position: int
    parent_id: int | None
    last_message_id: int | None
    created_at: int


class UserBrief(msgspec.Struct, frozen=True):
    id: int
    username: str
    display_name: str | None


class MemberRow(msgspec.Struct, frozen=True):
    server_id: int
    user: UserBrief
    nickname: str | None
    joined_at: int


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
    """A server with its channels (SERVER_CREATE, READY, joining)."""

    server: ServerRow
    channels: list[ChannelRow]


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


_CHANNEL = (
    "c.id, c.server_id, c.type, c.name, c.topic, c.position, c.parent_id, c.last_message_id,"
    " c.created_at"
)
_MEMBER = "m.server_id, m.user_id, u.username, u.display_name, m.nickname, m.joined_at"


def _one(db: Database, sql: str, params: tuple[Any, ...], row_type: type[Any]) -> Any:
    rows = list(db.query(sql, params))
    return msgspec.convert(rows[0], row_type) if rows else None


def _all(db: Database, sql: str, params: tuple[Any, ...], row_type: type[Any]) -> list[Any]:
    return msgspec.convert(list(db.query(sql, params)), list[row_type])  # type: ignore[valid-type]


def _member(row: tuple[Any, ...]) -> MemberRow:
    server_id, user_id, username, display_name, nickname, joined_at = row
    return MemberRow(server_id, UserBrief(user_id, username, display_name), nickname, joined_at)


def _unknown_server() -> NotFound:
    return NotFound("unknown server", code="unknown_server")


def _unknown_channel() -> NotFound:
    return NotFound("unknown channel", code="unknown_channel")


def _unknown_invite() -> NotFound:
    return NotFound("unknown invite", code="unknown_invite")


def _field(field: str, reason: str) -> BadRequest:
    return BadRequest(f"{field}: {reason}", code="invalid_field", fields={field: reason})


# -- access ------------------------------------------------------------------------------------


def require_member(db: Database, server_id: int, user_id: int) -> ServerRow:
    """The server if `user_id` is a member; else NotFound (outsiders cannot tell it exists)."""
    server = server_for(db, server_id, user_id)
    if server is None:
        raise _unknown_server()
    return server


def require_owner(db: Database, server_id: int, user_id: int) -> ServerRow:
    """The server if `user_id` may manage it: today only its owner. Roles and permissions will
    replace this check; keep every owner-only rule going through here."""
    server = require_member(db, server_id, user_id)
    if server.owner_id != user_id:
        raise Forbidden("only the server owner may do this", code="not_owner")
    return server


def is_member(db: Database, server_id: int, user_id: int) -> bool:
    row = db.execute(
        "SELECT 1 FROM members WHERE server_id = ? AND user_id = ?", (server_id, user_id)
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
    """A server owned by (and with the single member) `owner_id`, with a `general` text channel
    and a `General` voice channel. Raises Unprocessable("too_many_servers")."""
    owned = db.execute("SELECT count(*) FROM servers WHERE owner_id = ?", (owner_id,)).fetchone()
    if owned[0] >= max_owned:
        raise Unprocessable(f"a user may own at most {max_owned} servers", code="too_many_servers")
    db.execute(
        "INSERT INTO servers (id, name, owner_id, created_at) VALUES (?, ?, ?, ?)",
        (server_id, name, owner_id, now_ms),
    )
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
        _insert_channel(db, c)
    return ServerState(ServerRow(server_id, name, owner_id, now_ms), channels)


def _insert_channel(db: Database, c: ChannelRow, dm_key: str | None = None) -> None:
    db.execute(
        "INSERT INTO channels (id, server_id, type, name, topic, position, parent_id, dm_key,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (c.id, c.server_id, c.type, c.name, c.topic, c.position, c.parent_id, dm_key, c.created_at),
    )


def server_for(db: Database, server_id: int, user_id: int) -> ServerRow | None:
    """The server if `user_id` is a member of it."""
    sql = (
        "SELECT s.* FROM servers s JOIN members m ON m.server_id = s.id"
        " WHERE s.id = ? AND m.user_id = ?"
    )
    row: ServerRow | None = _one(db, sql, (server_id, user_id), ServerRow)
    return row


def servers_of(db: Database, user_id: int) -> list[ServerRow]:
    sql = (
        "SELECT s.* FROM servers s JOIN members m ON m.server_id = s.id"
        " WHERE m.user_id = ? ORDER BY s.id"
    )
    return _all(db, sql, (user_id,), ServerRow)


def update_server(db: Database, server_id: int, user_id: int, name: str | None) -> ServerRow:
    """Raises NotFound("unknown_server") or Forbidden("not_owner")."""
    server = require_owner(db, server_id, user_id)
    if name is None:
        return server
    db.execute("UPDATE servers SET name = ? WHERE id = ?", (name, server_id))
    return msgspec.structs.replace(server, name=name)


def delete_server(db: Database, server_id: int, user_id: int) -> ServerRow:
    """Delete a server and (by cascade) its channels, messages, members and invites."""
    server = require_owner(db, server_id, user_id)
    db.execute("DELETE FROM servers WHERE id = ?", (server_id,))
    return server


def server_state(db: Database, server_id: int) -> ServerState:
    server: ServerRow | None = _one(
        db, "SELECT * FROM servers WHERE id = ?", (server_id,), ServerRow
    )
    if server is None:
        raise _unknown_server()
    return ServerState(server, list_channels(db, server_id))


def ready_state(db: Database, user_id: int) -> list[ServerState]:
    """Every server of a user with its channels, in two queries (for READY)."""
    servers = servers_of(db, user_id)
    sql = (
        f"SELECT {_CHANNEL} FROM channels c JOIN members m ON m.server_id = c.server_id"
        " WHERE m.user_id = ? ORDER BY c.server_id, c.position, c.id"
    )
    by_server: dict[int, list[ChannelRow]] = {s.id: [] for s in servers}
    for c in _all(db, sql, (user_id,), ChannelRow):
        by_server.setdefault(c.server_id, []).append(c)
    return [ServerState(s, by_server[s.id]) for s in servers]


# -- channels ----------------------------------------------------------------------------------


def list_channels(db: Database, server_id: int) -> list[ChannelRow]:
    sql = f"SELECT {_CHANNEL} FROM channels c WHERE c.server_id = ? ORDER BY c.position, c.id"
    return _all(db, sql, (server_id,), ChannelRow)


def channels_for(db: Database, server_id: int, user_id: int) -> list[ChannelRow]:
    """A server's channels if `user_id` is a member. Raises NotFound("unknown_server")."""
    require_member(db, server_id, user_id)
    return list_channels(db, server_id)


def get_channel(db: Database, channel_id: int) -> ChannelRow | None:
    sql = f"SELECT {_CHANNEL} FROM channels c WHERE c.id = ?"
    row: ChannelRow | None = _one(db, sql, (channel_id,), ChannelRow)
    return row


def _check_parent(db: Database, server_id: int, parent_id: int) -> None:
    row = db.execute("SELECT server_id, type FROM channels WHERE id = ?", (parent_id,)).fetchone()
    if row is None or row[0] != server_id or row[1] != "category":
        raise _field("parent_id", "must be a category channel of this server")


def create_channel(
    db: Database,
    channel_id: int,
    server_id: int,
    user_id: int,
    *,
    name: str,
    kind: str,
    topic: str | None,
    parent_id: int | None,
    position: int | None,
    now_ms: int,
    max_channels: int,
) -> ChannelRow:
    """A channel at `position` (default: after the last one). The body rules that need no
    database (a category has no parent, only text has a topic) are the caller's.

    Raises NotFound("unknown_server"), Forbidden("not_owner"), BadRequest(parent_id) or
    Unprocessable("too_many_channels").
    """
    require_owner(db, server_id, user_id)
    count = db.execute("SELECT count(*) FROM channels WHERE server_id = ?", (server_id,))
    if count.fetchone()[0] >= max_channels:
        raise Unprocessable(
            f"a server has at most {max_channels} channels", code="too_many_channels"
        )
    if parent_id is not None:
        _check_parent(db, server_id, parent_id)
    if position is None:
        last = db.execute(
            "SELECT max(position) FROM channels WHERE server_id = ?", (server_id,)
        ).fetchone()[0]
        position = 0 if last is None else last + 1
    channel = ChannelRow(
        channel_id, server_id, kind, name, topic, position, parent_id, None, now_ms
    )
    _insert_channel(db, channel)
    return channel


def _managed_channel(db: Database, channel_id: int, user_id: int) -> ChannelRow:
    """A server channel `user_id` may manage; NotFound if they cannot see it."""
    visible = visible_channel(db, channel_id, user_id)
    if visible is None:
        raise _unknown_channel()
    if visible.server_id is None:
        raise Forbidden("a DM channel cannot be changed or deleted", code="dm_channel")
    require_owner(db, visible.server_id, user_id)
    channel = get_channel(db, channel_id)
    assert channel is not None
    return channel


def update_channel(
    db: Database,
    channel_id: int,
    user_id: int,
    *,
    name: str | UnsetType = UNSET,
    topic: str | UnsetType | None = UNSET,
    position: int | UnsetType = UNSET,
    parent_id: int | UnsetType | None = UNSET,
) -> ChannelRow:
    """Change the given fields (None clears topic or parent_id).

    Raises NotFound("unknown_channel"), Forbidden("not_owner" | "dm_channel") or
    BadRequest(topic | parent_id).
    """
    channel = _managed_channel(db, channel_id, user_id)
    assert channel.server_id is not None
    changes: dict[str, Any] = {}
    if not isinstance(name, UnsetType):
        changes["name"] = name
    if not isinstance(topic, UnsetType):
        if topic is not None and channel.type != "text":
            raise _field("topic", "only text channels have a topic")
        changes["topic"] = topic
    if not isinstance(position, UnsetType):
        changes["position"] = position
    if not isinstance(parent_id, UnsetType):
        if parent_id is not None:
            if channel.type == "category":
                raise _field("parent_id", "a category cannot have a parent")
            _check_parent(db, channel.server_id, parent_id)
        changes["parent_id"] = parent_id
    if not changes:
        return channel
    assignments = ", ".join(f"{column} = ?" for column in changes)
    db.execute(f"UPDATE channels SET {assignments} WHERE id = ?", (*changes.values(), channel_id))
    return msgspec.structs.replace(channel, **changes)


def delete_channel(
    db: Database, channel_id: int, user_id: int
) -> tuple[ChannelRow, list[ChannelRow]]:
    """Delete a server channel (and its messages). Returns it and the channels that lost their
    parent because it was their category (the foreign key sets their parent_id to NULL)."""
    channel = _managed_channel(db, channel_id, user_id)
    children = [
        r[0] for r in db.execute("SELECT id FROM channels WHERE parent_id = ?", (channel_id,))
    ]
    db.execute("DELETE FROM channels WHERE id = ?", (channel_id,))
    orphans = [get_channel(db, child) for child in children]
    return channel, [c for c in orphans if c is not None]


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


def list_members(db: Database, server_id: int, after: int, limit: int) -> list[MemberRow]:
    rows = db.execute(
        f"SELECT {_MEMBER} FROM members m JOIN users u ON u.id = m.user_id"
        " WHERE m.server_id = ? AND m.user_id > ? ORDER BY m.user_id LIMIT ?",
        (server_id, after, limit),
    ).fetchall()
    return [_member(r) for r in rows]


def members_page(
    db: Database, server_id: int, user_id: int, after: int, limit: int
) -> list[MemberRow]:
    """Members by user id, after `after`, if `user_id` is one. Raises NotFound("unknown_server")."""
    require_member(db, server_id, user_id)
    return list_members(db, server_id, after, limit)


def get_member(db: Database, server_id: int, user_id: int) -> MemberRow | None:
    row = db.execute(
        f"SELECT {_MEMBER} FROM members m JOIN users u ON u.id = m.user_id"
        " WHERE m.server_id = ? AND m.user_id = ?",
        (server_id, user_id),
    ).fetchone()
    return _member(row) if row is not None else None


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
) -> InviteRow:
    """Raises NotFound("unknown_server") or Conflict("invite_code_taken") (retry another code)."""
    require_member(db, server_id, inviter_id)
    try:
        db.execute(
            "INSERT INTO invites (code, server_id, inviter_id, max_uses, expires_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (code, server_id, inviter_id, max_uses, expires_at, now_ms),
        )
    except sqlite3.IntegrityError:
        raise Conflict("that invite code is taken", code="invite_code_taken") from None
    return InviteRow(code, server_id, inviter_id, max_uses, 0, expires_at, now_ms)


def get_invite(db: Database, code: str) -> InviteRow | None:
    row: InviteRow | None = _one(db, "SELECT * FROM invites WHERE code = ?", (code,), InviteRow)
    return row


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
    has expired or is used up since). Raises NotFound("unknown_invite") or
    Gone("invite_expired" | "invite_exhausted").
    """
    invite = get_invite(db, code)
    if invite is None:
        raise _unknown_invite()
    member = get_member(db, invite.server_id, user_id)
    if member is not None:
        return Joined(server_state(db, invite.server_id), member, created=False)
    _usable_invite(db, code, now_ms)
    db.execute("UPDATE invites SET uses = uses + 1 WHERE code = ?", (code,))
    db.execute(
        "INSERT INTO members (server_id, user_id, joined_at) VALUES (?, ?, ?)",
        (invite.server_id, user_id, now_ms),
    )
    member = get_member(db, invite.server_id, user_id)
    assert member is not None
    return Joined(server_state(db, invite.server_id), member, created=True)


def delete_invite(db: Database, code: str, user_id: int) -> InviteRow:
    """The inviter or whoever manages the server may delete an invite; for non-members it does
    not exist. Raises NotFound("unknown_invite") or Forbidden("not_owner")."""
    invite = get_invite(db, code)
    if invite is None or not is_member(db, invite.server_id, user_id):
        raise _unknown_invite()
    if invite.inviter_id != user_id:
        require_owner(db, invite.server_id, user_id)
    db.execute("DELETE FROM invites WHERE code = ?", (code,))
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
    _insert_channel(db, channel, dm_key=key)
    for uid in (user_id, recipient_id):
        db.execute(
            "INSERT INTO dm_recipients (channel_id, user_id) VALUES (?, ?)", (channel_id, uid)
        )
    return DmOpened(_dm(db, channel), created=True)


def dms_of(db: Database, user_id: int) -> list[DmRow]:
    """Every DM channel of a user with its recipients, in two queries (for READY)."""
    sql = (
        f"SELECT {_CHANNEL} FROM channels c JOIN dm_recipients r ON r.channel_id = c.id"
        " WHERE r.user_id = ? ORDER BY c.id"
    )
    channels: list[ChannelRow] = _all(db, sql, (user_id,), ChannelRow)
    recipients = _recipients(
        db, "r.channel_id IN (SELECT channel_id FROM dm_recipients WHERE user_id = ?)", (user_id,)
    )
    return [DmRow(c, recipients.get(c.id, [])) for c in channels]
