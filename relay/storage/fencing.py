"""Fencing tokens: a channel's writes in cluster mode carry the token of the lease under which
they were made, and the write's own transaction refuses a token older than the newest one
stored for that channel (relay.cluster.owners, docs/ownership.md).

A lease in Redis says who *should* own a channel; only this check makes it safe: a process that
lost its lease (paused, partitioned) and wakes up with writes in hand can never commit them once
a newer owner has written. The single process (no broker) never calls these and pays nothing.

The statements are plain SQL that PostgreSQL accepts as well (INSERT ... ON CONFLICT ... DO
UPDATE ... WHERE): there, the conflicting row's lock orders two owners' transactions, and the
WHERE is evaluated again against the committed row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.storage import messages

if TYPE_CHECKING:
    from sqlite_utils import Database

    from relay.storage.messages import NewMessage, Posted


class StaleOwner(Exception):
    """A write carried a fencing token older than the channel's newest: its process is no
    longer the channel's owner, and nothing of the write was committed."""

    def __init__(self, channel_id: int, fence: int) -> None:
        super().__init__(f"channel {channel_id}: fencing token {fence} is stale")
        self.channel_id = channel_id
        self.fence = fence


def check(db: Database, channel_id: int, fence: int) -> None:
    """Record `fence` as the channel's newest token, or raise StaleOwner if a newer one is
    stored. Runs inside the caller's transaction, before the write it guards."""
    cursor = db.execute(
        "INSERT INTO channel_fences (channel_id, fence) VALUES (?, ?) "
        "ON CONFLICT (channel_id) DO UPDATE SET fence = excluded.fence "
        "WHERE channel_fences.fence <= excluded.fence",
        [channel_id, fence],
    )
    if cursor.rowcount == 0:
        raise StaleOwner(channel_id, fence)


def claim(db: Database, channel_id: int, fence: int) -> int:
    """A new owner's first write: record its token (StaleOwner if a newer one exists) and
    return the channel's last message id (0 if none), read after the fence is in place, so no
    earlier owner can add a message after it: the new owner's ids start above it."""
    check(db, channel_id, fence)
    row = db.execute("SELECT max(id) FROM messages WHERE channel_id = ?", [channel_id]).fetchone()
    return int(row[0] or 0)


def post(db: Database, message_id: int, new: NewMessage, *, fence: int) -> Posted:
    """`messages.post` under a fencing token (the cluster channel owner's write)."""
    check(db, new.channel_id, fence)
    return messages.post(db, message_id, new)


def newest(db: Database, channel_id: int) -> int | None:
    """The channel's newest stored token, if any (for tests and diagnostics)."""
    row = db.execute(
        "SELECT fence FROM channel_fences WHERE channel_id = ?", [channel_id]
    ).fetchone()
    return None if row is None else int(row[0])
