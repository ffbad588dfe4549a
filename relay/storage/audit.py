"""The audit log: who changed what in a server, when, why, and what it was before.

Write functions call `record` inside their own transaction, so an entry exists exactly when its
change committed. Entry ids increase with time (SQLite rowids), which is what `before=` pages by.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from relay.permissions import P
from relay.storage.access import now_ms, require_server

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlite_utils import Database

ACTIONS = frozenset(
    {
        "server_update",
        "owner_transfer",
        "channel_create",
        "channel_update",
        "channel_delete",
        "overwrite_create",
        "overwrite_update",
        "overwrite_delete",
        "role_create",
        "role_update",
        "role_delete",
        "member_role_add",
        "member_role_remove",
        "member_update",
        "member_kick",
        "member_ban_add",
        "member_ban_remove",
        "invite_create",
        "invite_delete",
        "message_delete",
        "message_bulk_delete",
        "message_pin",
        "message_unpin",
        "bot_add",
        "webhook_create",
        "webhook_update",
        "webhook_delete",
        "thread_create",
        "thread_update",
        "thread_delete",
    }
)


class Change(msgspec.Struct, frozen=True):
    key: str
    old: Any = None
    new: Any = None


class AuditEntry(msgspec.Struct, frozen=True):
    id: int
    server_id: int
    user_id: int  # who acted
    action: str
    target_id: int | None
    reason: str | None
    changes: list[Change]
    created_at: int


_decode_changes = msgspec.json.Decoder(list[Change])
_encode = msgspec.json.Encoder()


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """The keys of `after` whose values differ from `before` (a missing key counts as None)."""
    return [
        Change(key, before.get(key), value)
        for key, value in after.items()
        if before.get(key) != value
    ]


def created(values: Mapping[str, Any]) -> list[Change]:
    return [Change(key, None, value) for key, value in values.items() if value is not None]


def removed(values: Mapping[str, Any]) -> list[Change]:
    return [Change(key, value, None) for key, value in values.items() if value is not None]


def record(
    db: Database,
    server_id: int,
    user_id: int,
    action: str,
    target_id: int | None,
    changes: list[Change],
    reason: str | None,
) -> None:
    assert action in ACTIONS, action
    db.execute(
        "INSERT INTO audit_log (server_id, user_id, action, target_id, reason, changes,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (server_id, user_id, action, target_id, reason, _encode.encode(changes).decode(), now_ms()),
    )


def prune(db: Database, before_ms: int, batch: int = 1000) -> int:
    """Delete up to `batch` of the oldest entries written before `before_ms`. Entry ids grow
    with time, so the oldest are the first by id: no scan of the whole log for a time."""
    cursor = db.execute(
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log ORDER BY id LIMIT ?)"
        " AND created_at < ?",
        (batch, before_ms),
    )
    return int(cursor.rowcount)


def entries(
    db: Database,
    server_id: int,
    viewer_id: int,
    *,
    user_id: int | None = None,
    action: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """Newest first, filtered by who acted and what they did. Needs VIEW_AUDIT_LOG.

    Raises NotFound("unknown_server") or Forbidden("missing_permission").
    """
    require_server(db, server_id, viewer_id, P.VIEW_AUDIT_LOG)
    where = ["server_id = ?"]
    params: list[Any] = [server_id]
    for column, value in (("user_id", user_id), ("action", action)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    rows = db.execute(
        "SELECT id, server_id, user_id, action, target_id, reason, changes, created_at"
        f" FROM audit_log WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [
        AuditEntry(id_, sid, uid, act, target, why, _decode_changes.decode(changes), at)
        for id_, sid, uid, act, target, why, changes, at in rows
    ]
