"""Channel permission overwrites: setting and removing a role's or a member's allow/deny on one
channel.

The write functions (relay.storage.overwrites) check MANAGE_ROLES in the channel, the hierarchy
and that nobody grants what they lack. Afterwards the channel and the channels that follow it (a
category's synced children) are announced through relay.chat.visibility: CHANNEL_UPDATE to
those who still see them, CHANNEL_CREATE/DELETE to those who gained or lost sight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.chat import visibility
from relay.chat.args import overwrite_of, snowflake
from relay.chat.channels import unknown_channel
from relay.errors import Forbidden
from relay.storage import dms

if TYPE_CHECKING:
    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.chat.views import ServerView


async def _server_of(chat: Chat, channel_id: int, user_id: int) -> int:
    """The server of a channel the user can see (else 404; 403 dm_channel for a DM)."""
    found = await chat.store.read(chat.q.dms.channel_for, channel_id, user_id)
    if found is None:
        raise unknown_channel()
    if isinstance(found, dms.DmRow) or found.server_id is None:
        raise Forbidden("a DM channel has no permission overwrites", code="dm_channel")
    return found.server_id


async def _changed(chat: Chat, server_id: int, channel_id: int, before: ServerView | None) -> None:
    """Announce the channel and those that follow it (a category's synced children)."""
    children = {
        c.id
        for c in await chat.store.read(chat.q.channels.list_channels, server_id)
        if c.parent_id == channel_id and c.permissions_synced
    }
    scope = {channel_id, *children}
    await visibility.after(chat, server_id, before, channels=scope, updated=scope)


async def put(
    chat: Chat,
    user_id: int,
    channel_id: str,
    target_id: str,
    data: commands.PutOverwrite,
    reason: str | None,
) -> None:
    """Create or replace the overwrite for a role or member (422 too_many_overwrites for a new
    one beyond the `max_overwrites_per_channel` setting)."""
    cid = snowflake(channel_id, "channel")
    tid = snowflake(target_id, data.type if data.type == "role" else "member")
    given = overwrite_of(tid, data.type, data.allow, data.deny, "")
    sid = await _server_of(chat, cid, user_id)
    before = await visibility.before(chat, sid)
    await chat.store.write(
        chat.q.overwrites.set_overwrite,
        cid,
        user_id,
        given,
        reason,
        max_overwrites=chat.settings.max_overwrites_per_channel,
    )
    await _changed(chat, sid, cid, before)


async def delete(
    chat: Chat, user_id: int, channel_id: str, target_id: str, reason: str | None
) -> None:
    """Remove the overwrite for `target_id` (nothing to remove is fine)."""
    cid = snowflake(channel_id, "channel")
    tid = snowflake(target_id, "overwrite")
    sid = await _server_of(chat, cid, user_id)
    before = await visibility.before(chat, sid)
    await chat.store.write(chat.q.overwrites.delete_overwrite, cid, tid, user_id, reason)
    await _changed(chat, sid, cid, before)
