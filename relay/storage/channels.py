"""Queries for the channels of servers: list, read, create, change and delete them.

Plain sync functions over a sqlite-utils Database, `db` first, like relay.storage.servers.
A channel exists for a member only if they have VIEW_CHANNEL in it (else NotFound); creating,
changing and deleting need MANAGE_CHANNELS, and anything that changes who can see a channel
(its own overwrites, following its category) needs MANAGE_ROLES as well. Channel objects carry
their effective overwrites (their category's when synced; see relay.storage.overwrites).
Changes are audited in the same transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from relay.errors import BadRequest, Forbidden, NotFound, Unprocessable
from relay.permissions import Overwrite, P, ServerPerms, effective_overwrites
from relay.storage import audit, overwrites
from relay.storage.access import Access, channel_nodes, require_server, server_access, visible_ids
from relay.storage.audience import visible_channel

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlite_utils import Database


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
    rate_limit_per_user: int = 0  # slowmode: seconds between one member's messages
    permissions_synced: bool = False  # uses its category's overwrites
    overwrites: tuple[Overwrite, ...] = ()  # effective: the category's when synced
    user_limit: int = 0  # voice: members at most (0: no limit; MOVE_MEMBERS bypasses it)
    e2ee_required: bool = False  # voice: only end-to-end encrypted media

    def audited(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "topic": self.topic,
            "position": self.position,
            "parent_id": self.parent_id,
            "rate_limit_per_user": self.rate_limit_per_user,
            "permissions_synced": self.permissions_synced,
        }


_CHANNEL = (
    "c.id, c.server_id, c.type, c.name, c.topic, c.position, c.parent_id, c.last_message_id,"
    " c.created_at, c.rate_limit_per_user, c.permissions_synced, c.user_limit,"
    " c.e2ee_required"
)


def _channel(row: tuple[Any, ...]) -> ChannelRow:
    cid, sid, kind, name, topic, position, parent_id, last_id, created, slowmode, synced = row[:11]
    return ChannelRow(
        cid,
        sid,
        kind,
        name,
        topic,
        position,
        parent_id,
        last_id,
        created,
        slowmode,
        bool(synced),
        user_limit=row[11],
        e2ee_required=bool(row[12]),
    )


def insert_channel(db: Database, c: ChannelRow, dm_key: str | None = None) -> None:
    db.execute(
        "INSERT INTO channels (id, server_id, type, name, topic, position, parent_id, dm_key,"
        " created_at, rate_limit_per_user, permissions_synced)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            c.id,
            c.server_id,
            c.type,
            c.name,
            c.topic,
            c.position,
            c.parent_id,
            dm_key,
            c.created_at,
            c.rate_limit_per_user,
            c.permissions_synced,
        ),
    )


def channels_where(
    db: Database,
    where: str,
    params: tuple[Any, ...],
    loaded: dict[int, ServerPerms] | None = None,
) -> list[ChannelRow]:
    """Channels selected by `where` (on `c`), with their effective overwrites (from `loaded`
    where it has the channels' server, else read here)."""
    rows = db.execute(f"SELECT {_CHANNEL} FROM channels c {where}", params).fetchall()
    channels = [_channel(r) for r in rows]
    by_server: dict[int, list[int]] = {}
    for c in channels:
        if c.server_id is not None:
            by_server.setdefault(c.server_id, []).append(c.id)
    found: dict[int, tuple[Overwrite, ...]] = {}
    for server_id, ids in by_server.items():
        view = (loaded or {}).get(server_id)
        if view is None:
            view = ServerPerms(server_id, 0, {}, channel_nodes(db, server_id, ids))
        found.update({cid: effective_overwrites(view, cid) for cid in ids})
    return [msgspec.structs.replace(c, overwrites=found.get(c.id, ())) for c in channels]


def _unknown_channel() -> NotFound:
    return NotFound("unknown channel", code="unknown_channel")


def _field(field: str, reason: str) -> BadRequest:
    return BadRequest(f"{field}: {reason}", code="invalid_field", fields={field: reason})


# -- reading and changing ---------------------------------------------------------------------


def list_channels(db: Database, server_id: int) -> list[ChannelRow]:
    """The server's channels, threads not included (relay.storage.threads lists those)."""
    return channels_where(
        db,
        "WHERE c.server_id = ? AND c.type != 'thread' ORDER BY c.position, c.id",
        (server_id,),
    )


def channels_for(db: Database, server_id: int, user_id: int) -> list[ChannelRow]:
    """The channels of a server `user_id` can see. Raises NotFound("unknown_server")."""
    access = require_server(db, server_id, user_id, channel_ids=None)
    channels = list_channels(db, server_id)
    seen = visible_ids(access, [c.id for c in channels])
    return [c for c in channels if c.id in seen]


def get_channel(db: Database, channel_id: int) -> ChannelRow | None:
    found = channels_where(db, "WHERE c.id = ?", (channel_id,))
    return found[0] if found else None


def _check_parent(db: Database, access: Access, parent_id: int) -> None:
    """A parent must be a category of the same server that the actor can see."""
    server_id = access.server.id
    row = db.execute("SELECT server_id, type FROM channels WHERE id = ?", (parent_id,)).fetchone()
    if row is None or row[0] != server_id or row[1] != "category":
        raise _field("parent_id", "must be a category channel of this server")
    parent = server_access(db, server_id, access.user_id, [parent_id])
    if parent is None or not parent.permissions(parent_id) & P.VIEW_CHANNEL:
        raise _field("parent_id", "must be a category channel of this server")


def _check_overwrite_targets(
    db: Database, actor: Access, server_id: int, given: Iterable[Overwrite]
) -> None:
    for o in given:
        overwrites.check_target(db, actor, server_id, o.target_id, o.type)
        overwrites.require_grantable_in(actor.permissions(), None, o)


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
    rate_limit_per_user: int = 0,
    permission_overwrites: tuple[Overwrite, ...] | None = None,
    reason: str | None = None,
) -> ChannelRow:
    """A channel at `position` (default: after the last one). A channel created in a category
    follows the category's overwrites unless it is given its own (which needs MANAGE_ROLES).
    The body rules that need no database (a category has no parent, only text has a topic)
    are the caller's.

    Raises NotFound("unknown_server"), Forbidden("missing_permission" | "role_hierarchy"),
    BadRequest(parent_id) or Unprocessable("too_many_channels": the server has `max_channels`,
    the setting max_channels_per_server).
    """
    actor = require_server(db, server_id, user_id, P.MANAGE_CHANNELS)
    if permission_overwrites is not None:
        actor.require(P.MANAGE_ROLES)
        _check_overwrite_targets(db, actor, server_id, permission_overwrites)
    count = db.execute(
        "SELECT count(*) FROM channels WHERE server_id = ? AND type != 'thread'", (server_id,)
    )
    if count.fetchone()[0] >= max_channels:
        raise Unprocessable(
            f"a server has at most {max_channels} channels", code="too_many_channels"
        )
    if parent_id is not None:
        _check_parent(db, actor, parent_id)
    if position is None:
        last = db.execute(
            "SELECT max(position) FROM channels WHERE server_id = ? AND type != 'thread'",
            (server_id,),
        ).fetchone()[0]
        position = 0 if last is None else last + 1
    synced = parent_id is not None and permission_overwrites is None
    channel = ChannelRow(
        channel_id,
        server_id,
        kind,
        name,
        topic,
        position,
        parent_id,
        None,
        now_ms,
        rate_limit_per_user,
        synced,
    )
    insert_channel(db, channel)
    for o in permission_overwrites or ():
        overwrites.insert(db, channel_id, o)
    audit.record(
        db,
        server_id,
        user_id,
        "channel_create",
        channel_id,
        audit.created(channel.audited()),
        reason,
    )
    created = get_channel(db, channel_id)
    assert created is not None
    return created


def _managed_channel(db: Database, channel_id: int, user_id: int) -> tuple[ChannelRow, Access]:
    """A server channel `user_id` may manage (MANAGE_CHANNELS in it); NotFound if they cannot
    see it."""
    visible = visible_channel(db, channel_id, user_id)
    if visible is None:
        raise _unknown_channel()
    if visible.server_id is None or visible.access is None:
        raise Forbidden("a DM channel cannot be changed or deleted", code="dm_channel")
    visible.require(P.MANAGE_CHANNELS)
    channel = get_channel(db, channel_id)
    assert channel is not None
    return channel, visible.access


def update_channel(
    db: Database,
    channel_id: int,
    user_id: int,
    *,
    name: str | UnsetType = UNSET,
    topic: str | UnsetType | None = UNSET,
    position: int | UnsetType = UNSET,
    parent_id: int | UnsetType | None = UNSET,
    rate_limit_per_user: int | UnsetType = UNSET,
    permissions_synced: bool | UnsetType = UNSET,
    reason: str | None = None,
    user_limit: int | UnsetType = UNSET,
    e2ee_required: bool | UnsetType = UNSET,
) -> ChannelRow:
    """Change the given fields (None clears topic or parent_id). Moving a synced channel keeps
    the overwrites it had (it stops following); `permissions_synced: true` makes it follow its
    (new) category, which needs MANAGE_ROLES as well.

    Raises NotFound("unknown_channel"), Forbidden("missing_permission" | "dm_channel") or
    BadRequest(topic | parent_id | permissions_synced).
    """
    channel, actor = _managed_channel(db, channel_id, user_id)
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
    if not isinstance(rate_limit_per_user, UnsetType):
        if rate_limit_per_user and channel.type != "text":
            raise _field("rate_limit_per_user", "only text channels have a slowmode")
        changes["rate_limit_per_user"] = rate_limit_per_user
    if not isinstance(user_limit, UnsetType):
        if user_limit and channel.type != "voice":
            raise _field("user_limit", "only voice channels have a user limit")
        changes["user_limit"] = user_limit
    if not isinstance(e2ee_required, UnsetType):
        if e2ee_required and channel.type != "voice":
            raise _field("e2ee_required", "only voice channels carry media")
        changes["e2ee_required"] = e2ee_required
    if not isinstance(parent_id, UnsetType) and parent_id != channel.parent_id:
        if parent_id is not None:
            if channel.type == "category":
                raise _field("parent_id", "a category cannot have a parent")
            _check_parent(db, actor, parent_id)
        overwrites.unsync(db, channel_id)  # a move never changes who can see the channel
        changes["parent_id"] = parent_id
    if changes:
        assignments = ", ".join(f"{column} = ?" for column in changes)
        db.execute(
            f"UPDATE channels SET {assignments} WHERE id = ?", (*changes.values(), channel_id)
        )
    if not isinstance(permissions_synced, UnsetType):
        actor.require(P.MANAGE_ROLES, channel_id)
        if permissions_synced:
            if changes.get("parent_id", channel.parent_id) is None:
                raise _field("permissions_synced", "only a channel in a category can be synced")
            overwrites.sync(db, channel_id)
        else:
            overwrites.unsync(db, channel_id)
    updated = get_channel(db, channel_id)
    assert updated is not None
    changed = audit.diff(channel.audited(), updated.audited())
    if changed:
        audit.record(db, channel.server_id, user_id, "channel_update", channel_id, changed, reason)
    return updated


def delete_channel(
    db: Database, channel_id: int, user_id: int, reason: str | None = None
) -> tuple[ChannelRow, list[ChannelRow]]:
    """Delete a server channel (and its messages). Returns it and the channels that lost their
    parent because it was their category (the foreign key sets their parent_id to NULL); those
    that followed its overwrites keep a copy of them."""
    channel, _ = _managed_channel(db, channel_id, user_id)
    assert channel.server_id is not None
    children = [
        r[0] for r in db.execute("SELECT id FROM channels WHERE parent_id = ?", (channel_id,))
    ]
    # Its threads go with it (their messages cascade); the rest lose their category.
    db.execute("DELETE FROM channels WHERE parent_id = ? AND type = 'thread'", (channel_id,))
    children = [c for c in children if get_channel(db, c) is not None]
    for child in children:
        overwrites.unsync(db, child)
    db.execute("DELETE FROM channels WHERE id = ?", (channel_id,))
    audit.record(
        db,
        channel.server_id,
        user_id,
        "channel_delete",
        channel_id,
        audit.removed(channel.audited()),
        reason,
    )
    orphans = [get_channel(db, child) for child in children]
    return channel, [c for c in orphans if c is not None]
