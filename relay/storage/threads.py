"""Queries for threads: channels of type "thread" under a text channel (`parent_id`), with a
starter (`owner_id`), an auto-archive duration, archived and locked flags, and members.

A thread's permissions are its parent's (relay.permissions: a thread node has its parent's
overwrites; relay.storage.audience maps SEND_MESSAGES_IN_THREADS onto SEND_MESSAGES there).
Starting one needs CREATE_THREADS in the parent; managing any needs MANAGE_THREADS, and the
starter may rename, archive and unarchive their own while it is not locked. Starting, changing
and deleting threads are audited (thread_create, thread_update, thread_delete).

Archiving is lazy: a thread counts as archived once `auto_archive` minutes passed since its
last activity (its newest message, or when it was made or last unarchived), or when someone
archived it (`archived`). Nothing runs on a timer, so thousands of idle threads cost nothing
and a restart loses no deadline; a new message is the activity that makes it active again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec

from relay.errors import BadRequest, Forbidden, NotFound, Unprocessable
from relay.ids import EPOCH_MS, SEQUENCE_BITS, WORKER_BITS
from relay.permissions import P
from relay.storage import audit
from relay.storage.access import accesses_of
from relay.storage.audience import VisibleChannel, visible_channel
from relay.storage.channels import ChannelRow, channels_where, insert_channel
from relay.storage.members import UserBrief

if TYPE_CHECKING:
    from sqlite_utils import Database

AUTO_ARCHIVE_MINUTES = (60, 1440, 4320, 10080)  # Discord's durations: 1 hour to 1 week
_SHIFT = WORKER_BITS + SEQUENCE_BITS
# When a thread last saw activity, in ms (SQL over `c`): made, unarchived, or its newest message.
_ACTIVITY = f"max(c.archive_ts, coalesce((c.last_message_id >> {_SHIFT}) + {EPOCH_MS}, 0))"
_ARCHIVED = f"(c.archived = 1 OR {_ACTIVITY} + c.auto_archive * 60000 <= ?)"


class ThreadRow(msgspec.Struct, frozen=True):
    channel: ChannelRow
    owner_id: int
    archived: bool  # as of when it was read (lazy: see the module doc)
    locked: bool
    auto_archive: int  # minutes
    archive_ts: int  # ms: when it was archived, or its last activity while active
    starter_message_id: int | None
    member_count: int


def _audited(t: ThreadRow) -> dict[str, Any]:
    return {
        "name": t.channel.name,
        "parent_id": t.channel.parent_id,
        "archived": t.archived,
        "locked": t.locked,
        "auto_archive_duration": t.auto_archive,
    }


class ThreadMemberRow(msgspec.Struct, frozen=True):
    thread_id: int
    user: UserBrief
    joined_at: int


def unknown_thread() -> NotFound:
    return NotFound("unknown channel", code="unknown_channel")


def _threads(db: Database, rows: list[tuple[Any, ...]], now_ms: int) -> list[ThreadRow]:
    """Thread rows from `_SELECT` rows, in their order, their channels read in one go."""
    if not rows:
        return []
    ids = json.dumps([r[0] for r in rows])
    channels = {
        c.id: c
        for c in channels_where(db, "WHERE c.id IN (SELECT value FROM json_each(?))", (ids,))
    }
    found = []
    for cid, owner_id, archived, locked, auto_archive, archive_ts, starter, activity, count in rows:
        due = activity + auto_archive * 60_000
        expired = due <= now_ms
        found.append(
            ThreadRow(
                channels[cid],
                owner_id,
                bool(archived) or expired,
                bool(locked),
                auto_archive,
                archive_ts if archived else (due if expired else activity),
                starter,
                count,
            )
        )
    return found


_SELECT = (
    "SELECT c.id, c.owner_id, c.archived, c.locked, c.auto_archive, c.archive_ts,"
    f" c.starter_message_id, {_ACTIVITY},"
    " (SELECT count(*) FROM thread_members t WHERE t.channel_id = c.id) FROM channels c"
)


def get_thread(db: Database, thread_id: int, now_ms: int) -> ThreadRow | None:
    rows = db.execute(f"{_SELECT} WHERE c.id = ? AND c.type = 'thread'", (thread_id,)).fetchall()
    found = _threads(db, rows, now_ms)
    return found[0] if found else None


def _seen_thread(db: Database, thread_id: int, user_id: int) -> VisibleChannel:
    channel = visible_channel(db, thread_id, user_id)
    if channel is None or channel.type != "thread":
        raise unknown_thread()
    return channel


def _seen_parent(db: Database, parent_id: int, user_id: int) -> VisibleChannel:
    parent = visible_channel(db, parent_id, user_id)
    if parent is None:
        raise unknown_thread()
    if parent.type != "text":
        raise BadRequest("threads live in text channels", code="not_a_text_channel")
    return parent


def create_thread(
    db: Database,
    thread_id: int,
    parent_id: int,
    user_id: int,
    *,
    name: str,
    auto_archive: int,
    message_id: int | None,
    now_ms: int,
    max_threads: int,
) -> ThreadRow:
    """A new thread in a text channel (CREATE_THREADS there; READ_MESSAGE_HISTORY too when it
    starts from a message), with its starter as its first member.

    Raises NotFound("unknown_channel" | "unknown_message"), BadRequest("not_a_text_channel"),
    Forbidden("missing_permission" | "timed_out"), Unprocessable("thread_exists": the message
    started one already, "too_many_threads": the parent has `max_threads`).
    """
    parent = _seen_parent(db, parent_id, user_id)
    parent.require(P.CREATE_THREADS)
    if message_id is not None:
        parent.require(P.READ_MESSAGE_HISTORY)
        found = db.execute(
            "SELECT 1 FROM messages WHERE id = ? AND channel_id = ?", (message_id, parent_id)
        ).fetchone()
        if found is None:
            raise NotFound("unknown message", code="unknown_message")
        taken = db.execute(
            "SELECT 1 FROM channels WHERE starter_message_id = ?", (message_id,)
        ).fetchone()
        if taken is not None:
            raise Unprocessable("this message has a thread already", code="thread_exists")
    count = db.execute(
        "SELECT count(*) FROM channels WHERE parent_id = ? AND type = 'thread'", (parent_id,)
    ).fetchone()[0]
    if count >= max_threads:
        raise Unprocessable(f"a channel has at most {max_threads} threads", code="too_many_threads")
    channel = ChannelRow(
        thread_id, parent.server_id, "thread", name, None, 0, parent_id, None, now_ms
    )
    insert_channel(db, channel)
    db.execute(
        "UPDATE channels SET owner_id = ?, auto_archive = ?, archive_ts = ?,"
        " starter_message_id = ? WHERE id = ?",
        (user_id, auto_archive, now_ms, message_id, thread_id),
    )
    _add_member(db, thread_id, user_id, now_ms)
    created = get_thread(db, thread_id, now_ms)
    assert created is not None
    assert parent.server_id is not None
    changes = audit.created(_audited(created))
    audit.record(db, parent.server_id, user_id, "thread_create", thread_id, changes, None)
    return created


def update_thread(
    db: Database,
    thread_id: int,
    user_id: int,
    *,
    name: str | None,
    archived: bool | None,
    locked: bool | None,
    auto_archive: int | None,
    now_ms: int,
    reason: str | None = None,
) -> tuple[ThreadRow, ThreadRow]:
    """Change a thread (None: leave as it is); returns it before and after. MANAGE_THREADS, or
    its starter for all but `locked` while it is not locked.

    Raises NotFound("unknown_channel"), Forbidden("missing_permission" | "thread_locked")."""
    channel = _seen_thread(db, thread_id, user_id)
    old = get_thread(db, thread_id, now_ms)
    assert old is not None
    manager = bool(channel.permissions & P.MANAGE_THREADS)
    if not manager:
        if locked is not None or old.owner_id != user_id:
            channel.require(P.MANAGE_THREADS)
        if old.locked:
            raise Forbidden("this thread is locked", code="thread_locked")
    if name is not None:
        db.execute("UPDATE channels SET name = ? WHERE id = ?", (name, thread_id))
    if auto_archive is not None:
        db.execute("UPDATE channels SET auto_archive = ? WHERE id = ?", (auto_archive, thread_id))
    if locked is not None:
        db.execute("UPDATE channels SET locked = ? WHERE id = ?", (locked, thread_id))
    if archived is not None and archived != old.archived:
        db.execute(
            "UPDATE channels SET archived = ?, archive_ts = ? WHERE id = ?",
            (archived, now_ms, thread_id),
        )
    new = get_thread(db, thread_id, now_ms)
    assert new is not None
    changed = audit.diff(_audited(old), _audited(new))
    if changed and new.channel.server_id is not None:
        audit.record(
            db, new.channel.server_id, user_id, "thread_update", thread_id, changed, reason
        )
    return old, new


def post_state(db: Database, thread_id: int, user_id: int, now_ms: int) -> tuple[bool, bool]:
    """(archived, the user is a member) of a thread, in one query: whether a post there needs
    `before_post`. (False, True) for anything else, which needs nothing."""
    row = db.execute(
        f"SELECT {_ARCHIVED}, EXISTS (SELECT 1 FROM thread_members t"
        "  WHERE t.channel_id = c.id AND t.user_id = ?)"
        " FROM channels c WHERE c.id = ? AND c.type = 'thread'",
        (now_ms, user_id, thread_id),
    ).fetchone()
    return (False, True) if row is None else (bool(row[0]), bool(row[1]))


def before_post(db: Database, thread_id: int, user_id: int, now_ms: int) -> tuple[bool, bool]:
    """Before a post in a thread by someone who may post there: unarchive it if it is archived,
    and make the poster a member. Returns (unarchived, joined).

    Raises NotFound("unknown_channel"), Forbidden("missing_permission" | "thread_locked")."""
    _seen_thread(db, thread_id, user_id).require(P.SEND_MESSAGES)  # in threads: see audience
    thread = get_thread(db, thread_id, now_ms)
    assert thread is not None
    unarchived = thread.archived
    if unarchived:
        db.execute(
            "UPDATE channels SET archived = 0, archive_ts = ? WHERE id = ?", (now_ms, thread_id)
        )
    return unarchived, _add_member(db, thread_id, user_id, now_ms)


def delete_thread(
    db: Database, thread_id: int, user_id: int, now_ms: int, reason: str | None = None
) -> ThreadRow:
    """Delete a thread and its messages (MANAGE_THREADS; audited). Returns it as it was."""
    channel = _seen_thread(db, thread_id, user_id)
    channel.require(P.MANAGE_THREADS)
    thread = get_thread(db, thread_id, now_ms)
    assert thread is not None
    db.execute("DELETE FROM channels WHERE id = ?", (thread_id,))
    assert thread.channel.server_id is not None
    changes = audit.removed(_audited(thread))
    audit.record(db, thread.channel.server_id, user_id, "thread_delete", thread_id, changes, reason)
    return thread


def _threads_of(
    db: Database, parent_id: int, archived: bool, now_ms: int, before: int | None, limit: int
) -> list[ThreadRow]:
    flag = "" if archived else "NOT "
    rows = db.execute(
        f"{_SELECT} WHERE c.parent_id = ? AND c.type = 'thread' AND {flag}{_ARCHIVED}"
        " AND c.id < ? ORDER BY c.id DESC LIMIT ?",
        (parent_id, now_ms, before if before is not None else 2**63 - 1, limit),
    ).fetchall()
    return _threads(db, rows, now_ms)


def list_threads(
    db: Database,
    parent_id: int,
    user_id: int,
    *,
    archived: bool,
    now_ms: int,
    before: int | None = None,
    limit: int = 50,
) -> list[ThreadRow]:
    """A text channel's active or archived threads, newest first (archived ones need
    READ_MESSAGE_HISTORY). Raises NotFound("unknown_channel"), BadRequest, Forbidden."""
    parent = _seen_parent(db, parent_id, user_id)
    if archived:
        parent.require(P.READ_MESSAGE_HISTORY)
    return _threads_of(db, parent_id, archived, now_ms, before, limit)


def active_threads_of(db: Database, user_id: int, now_ms: int) -> list[ThreadRow]:
    """The active threads the user is a member of and can see (for READY)."""
    rows = db.execute(
        f"{_SELECT} JOIN thread_members t ON t.channel_id = c.id AND t.user_id = ?"
        f" JOIN members m ON m.server_id = c.server_id AND m.user_id = t.user_id"
        f" WHERE c.type = 'thread' AND NOT {_ARCHIVED} ORDER BY c.id",
        (user_id, now_ms),
    ).fetchall()
    if not rows:
        return []
    accesses = accesses_of(db, user_id, now_ms)
    threads = _threads(db, rows, now_ms)
    return [
        t
        for t in threads
        if t.channel.server_id in accesses
        and accesses[t.channel.server_id].permissions(t.channel.id) & P.VIEW_CHANNEL
    ]


# -- members -------------------------------------------------------------------------------------


def _add_member(db: Database, thread_id: int, user_id: int, now_ms: int) -> bool:
    cursor = db.execute(
        "INSERT INTO thread_members (channel_id, user_id, joined_at) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (thread_id, user_id, now_ms),
    )
    return cursor.rowcount == 1


def member_of(db: Database, thread_id: int, user_id: int) -> ThreadMemberRow | None:
    row = db.execute(
        "SELECT u.id, u.username, u.display_name, t.joined_at FROM thread_members t"
        " JOIN users u ON u.id = t.user_id WHERE t.channel_id = ? AND t.user_id = ?",
        (thread_id, user_id),
    ).fetchone()
    if row is None:
        return None
    return ThreadMemberRow(thread_id, UserBrief(row[0], row[1], row[2]), row[3])


def add_member(
    db: Database, thread_id: int, actor_id: int, user_id: int, now_ms: int
) -> ThreadMemberRow | None:
    """Join a thread (`user_id` is the actor) or add someone to it: the actor must see it and
    be allowed to post there (or hold MANAGE_THREADS), the added user must see it too. Returns
    the new member, None if they were one already.

    Raises NotFound("unknown_channel" | "unknown_member"), Forbidden."""
    channel = _seen_thread(db, thread_id, actor_id)
    if user_id != actor_id:
        if not channel.permissions & P.MANAGE_THREADS:
            channel.require(P.SEND_MESSAGES)
        if visible_channel(db, thread_id, user_id) is None:
            raise NotFound("no such member can see this thread", code="unknown_member")
    if not _add_member(db, thread_id, user_id, now_ms):
        return None
    return member_of(db, thread_id, user_id)


def remove_member(db: Database, thread_id: int, actor_id: int, user_id: int) -> bool:
    """Leave a thread, or remove someone from it (MANAGE_THREADS, or the thread's starter while
    it is not locked). False if they were not a member.

    Raises NotFound("unknown_channel"), Forbidden("missing_permission")."""
    channel = _seen_thread(db, thread_id, actor_id)
    if user_id != actor_id and not channel.permissions & P.MANAGE_THREADS:
        owner = db.execute("SELECT owner_id, locked FROM channels WHERE id = ?", (thread_id,))
        owner_id, locked = owner.fetchone()
        if owner_id != actor_id or locked:
            channel.require(P.MANAGE_THREADS)
    cursor = db.execute(
        "DELETE FROM thread_members WHERE channel_id = ? AND user_id = ?", (thread_id, user_id)
    )
    return cursor.rowcount == 1


def list_members(db: Database, thread_id: int, user_id: int) -> list[ThreadMemberRow]:
    """A thread's members, by user id. Raises NotFound("unknown_channel")."""
    _seen_thread(db, thread_id, user_id)
    rows = db.execute(
        "SELECT u.id, u.username, u.display_name, t.joined_at FROM thread_members t"
        " JOIN users u ON u.id = t.user_id WHERE t.channel_id = ? ORDER BY u.id",
        (thread_id,),
    ).fetchall()
    return [ThreadMemberRow(thread_id, UserBrief(r[0], r[1], r[2]), r[3]) for r in rows]


def member_ids(db: Database, thread_id: int) -> list[int]:
    rows = db.execute("SELECT user_id FROM thread_members WHERE channel_id = ?", (thread_id,))
    return [r[0] for r in rows]
