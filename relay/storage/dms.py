"""Queries for 1:1 DM channels (a channel of type "dm" with no server, keyed by its two users)
and their recipients, and channel_for, which looks up any channel a user may see and gives a DM
with its recipients.

Like every storage module, plain sync functions, `db` first, that check what the acting user may
do in the same transaction as the change (see relay.storage.servers): a DM channel exists only
for its two recipients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from relay.errors import BadRequest, Forbidden, NotFound
from relay.storage.audience import visible_channel
from relay.storage.channels import ChannelRow, channels_where, get_channel, insert_channel
from relay.storage.members import UserBrief

if TYPE_CHECKING:
    from sqlite_utils import Database


class DmRow(msgspec.Struct, frozen=True):
    channel: ChannelRow
    recipients: list[UserBrief]  # both users (a group DM's: all of them), by id
    owner_id: int | None = None  # a group DM's owner (relay.storage.group_dms)
    icon: str | None = None  # a group DM's icon: its blob digest (relay.chat.images)


class DmOpened(msgspec.Struct, frozen=True):
    dm: DmRow
    created: bool


def dm_key(a: int, b: int) -> str:
    return f"{min(a, b)}:{max(a, b)}"


def _recipients(db: Database, where: str, params: tuple[Any, ...]) -> dict[int, list[UserBrief]]:
    """Recipients of the DM channels `where` selects (a condition on `r`), by channel."""
    rows = db.execute(
        "SELECT r.channel_id, u.id, u.username, u.display_name, u.bot, u.avatar"
        " FROM dm_recipients r JOIN users u ON u.id = r.user_id"
        f" WHERE {where} ORDER BY r.channel_id, u.id",
        params,
    )
    found: dict[int, list[UserBrief]] = {}
    for channel_id, uid, username, display_name, bot, avatar in rows.fetchall():
        user = UserBrief(uid, username, display_name, bool(bot), avatar)
        found.setdefault(channel_id, []).append(user)
    return found


def _dm(db: Database, channel: ChannelRow) -> DmRow:
    recipients = _recipients(db, "r.channel_id = ?", (channel.id,)).get(channel.id, [])
    row = db.execute("SELECT owner_id, icon FROM channels WHERE id = ?", (channel.id,)).fetchone()
    owner, icon = row if row is not None else (None, None)
    return DmRow(channel, recipients, owner, icon)


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
    """Every DM channel (group DMs too) of a user with its recipients, in three queries (for
    READY)."""
    channels = channels_where(
        db,
        "JOIN dm_recipients r ON r.channel_id = c.id WHERE r.user_id = ? ORDER BY c.id",
        (user_id,),
    )
    recipients = _recipients(
        db, "r.channel_id IN (SELECT channel_id FROM dm_recipients WHERE user_id = ?)", (user_id,)
    )
    groups = {
        row[0]: (row[1], row[2])
        for row in db.execute(
            "SELECT c.id, c.owner_id, c.icon FROM dm_recipients r"
            " JOIN channels c ON c.id = r.channel_id WHERE r.user_id = ? AND c.type = 'group_dm'",
            (user_id,),
        )
    }
    return [DmRow(c, recipients.get(c.id, []), *groups.get(c.id, (None, None))) for c in channels]


def channel_for(db: Database, channel_id: int, user_id: int) -> ChannelRow | DmRow | None:
    """The channel if `user_id` may see it: a DM comes with its recipients."""
    if visible_channel(db, channel_id, user_id) is None:
        return None
    channel = get_channel(db, channel_id)
    if channel is None:
        return None
    if channel.type in ("dm", "group_dm"):
        return _dm(db, channel)
    return channel
