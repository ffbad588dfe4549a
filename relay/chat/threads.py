"""Threads: starting one (from a message or on its own), changing, archiving, locking and
deleting it, its members, and listing a channel's active and archived threads.

A thread is a channel of type "thread" under a text channel (relay.storage.threads). Its
messages, reactions, pins, read state and typing are relay.chat.messages', as in any channel:
its permissions are its parent's, with SEND_MESSAGES_IN_THREADS in place of SEND_MESSAGES.
THREAD_CREATE/UPDATE/DELETE travel in the parent's order to everyone who can see the parent;
THREAD_MEMBERS_UPDATE in the thread's own (the same people).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from msgspec import UNSET, UnsetType

from relay.chat import events
from relay.chat.args import field_error, snowflake
from relay.chat.objects import (
    Channel,
    ThreadMember,
    ThreadMembersUpdate,
    ThreadMetadata,
    channel_out,
    id_or_none,
    iso,
    message_out,
    user_brief_out,
)
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.storage.audience import VisibleChannel
    from relay.storage.threads import ThreadMemberRow, ThreadRow

T = TypeVar("T")


def thread_out(t: ThreadRow) -> Channel:
    base = channel_out(t.channel)
    return Channel(
        id=base.id,
        server_id=base.server_id,
        type=base.type,
        name=base.name,
        topic=None,
        position=0,
        parent_id=base.parent_id,
        last_message_id=base.last_message_id,
        created_at=base.created_at,
        rate_limit_per_user=base.rate_limit_per_user,
        permissions_synced=False,
        permission_overwrites=base.permission_overwrites,  # the parent's: they apply here
        owner_id=str(t.owner_id),
        thread_metadata=ThreadMetadata(
            archived=t.archived,
            locked=t.locked,
            auto_archive_duration=t.auto_archive,
            archive_timestamp=iso(t.archive_ts),
            starter_message_id=id_or_none(t.starter_message_id),
        ),
        member_count=t.member_count,
    )


def given(value: T | UnsetType) -> T | None:
    return None if isinstance(value, UnsetType) else value


def member_out(m: ThreadMemberRow) -> ThreadMember:
    return ThreadMember(
        id=str(m.thread_id), user=user_brief_out(m.user), joined_at=iso(m.joined_at)
    )


def _parent_of(t: ThreadRow) -> int:
    assert t.channel.parent_id is not None
    return t.channel.parent_id


async def start(
    chat: Chat,
    user_id: int,
    channel_id: str,
    data: commands.CreateThread,
    message_id: str | None = None,
) -> Channel:
    """Start a thread in a text channel (CREATE_THREADS), from one of its messages or on its
    own; the starter is its first member. From a message, the message gains `thread` and the
    channel hears MESSAGE_UPDATE. Counts against the action budget (429)."""
    if (refused := await chat.action_refused(user_id)) is not None:
        raise refused
    parent_id = snowflake(channel_id, "channel")
    mid = snowflake(message_id, "message") if message_id is not None else None
    thread = await chat.store.write(
        chat.q.threads.create_thread,
        chat.store.ids.next(),
        parent_id,
        user_id,
        name=data.name,
        auto_archive=data.auto_archive_duration,
        message_id=mid,
        now_ms=now_ms(),
        max_threads=chat.settings.max_threads_per_channel,
    )
    payload = thread_out(thread)
    await chat.fanout.to_channel(parent_id, events.ThreadCreate(d=payload))
    if mid is not None:
        row = await chat.store.read(chat.q.messages.get, parent_id, mid, None)
        if row is not None:
            update = events.MessageUpdate(d=message_out(row, for_event=True))
            await chat.fanout.to_channel(parent_id, update)
    return payload


async def get(chat: Chat, thread_id: int) -> Channel | None:
    """The thread object (the caller checked that the user can see it)."""
    found = await chat.store.read(chat.q.threads.get_thread, thread_id, now_ms())
    return None if found is None else thread_out(found)


async def update(
    chat: Chat,
    user_id: int,
    thread_id: int,
    data: commands.UpdateChannel,
    reason: str | None = None,
) -> Channel:
    """Rename, archive or unarchive, lock or unlock (MANAGE_THREADS), change the auto-archive
    duration; THREAD_UPDATE if something changed. Fields of other channel types are 400."""
    for field in ("topic", "position", "parent_id", "rate_limit_per_user", "permissions_synced"):
        if getattr(data, field) is not UNSET:
            raise field_error(field, "a thread has no such setting")

    old, new = await chat.store.write(
        chat.q.threads.update_thread,
        thread_id,
        user_id,
        name=given(data.name),
        archived=given(data.archived),
        locked=given(data.locked),
        auto_archive=given(data.auto_archive_duration),
        now_ms=now_ms(),
        reason=reason,
    )
    payload = thread_out(new)
    if new != old:
        await chat.fanout.to_channel(_parent_of(new), events.ThreadUpdate(d=payload))
    return payload


async def delete(chat: Chat, user_id: int, thread_id: int, reason: str | None = None) -> None:
    """Delete a thread and its messages (MANAGE_THREADS, audited with `reason`); THREAD_DELETE
    to the parent's audience."""
    thread = await chat.store.write(
        chat.q.threads.delete_thread, thread_id, user_id, now_ms(), reason
    )
    await chat.fanout.to_channel(_parent_of(thread), events.ThreadDelete(d=thread_out(thread)))


async def before_post(chat: Chat, user_id: int, channel: VisibleChannel) -> None:
    """Before a post in a thread by someone allowed to post there: an archived thread is
    unarchived (THREAD_UPDATE) and the poster becomes a member (THREAD_MEMBERS_UPDATE). Reads
    first, so a post in an active thread one follows costs no extra write."""
    now = now_ms()
    archived, member = await chat.store.read(chat.q.threads.post_state, channel.id, user_id, now)
    if not archived and member:
        return
    unarchived, joined = await chat.store.write(
        chat.q.threads.before_post, channel.id, user_id, now
    )
    if unarchived:
        fresh = await chat.store.read(chat.q.threads.get_thread, channel.id, now_ms())
        if fresh is not None:
            await chat.fanout.to_channel(
                _parent_of(fresh), events.ThreadUpdate(d=thread_out(fresh))
            )
    if joined:
        await _members_changed(chat, channel.id, added=user_id)


# -- members -------------------------------------------------------------------------------------


def _member_id(user_id: int, target: str) -> int:
    return user_id if target == "@me" else snowflake(target, "user")


async def add_member(chat: Chat, user_id: int, channel_id: str, target: str) -> None:
    """Join (`@me`) or add someone who can see the thread (the adder must be allowed to post
    there); THREAD_MEMBERS_UPDATE if they were not a member. 429 over the action budget."""
    if (refused := await chat.action_refused(user_id)) is not None:
        raise refused
    thread_id = snowflake(channel_id, "channel")
    uid = _member_id(user_id, target)
    added = await chat.store.write(chat.q.threads.add_member, thread_id, user_id, uid, now_ms())
    if added is not None:
        await _members_changed(chat, thread_id, added=uid)


async def remove_member(chat: Chat, user_id: int, channel_id: str, target: str) -> None:
    """Leave (`@me`) or remove someone (MANAGE_THREADS, or the starter of an unlocked thread);
    THREAD_MEMBERS_UPDATE if they were a member."""
    thread_id = snowflake(channel_id, "channel")
    uid = _member_id(user_id, target)
    if await chat.store.write(chat.q.threads.remove_member, thread_id, user_id, uid):
        await _members_changed(chat, thread_id, removed=uid)


async def members(chat: Chat, user_id: int, channel_id: str) -> list[ThreadMember]:
    thread_id = snowflake(channel_id, "channel")
    rows = await chat.store.read(chat.q.threads.list_members, thread_id, user_id)
    return [member_out(m) for m in rows]


async def _members_changed(
    chat: Chat, thread_id: int, *, added: int | None = None, removed: int | None = None
) -> None:
    thread = await chat.store.read(chat.q.threads.get_thread, thread_id, now_ms())
    if thread is None or thread.channel.server_id is None:
        return
    joined = []
    if added is not None:
        row = await chat.store.read(chat.q.threads.member_of, thread_id, added)
        if row is not None:
            joined.append(member_out(row))
    payload = ThreadMembersUpdate(
        id=str(thread_id),
        server_id=str(thread.channel.server_id),
        member_count=thread.member_count,
        added_members=joined,
        removed_member_ids=[str(removed)] if removed is not None else [],
    )
    await chat.fanout.to_channel(thread_id, events.ThreadMembersUpdateEvent(d=payload))


# -- listing -------------------------------------------------------------------------------------


async def listing(
    chat: Chat,
    user_id: int,
    channel_id: str,
    *,
    archived: bool,
    before: int | None = None,
    limit: int = 50,
) -> list[Channel]:
    """A text channel's active threads, or its archived ones (READ_MESSAGE_HISTORY), newest
    first."""
    parent_id = snowflake(channel_id, "channel")
    rows = await chat.store.read(
        chat.q.threads.list_threads,
        parent_id,
        user_id,
        archived=archived,
        now_ms=now_ms(),
        before=before,
        limit=limit,
    )
    return [thread_out(t) for t in rows]


async def ready_threads(chat: Chat, user_id: int) -> list[Channel]:
    """The active threads the user is a member of and can see (READY's `threads`)."""
    rows = await chat.store.read(chat.q.threads.active_threads_of, user_id, now_ms())
    return [thread_out(t) for t in rows]
