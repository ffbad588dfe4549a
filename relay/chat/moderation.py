"""Moderation: member nicknames and timeouts, kicks, bans, and the audit log.

The write functions (relay.storage.moderation) check the permission and the hierarchy and write
the audit entry in one transaction. A kicked or banned member is taken out of routing at once
(`announce_departure` announces `MemberLeft`), so no further event of the server reaches them;
the messages a ban deletes are announced as MESSAGE_DELETE_BULK per channel.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import msgspec
from msgspec import UNSET, UnsetType

from relay.chat import commands, events
from relay.chat import voice as chat_voice
from relay.chat.args import field_error, snowflake
from relay.chat.members import announce_departure
from relay.chat.messages import announce_bulk_delete
from relay.chat.objects import audit_out, ban_out, member_out, member_update_out
from relay.storage import audit
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.chat.context import Chat
    from relay.chat.objects import AuditEntry, Ban, Member


def time_field(text: str, field: str) -> int:
    """An ISO 8601 time with a zone ("2026-11-21T10:00:00Z") as Unix milliseconds."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise field_error(field, "must be an ISO 8601 time") from None
    if value.tzinfo is None:
        raise field_error(field, "must say its time zone (e.g. end in Z)")
    return int(value.timestamp() * 1000)


def _member_id(text: str, user_id: int) -> int:
    return user_id if text == "@me" else snowflake(text, "member")


# -- members -------------------------------------------------------------------------------------


async def update_member(
    chat: Chat,
    user_id: int,
    server_id: str,
    member_id: str,
    data: commands.UpdateMember,
    reason: str | None,
) -> Member:
    """Change a member's nickname or timeout (`member_id` "@me": one's own); MEMBER_UPDATE to
    the server unless the body changed nothing."""
    sid = snowflake(server_id, "server")
    uid = _member_id(member_id, user_id)
    voice = (data.mute, data.deaf, data.voice_channel_id)
    if voice != (UNSET, UNSET, UNSET):
        await chat_voice.moderate(
            chat,
            user_id,
            sid,
            uid,
            mute=None if isinstance(data.mute, UnsetType) else data.mute,
            deaf=None if isinstance(data.deaf, UnsetType) else data.deaf,
            move=not isinstance(data.voice_channel_id, UnsetType),
            channel_id=None
            if isinstance(data.voice_channel_id, UnsetType)
            else data.voice_channel_id,
        )
        data = msgspec.structs.replace(data, mute=UNSET, deaf=UNSET, voice_channel_id=UNSET)
    until: int | UnsetType | None = UNSET
    if isinstance(data.communication_disabled_until, str):
        until = time_field(data.communication_disabled_until, "communication_disabled_until")
    elif data.communication_disabled_until is None:
        until = None
    member = await chat.store.write(
        chat.q.moderation.update_member,
        sid,
        uid,
        user_id,
        nickname=data.nickname,
        communication_disabled_until=until,
        now_ms=now_ms(),
        reason=reason,
    )
    if data != commands.UpdateMember():
        chat.fanout.to_server(sid, events.MemberUpdateEvent(d=member_update_out(member)))
    return member_out(member)


async def kick(
    chat: Chat, user_id: int, server_id: str, member_id: str, reason: str | None
) -> None:
    sid = snowflake(server_id, "server")
    uid = snowflake(member_id, "member")
    member = await chat.store.write(chat.q.moderation.kick, sid, uid, user_id, reason)
    announce_departure(chat, sid, member)


# -- bans ----------------------------------------------------------------------------------------


async def bans(chat: Chat, user_id: int, server_id: str, after: int, limit: int) -> list[Ban]:
    """The server's bans by user id, after `after`."""
    sid = snowflake(server_id, "server")
    rows = await chat.store.read(chat.q.moderation.bans_of, sid, user_id, after, limit)
    return [ban_out(b) for b in rows]


async def get_ban(chat: Chat, user_id: int, server_id: str, banned_id: str) -> Ban:
    sid = snowflake(server_id, "server")
    uid = snowflake(banned_id, "ban")
    return ban_out(await chat.store.read(chat.q.moderation.get_ban, sid, uid, user_id))


async def ban(
    chat: Chat,
    user_id: int,
    server_id: str,
    target_id: str,
    delete_message_days: int,
    reason: str | None,
) -> None:
    """Ban a user (a member or not), deleting their messages of the last days; a member hears
    they left, and each channel the messages deleted from it."""
    sid = snowflake(server_id, "server")
    uid = snowflake(target_id, "user")
    banned = await chat.store.write(
        chat.q.moderation.ban,
        sid,
        uid,
        user_id,
        delete_message_s=delete_message_days * 86_400,
        now_ms=now_ms(),
        reason=reason,
    )
    if banned.member is not None:
        announce_departure(chat, sid, banned.member)
    for channel_id, ids in banned.deleted.items():
        if ids:
            await announce_bulk_delete(chat, channel_id, ids)


async def unban(
    chat: Chat, user_id: int, server_id: str, banned_id: str, reason: str | None
) -> None:
    sid = snowflake(server_id, "server")
    uid = snowflake(banned_id, "ban")
    await chat.store.write(chat.q.moderation.unban, sid, uid, user_id, reason)


# -- audit log -----------------------------------------------------------------------------------


async def audit_log(
    chat: Chat,
    user_id: int,
    server_id: str,
    *,
    by_user: int | None,
    action: str | None,
    before: int | None,
    limit: int,
) -> list[AuditEntry]:
    """The server's audit log, newest first, filtered by who acted (`by_user`) and what they
    did (`action`, one of relay.storage.audit.ACTIONS)."""
    sid = snowflake(server_id, "server")
    if action is not None and action not in audit.ACTIONS:
        raise field_error("action", "not an audit log action")
    rows = await chat.store.read(
        chat.q.audit.entries,
        sid,
        user_id,
        user_id=by_user,
        action=action,
        before=before,
        limit=limit,
    )
    return [audit_out(e) for e in rows]
