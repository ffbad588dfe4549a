"""Who may hear a channel, and which servers a user is in: the queries the gateway routes by."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from sqlite_utils import Database


class ChannelAudience(msgspec.Struct, frozen=True):
    channel_id: int
    server_id: int | None  # None for a DM channel
    recipients: list[int]  # a DM's two users; empty for server channels


def channel_audience(db: Database, channel_id: int) -> ChannelAudience | None:
    row = db.execute("SELECT server_id, type FROM channels WHERE id = ?", (channel_id,)).fetchone()
    if row is None:
        return None
    recipients: list[int] = []
    if row[1] == "dm":
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
    type: str  # text | voice | category | dm
    owner_id: int | None  # the server's owner; None for DMs


def visible_channel(db: Database, channel_id: int, user_id: int) -> VisibleChannel | None:
    """The channel if `user_id` may see it (a member of its server, or a DM recipient), else
    None: callers answer 404 either way, so outsiders cannot tell "hidden" from "missing"."""
    row = db.execute(
        "SELECT c.id, c.server_id, c.type, s.owner_id FROM channels c"
        " LEFT JOIN servers s ON s.id = c.server_id"
        " WHERE c.id = ? AND ("
        "  EXISTS (SELECT 1 FROM members m WHERE m.server_id = c.server_id AND m.user_id = ?)"
        "  OR EXISTS (SELECT 1 FROM dm_recipients r WHERE r.channel_id = c.id AND r.user_id = ?))",
        (channel_id, user_id, user_id),
    ).fetchone()
    return VisibleChannel(*row) if row is not None else None
