"""Channel permission overwrites: per-channel allow/deny for a role or a member, and how a
channel follows its category's ("synced").

A synced channel has no overwrites of its own: it uses its category's (relay.permissions,
`effective_overwrites`). Changing a synced channel's overwrites first gives it a copy of the
category's (and unsyncs it), as does moving it to another category or deleting the category, so
that no move or deletion ever changes who can see a channel by accident.

Setting or removing an overwrite needs MANAGE_ROLES in the channel, may only add permission bits
the actor has there, and follows the hierarchy: a role overwrite only for roles below the
actor's highest (or @everyone), a member overwrite only for members below the actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from relay.errors import Forbidden, NotFound, Unprocessable
from relay.permissions import Overwrite, P
from relay.storage import audit
from relay.storage.access import Access, server_access
from relay.storage.audience import visible_channel
from relay.storage.roles import get_role, require_grantable, unknown_member, unknown_role

if TYPE_CHECKING:
    from sqlite_utils import Database


def own_overwrites(db: Database, channel_id: int) -> list[Overwrite]:
    rows = db.execute(
        "SELECT target_id, type, allow, deny FROM overwrites WHERE channel_id = ?"
        " ORDER BY target_id",
        (channel_id,),
    )
    return [Overwrite(*r) for r in rows.fetchall()]


def insert(db: Database, channel_id: int, overwrite: Overwrite) -> None:
    db.execute(
        "INSERT INTO overwrites (channel_id, target_id, type, allow, deny) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (channel_id, target_id)"
        " DO UPDATE SET type = excluded.type, allow = excluded.allow, deny = excluded.deny",
        (channel_id, overwrite.target_id, overwrite.type, overwrite.allow, overwrite.deny),
    )


def unsync(db: Database, channel_id: int) -> None:
    """Make a synced channel independent, keeping what it had: a copy of its category's
    overwrites. Does nothing to a channel that is not synced or has no category."""
    row = db.execute(
        "SELECT parent_id, permissions_synced FROM channels WHERE id = ?", (channel_id,)
    ).fetchone()
    if row is None or not row[1]:
        return
    db.execute("UPDATE channels SET permissions_synced = 0 WHERE id = ?", (channel_id,))
    if row[0] is None:
        return
    db.execute("DELETE FROM overwrites WHERE channel_id = ?", (channel_id,))
    for overwrite in own_overwrites(db, row[0]):
        insert(db, channel_id, overwrite)


def sync(db: Database, channel_id: int) -> None:
    """Make a channel follow its category again: its own overwrites go."""
    db.execute("DELETE FROM overwrites WHERE channel_id = ?", (channel_id,))
    db.execute("UPDATE channels SET permissions_synced = 1 WHERE id = ?", (channel_id,))


def _unknown_channel() -> NotFound:
    return NotFound("unknown channel", code="unknown_channel")


def check_target(
    db: Database, actor: Access, server_id: int, target_id: int, kind: Literal["role", "member"]
) -> None:
    """The target exists in the server and is below the actor in the hierarchy."""
    if kind == "role":
        role = get_role(db, server_id, target_id)
        if role is None:
            raise unknown_role()
        if not role.is_everyone:
            actor.require_above_role(role.as_role())
        return
    target = server_access(db, server_id, target_id)
    if target is None:
        raise unknown_member()
    actor.require_above(target)


def require_grantable_in(have: int, old: Overwrite | None, new: Overwrite) -> None:
    """Refuse an overwrite that allows or denies bits the actor does not have (`have`, in the
    channel) beyond those the overwrite already had."""
    require_grantable(have, old.allow if old else 0, new.allow)
    require_grantable(have, old.deny if old else 0, new.deny)


def _managed(db: Database, channel_id: int, user_id: int) -> tuple[int, Access]:
    channel = visible_channel(db, channel_id, user_id)
    if channel is None:
        raise _unknown_channel()
    if channel.server_id is None or channel.access is None:
        raise Forbidden("a DM channel has no permission overwrites", code="dm_channel")
    if channel.type == "thread":
        raise Forbidden("a thread has its parent's overwrites only", code="thread_channel")
    channel.require(P.MANAGE_ROLES)
    return channel.server_id, channel.access


def set_overwrite(
    db: Database,
    channel_id: int,
    user_id: int,
    overwrite: Overwrite,
    reason: str | None = None,
    *,
    max_overwrites: int,
) -> int:
    """Create or replace the overwrite for `overwrite.target_id`; returns the server id.

    Raises NotFound("unknown_channel" | "unknown_role" | "unknown_member"),
    Forbidden("missing_permission" | "role_hierarchy" | "dm_channel" | "thread_channel"),
    Unprocessable("too_many_overwrites": a new one when the channel has `max_overwrites`)."""
    server_id, actor = _managed(db, channel_id, user_id)
    check_target(db, actor, server_id, overwrite.target_id, overwrite.type)
    unsync(db, channel_id)
    existing = own_overwrites(db, channel_id)
    old = next((o for o in existing if o.target_id == overwrite.target_id), None)
    if old is None and len(existing) >= max_overwrites:
        raise Unprocessable(
            f"a channel has at most {max_overwrites} permission overwrites",
            code="too_many_overwrites",
        )
    require_grantable_in(actor.permissions(channel_id), old, overwrite)
    insert(db, channel_id, overwrite)
    after = {"type": overwrite.type, "allow": overwrite.allow, "deny": overwrite.deny}
    if old is None:
        action, changes = "overwrite_create", audit.created(after)
    else:
        before = {"type": old.type, "allow": old.allow, "deny": old.deny}
        action, changes = "overwrite_update", audit.diff(before, after)
    changes.insert(0, audit.Change("channel_id", None, channel_id))
    audit.record(db, server_id, user_id, action, overwrite.target_id, changes, reason)
    return server_id


def delete_overwrite(
    db: Database, channel_id: int, target_id: int, user_id: int, reason: str | None = None
) -> int:
    """Remove the overwrite for `target_id` (nothing to remove is fine); returns the server id.
    A member overwrite of someone who left can always be removed."""
    server_id, actor = _managed(db, channel_id, user_id)
    unsync(db, channel_id)
    old = next((o for o in own_overwrites(db, channel_id) if o.target_id == target_id), None)
    if old is None:
        return server_id
    if old.type == "role" or server_access(db, server_id, target_id) is not None:
        check_target(db, actor, server_id, target_id, old.type)
    db.execute(
        "DELETE FROM overwrites WHERE channel_id = ? AND target_id = ?", (channel_id, target_id)
    )
    changes = [
        audit.Change("channel_id", None, channel_id),
        *audit.removed({"type": old.type, "allow": old.allow, "deny": old.deny}),
    ]
    audit.record(db, server_id, user_id, "overwrite_delete", target_id, changes, reason)
    return server_id
