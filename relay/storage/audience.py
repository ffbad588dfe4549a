"""Who may hear a channel, and which servers a user is in: the queries the gateway routes by
(channel audiences, the permission snapshots of relay.chat.views), and `visible_channel`,
the 404 gate of every channel route."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from relay import permissions as perms
from relay.errors import Forbidden
from relay.storage.access import Access, missing_permission, server_access, server_perms
from relay.storage.sqlite.writecache import cached

if TYPE_CHECKING:
    from sqlite_utils import Database


class ChannelAudience(msgspec.Struct, frozen=True):
    channel_id: int
    server_id: int | None  # None for a DM channel
    recipients: list[int]  # a DM's users (group DMs: as when loaded); empty for server channels


def channel_audience(db: Database, channel_id: int) -> ChannelAudience | None:
    row = db.execute("SELECT server_id, type FROM channels WHERE id = ?", (channel_id,)).fetchone()
    if row is None:
        return None
    recipients: list[int] = []
    if row[1] in ("dm", "group_dm"):
        recipients = [
            r[0]
            for r in db.execute(
                "SELECT user_id FROM dm_recipients WHERE channel_id = ? ORDER BY user_id",
                (channel_id,),
            )
        ]
    return ChannelAudience(channel_id, row[0], recipients)


def server_ids_of(db: Database, user_id: int) -> list[int]:
    rows = db.execute("SELECT server_id FROM members WHERE user_id = ?", (user_id,)).fetchall()
    return [r[0] for r in rows]


def member_ids_of(db: Database, server_id: int) -> list[int]:
    rows = db.execute("SELECT user_id FROM members WHERE server_id = ?", (server_id,)).fetchall()
    return [r[0] for r in rows]


class VisibleChannel(msgspec.Struct, frozen=True):
    id: int
    server_id: int | None
    type: str  # text | voice | category | dm | thread | group_dm
    owner_id: int | None  # the server's owner; None for DMs
    permissions: int  # the viewer's, in this channel (relay.permissions.DM in a DM)
    rate_limit_per_user: int  # slowmode, seconds between one member's messages; 0: off
    access: Access | None  # the viewer's standing in the server; None in a DM
    parent_id: int | None = None  # a thread's text channel (its permissions are that one's)

    def require(self, need: int) -> int:
        """The viewer's permissions here if they include `need`; else Forbidden naming it."""
        lacking = perms.missing(self.permissions, need)
        if not lacking:
            return self.permissions
        if self.type == "thread" and lacking == perms.P.SEND_MESSAGES:
            raise thread_send_refused(self)
        if self.access is not None:
            self.access.require(need, self.id)  # raises, telling a timeout from a missing bit
        raise missing_permission(lacking)


def visible_channel(
    db: Database, channel_id: int, user_id: int, now: int | None = None
) -> VisibleChannel | None:
    """The channel if `user_id` may see it (VIEW_CHANNEL in a server channel, or a DM
    recipient), else None: callers answer 404 either way, so outsiders cannot tell "hidden"
    from "missing"."""
    row = cached(db, ("channel", channel_id), lambda: _channel_row(db, channel_id))
    if row is None:
        return None
    cid, server_id, kind, owner_id, slowmode, parent_id, locked = row
    if server_id is None:
        if not cached(db, ("dm", cid, user_id), lambda: _dm_recipient(db, cid, user_id)):
            return None
        return VisibleChannel(cid, None, kind, None, perms.DM, 0, None)
    access = server_access(db, server_id, user_id, [cid], now)
    if access is None:
        return None
    permissions = access.permissions(cid)
    if not permissions & perms.VIEW:
        return None
    if kind != "thread":
        return VisibleChannel(cid, server_id, kind, owner_id, permissions, slowmode, access)
    # In a thread SEND_MESSAGES_IN_THREADS stands for SEND_MESSAGES (so every message path
    # checks the right bit), and a locked thread takes messages only from MANAGE_THREADS.
    can_send = bool(permissions & perms.P.SEND_MESSAGES_IN_THREADS) and (
        not locked or bool(permissions & perms.P.MANAGE_THREADS)
    )
    permissions = (permissions & ~perms.P.SEND_MESSAGES) | (perms.P.SEND_MESSAGES * can_send)
    return VisibleChannel(
        cid, server_id, kind, owner_id, int(permissions), slowmode, access, parent_id
    )


def thread_send_refused(channel: VisibleChannel) -> Forbidden:
    """Why the viewer may not post in a thread: it is locked, or SEND_MESSAGES_IN_THREADS."""
    raw = channel.access.permissions(channel.id) if channel.access is not None else 0
    if raw & perms.P.SEND_MESSAGES_IN_THREADS:
        return Forbidden("this thread is locked", code="thread_locked")
    if channel.access is not None:
        channel.access.require(perms.P.SEND_MESSAGES_IN_THREADS, channel.id)
    return missing_permission(perms.P.SEND_MESSAGES_IN_THREADS)


def _channel_row(
    db: Database, channel_id: int
) -> tuple[int, int | None, str, int | None, int, int | None, bool] | None:
    row = db.execute(
        "SELECT c.id, c.server_id, c.type, s.owner_id, c.rate_limit_per_user, c.parent_id,"
        " c.locked FROM channels c LEFT JOIN servers s ON s.id = c.server_id WHERE c.id = ?",
        (channel_id,),
    ).fetchone()
    return None if row is None else (*row[:6], bool(row[6]))


def _dm_recipient(db: Database, channel_id: int, user_id: int) -> bool:
    sql = "SELECT 1 FROM dm_recipients WHERE channel_id = ? AND user_id = ?"
    return db.execute(sql, (channel_id, user_id)).fetchone() is not None


class ServerSnapshot(msgspec.Struct, frozen=True):
    """Everything channel visibility in a server depends on, for the gateway's permission cache:
    roles, every channel's overwrites, and the roles of every member who has any."""

    server: perms.ServerPerms
    member_roles: dict[int, frozenset[int]]


def server_snapshot(db: Database, server_id: int) -> ServerSnapshot | None:
    server = server_perms(db, server_id, None)
    if server is None:
        return None
    held: dict[int, set[int]] = {}
    for user_id, role_id in db.execute(
        "SELECT user_id, role_id FROM member_roles WHERE server_id = ?", (server_id,)
    ):
        held.setdefault(user_id, set()).add(role_id)
    return ServerSnapshot(server, {u: frozenset(r) for u, r in held.items()})
