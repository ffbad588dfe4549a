"""Queries for group DMs: channels of type "group_dm" with no server, 3 to `max_recipients`
people (relay.storage.dms' `dm_recipients` holds them, so every DM path reads them alike), a
name and an owner.

Any recipient may rename it or leave; the owner adds and removes recipients, and only people
who share a server with the one adding them can be added. When the owner leaves, the
remaining recipient with the lowest id becomes the owner; when the last one leaves, the
channel and its messages are deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from relay.errors import BadRequest, Forbidden, NotFound, Unprocessable
from relay.storage.channels import ChannelRow, insert_channel
from relay.storage.dms import DmRow, channel_for

if TYPE_CHECKING:
    from sqlite_utils import Database

MIN_OTHERS = 2  # with fewer it would be a 1:1 DM


class Left(msgspec.Struct, frozen=True):
    """A recipient left or was removed: the group DM after (None: nobody is left, it is gone),
    and whether its owner changed."""

    dm: DmRow | None
    new_owner: bool


def _field(field: str, reason: str) -> BadRequest:
    return BadRequest(f"{field}: {reason}", code="invalid_field", fields={field: reason})


def _shares_server(db: Database, a: int, b: int) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM members x JOIN members y ON y.server_id = x.server_id"
            " WHERE x.user_id = ? AND y.user_id = ? LIMIT 1",
            (a, b),
        ).fetchone()
        is not None
    )


def _check_addable(db: Database, adder: int, user_id: int) -> None:
    if db.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
        raise NotFound("unknown user", code="unknown_user")
    if not _shares_server(db, adder, user_id):
        raise Forbidden("you share no server with this user", code="no_shared_server")


def _recipient_ids(db: Database, channel_id: int) -> list[int]:
    rows = db.execute(
        "SELECT user_id FROM dm_recipients WHERE channel_id = ? ORDER BY user_id", (channel_id,)
    )
    return [r[0] for r in rows]


def create_group_dm(
    db: Database,
    channel_id: int,
    owner_id: int,
    recipient_ids: list[int],
    name: str | None,
    now_ms: int,
    max_recipients: int,
) -> DmRow:
    """A group DM of the owner and 2 to `max_recipients - 1` others, each of whom shares a
    server with the owner.

    Raises BadRequest("invalid_field": too few, too many, repeated; "cannot_dm_self"),
    NotFound("unknown_user"), Forbidden("no_shared_server")."""
    if owner_id in recipient_ids:
        raise BadRequest("you are in the group DM already: list the others", code="cannot_dm_self")
    if len(set(recipient_ids)) != len(recipient_ids):
        raise _field("recipients", "must not repeat a user")
    if not MIN_OTHERS <= len(recipient_ids) <= max_recipients - 1:
        raise _field("recipients", f"must be {MIN_OTHERS} to {max_recipients - 1} other users")
    for user_id in recipient_ids:
        _check_addable(db, owner_id, user_id)
    insert_channel(db, ChannelRow(channel_id, None, "group_dm", name, None, 0, None, None, now_ms))
    db.execute("UPDATE channels SET owner_id = ? WHERE id = ?", (owner_id, channel_id))
    for user_id in (owner_id, *recipient_ids):
        db.execute(
            "INSERT INTO dm_recipients (channel_id, user_id) VALUES (?, ?)", (channel_id, user_id)
        )
    return _group(db, channel_id, owner_id)


def _group(db: Database, channel_id: int, user_id: int) -> DmRow:
    """The group DM if `user_id` is one of its recipients (else 404 unknown_channel; a 1:1 DM
    or a server channel: 400 not_a_group_dm)."""
    found = channel_for(db, channel_id, user_id)
    if found is None:
        raise NotFound("unknown channel", code="unknown_channel")
    if not isinstance(found, DmRow) or found.channel.type != "group_dm":
        raise BadRequest("this is not a group DM", code="not_a_group_dm")
    return found


def group(db: Database, channel_id: int, user_id: int) -> DmRow:
    """`_group` for readers (e.g. a check before an icon is processed)."""
    return _group(db, channel_id, user_id)


def _owned(db: Database, channel_id: int, user_id: int) -> DmRow:
    dm = _group(db, channel_id, user_id)
    if dm.owner_id != user_id:
        raise Forbidden("only the group DM's owner may do this", code="not_group_owner")
    return dm


def rename(db: Database, channel_id: int, user_id: int, name: str | None) -> tuple[DmRow, DmRow]:
    """Rename a group DM (any recipient; None clears the name). Returns it before and after."""
    old = _group(db, channel_id, user_id)
    db.execute("UPDATE channels SET name = ? WHERE id = ?", (name, channel_id))
    return old, _group(db, channel_id, user_id)


def set_icon(
    db: Database, channel_id: int, user_id: int, digest: str | None
) -> tuple[DmRow, str | None]:
    """Set (None: remove) a group DM's icon (any recipient). Returns it after, and the icon's
    digest before."""
    old = _group(db, channel_id, user_id)
    db.execute("UPDATE channels SET icon = ? WHERE id = ?", (digest, channel_id))
    return _group(db, channel_id, user_id), old.icon


def add_recipient(
    db: Database, channel_id: int, owner_id: int, user_id: int, max_recipients: int
) -> DmRow | None:
    """The owner adds someone who shares a server with them. Returns the group DM after, None
    if they were a recipient already.

    Raises NotFound("unknown_channel" | "unknown_user"), BadRequest("not_a_group_dm"),
    Forbidden("not_group_owner" | "no_shared_server"), Unprocessable("too_many_recipients")."""
    dm = _owned(db, channel_id, owner_id)
    if any(u.id == user_id for u in dm.recipients):
        return None
    _check_addable(db, owner_id, user_id)
    if len(dm.recipients) >= max_recipients:
        raise Unprocessable(
            f"a group DM has at most {max_recipients} people", code="too_many_recipients"
        )
    db.execute(
        "INSERT INTO dm_recipients (channel_id, user_id) VALUES (?, ?)", (channel_id, user_id)
    )
    return _group(db, channel_id, owner_id)


def remove_recipient(db: Database, channel_id: int, owner_id: int, user_id: int) -> Left:
    """The owner removes someone else (to leave, the owner deletes the channel: `leave`).

    Raises NotFound("unknown_channel" | "unknown_recipient"), BadRequest("not_a_group_dm" |
    "invalid_field": oneself), Forbidden("not_group_owner")."""
    _owned(db, channel_id, owner_id)
    if user_id == owner_id:
        raise _field("user_id", "to leave, delete the channel (DELETE /channels/{id})")
    cursor = db.execute(
        "DELETE FROM dm_recipients WHERE channel_id = ? AND user_id = ?", (channel_id, user_id)
    )
    if cursor.rowcount != 1:
        raise NotFound("no such recipient of this group DM", code="unknown_recipient")
    return Left(_group(db, channel_id, owner_id), new_owner=False)


def leave(db: Database, channel_id: int, user_id: int) -> Left:
    """A recipient leaves. The owner's role passes to the remaining recipient with the lowest
    id; the last one out deletes the channel.

    Raises NotFound("unknown_channel"), BadRequest("not_a_group_dm")."""
    dm = _group(db, channel_id, user_id)
    db.execute(
        "DELETE FROM dm_recipients WHERE channel_id = ? AND user_id = ?", (channel_id, user_id)
    )
    rest = _recipient_ids(db, channel_id)
    if not rest:
        db.execute("DELETE FROM channels WHERE id = ?", (channel_id,))
        return Left(None, new_owner=False)
    new_owner = dm.owner_id == user_id
    if new_owner:
        db.execute("UPDATE channels SET owner_id = ? WHERE id = ?", (rest[0], channel_id))
    return Left(_group(db, channel_id, rest[0]), new_owner=new_owner)
