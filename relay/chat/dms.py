"""Direct messages: opening the DM channel between two users, and the user's DM channels.

Messages in a DM channel are relay.chat.messages, like any text channel's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec import UnsetType

from relay.chat import events, group_dms
from relay.chat.args import field_error, id_field
from relay.chat.objects import Channel, dm_out
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.chat import commands
    from relay.chat.context import Chat


class OpenedDm(msgspec.Struct, frozen=True, kw_only=True):
    """The DM channel, and False in `created` if the two users had one already."""

    channel: Channel
    created: bool


async def open_dm(chat: Chat, user_id: int, data: commands.OpenDm) -> OpenedDm:
    """The DM channel with `data.recipient_id`, made if they have none yet (then both users
    hear CHANNEL_CREATE); or a new group DM with `data.recipients` (relay.chat.group_dms).
    Counts against the user's action budget (429 rate_limited), and
    raises 400 cannot_dm_self, 404 unknown_user or 403 no_shared_server."""
    if (refused := await chat.action_refused(user_id)) is not None:
        raise refused  # a DM, once made, is there for good and in both users' READY
    if not isinstance(data.recipients, UnsetType):
        if not isinstance(data.recipient_id, UnsetType):
            raise field_error("recipient_id", "give recipient_id or recipients, not both")
        name = None if isinstance(data.name, UnsetType) else data.name
        channel = await group_dms.create(chat, user_id, data.recipients, name)
        return OpenedDm(channel=channel, created=True)
    if isinstance(data.recipient_id, UnsetType):
        raise field_error("recipient_id", "give recipient_id (a DM) or recipients (a group DM)")
    if not isinstance(data.name, UnsetType):
        raise field_error("name", "only a group DM has a name")
    recipient_id = id_field(data.recipient_id, "recipient_id")
    opened = await chat.store.write(
        chat.q.dms.open_dm, chat.store.ids.next(), user_id, recipient_id, now_ms()
    )
    payload = dm_out(opened.dm)
    if opened.created:
        recipients = [u.id for u in opened.dm.recipients]
        chat.fanout.to_users(recipients, events.ChannelCreate(d=payload), dm=True)
    return OpenedDm(channel=payload, created=opened.created)


async def dm_channels(chat: Chat, user_id: int) -> list[Channel]:
    """The user's DM channels with their recipients, as READY has them (two queries in
    all)."""
    return [dm_out(dm) for dm in await chat.store.read(chat.q.dms.dms_of, user_id)]
