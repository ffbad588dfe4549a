"""Channels of a server: listing, creating, reading, changing and deleting them; reading a DM
channel too.

A channel the user cannot see (no VIEW_CHANNEL, not a member or recipient) is 404
unknown_channel. Every change can alter who sees which channel, so each is wrapped in
`visibility.before`/`after`, which sends CHANNEL_* only to those who see the channel (or stopped
seeing it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import UNSET, UnsetType

from relay.chat import group_dms, threads, visibility
from relay.chat.args import field_error, id_field, overwrite_in, snowflake
from relay.chat.objects import channel_out, dm_out
from relay.errors import NotFound
from relay.storage.access import now_ms
from relay.storage.dms import DmRow

if TYPE_CHECKING:
    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.chat.objects import Channel
    from relay.chat.views import ServerView
    from relay.storage.channels import ChannelRow


def unknown_channel() -> NotFound:
    return NotFound("unknown channel", code="unknown_channel")


async def of_server(chat: Chat, user_id: int, server_id: str) -> list[Channel]:
    """The server's channels the user can see, by position, then id."""
    sid = snowflake(server_id, "server")
    return [
        channel_out(c) for c in await chat.store.read(chat.q.channels.channels_for, sid, user_id)
    ]


async def create(
    chat: Chat, user_id: int, server_id: str, data: commands.CreateChannel, reason: str | None
) -> Channel:
    """A new channel (MANAGE_CHANNELS; MANAGE_ROLES too with overwrites). Raises 422
    too_many_channels past the setting max_channels_per_server."""
    sid = snowflake(server_id, "server")
    if data.topic is not None and data.type != "text":
        raise field_error("topic", "only text channels have a topic")
    if data.rate_limit_per_user and data.type != "text":
        raise field_error("rate_limit_per_user", "only text channels have a slowmode")
    parent_id = None
    if data.parent_id is not None:
        if data.type == "category":
            raise field_error("parent_id", "a category cannot have a parent")
        parent_id = id_field(data.parent_id, "parent_id")
    given = None
    if data.permission_overwrites is not None:
        given = tuple(
            overwrite_in(o, f"permission_overwrites[{n}]")
            for n, o in enumerate(data.permission_overwrites)
        )
    before = await visibility.before(chat, sid)
    channel = await chat.store.write(
        chat.q.channels.create_channel,
        chat.store.ids.next(),
        sid,
        user_id,
        name=data.name,
        kind=data.type,
        topic=data.topic,
        parent_id=parent_id,
        position=data.position,
        now_ms=now_ms(),
        max_channels=chat.settings.max_channels_per_server,
        rate_limit_per_user=data.rate_limit_per_user,
        permission_overwrites=given,
        reason=reason,
    )
    await visibility.after(chat, sid, before, channels={channel.id})
    return channel_out(channel)


async def get(chat: Chat, user_id: int, channel_id: str) -> Channel:
    """A server channel the user can see, or a DM channel they are a recipient of."""
    cid = snowflake(channel_id, "channel")
    found = await chat.store.read(chat.q.dms.channel_for, cid, user_id)
    if found is None:
        raise unknown_channel()
    if isinstance(found, DmRow):
        return dm_out(found)
    if found.type == "thread":
        thread = await threads.get(chat, cid)
        if thread is None:
            raise unknown_channel()
        return thread
    return channel_out(found)


async def _before(
    chat: Chat, user_id: int, channel_id: int
) -> tuple[ChannelRow | DmRow, ServerView | None]:
    """The channel as the user sees it (404 if they do not) and its server's permission
    snapshot from before a change (None for a DM: the write refuses to change those)."""
    old = await chat.store.read(chat.q.dms.channel_for, channel_id, user_id)
    if old is None:
        raise unknown_channel()
    sid = old.channel.server_id if isinstance(old, DmRow) else old.server_id
    return old, await visibility.before(chat, sid) if sid is not None else None


async def update(
    chat: Chat, user_id: int, channel_id: str, data: commands.UpdateChannel, reason: str | None
) -> Channel:
    """Change a channel (MANAGE_CHANNELS; MANAGE_ROLES too to resync its overwrites); the
    CHANNEL_* events only if something changed. A thread: relay.chat.threads.update; a group
    DM: any recipient renames it."""
    cid = snowflake(channel_id, "channel")
    parent_id: int | UnsetType | None = UNSET if data.parent_id is UNSET else None
    if isinstance(data.parent_id, str):
        parent_id = id_field(data.parent_id, "parent_id")
    old, before = await _before(chat, user_id, cid)
    if isinstance(old, DmRow) and old.channel.type == "group_dm":
        return await _rename_group_dm(chat, user_id, cid, data)
    if not isinstance(old, DmRow) and old.type == "thread":
        return await threads.update(chat, user_id, cid, data, reason)
    for field in ("archived", "locked", "auto_archive_duration"):
        if getattr(data, field) is not UNSET:
            raise field_error(field, "only threads have this setting")
    channel = await chat.store.write(
        chat.q.channels.update_channel,
        cid,
        user_id,
        name=data.name,
        topic=data.topic,
        position=data.position,
        parent_id=parent_id,
        rate_limit_per_user=data.rate_limit_per_user,
        permissions_synced=data.permissions_synced,
        reason=reason,
        user_limit=data.user_limit,
        e2ee_required=data.e2ee_required,
    )
    assert channel.server_id is not None
    if channel != old:
        await visibility.after(chat, channel.server_id, before, channels={cid}, updated={cid})
    return channel_out(channel)


async def _rename_group_dm(
    chat: Chat, user_id: int, channel_id: int, data: commands.UpdateChannel
) -> Channel:
    for field in data.__struct_fields__:
        if field != "name" and getattr(data, field) is not UNSET:
            raise field_error(field, "a group DM has only a name")
    name = None if isinstance(data.name, UnsetType) else data.name
    return await group_dms.rename(chat, user_id, channel_id, name)


async def delete(chat: Chat, user_id: int, channel_id: str, reason: str | None) -> None:
    """Delete a channel (MANAGE_CHANNELS). A deleted category's channels move to the top
    level, and those who see them hear CHANNEL_UPDATE; a deleted text channel's threads go
    with it. A thread: relay.chat.threads.delete; a group DM: leave it."""
    cid = snowflake(channel_id, "channel")
    old, before = await _before(chat, user_id, cid)
    if isinstance(old, DmRow) and old.channel.type == "group_dm":
        await group_dms.leave(chat, user_id, cid)
        return
    if not isinstance(old, DmRow) and old.type == "thread":
        await threads.delete(chat, user_id, cid, reason)
        return
    channel, orphans = await chat.store.write(chat.q.channels.delete_channel, cid, user_id, reason)
    assert channel.server_id is not None
    chat.voice.channel_gone(cid)  # its members leave voice
    await visibility.after(
        chat,
        channel.server_id,
        before,
        channels={cid, *(o.id for o in orphans)},
        updated={o.id for o in orphans},
        deleted=[channel],
    )
