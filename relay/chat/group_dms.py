"""Group DMs: making one, renaming it, adding and removing recipients, leaving.

A group DM is a channel of type "group_dm" with no server, 3 to `max_group_dm_recipients`
people, a name and an owner (relay.storage.group_dms). Its messages, reactions, read state and
typing are relay.chat.messages', as in a 1:1 DM. Its events go to its recipients: CHANNEL_CREATE
to each one who joins it, CHANNEL_UPDATE to all on a rename or a new owner,
CHANNEL_RECIPIENT_ADD/REMOVE to those who are in it, CHANNEL_DELETE to whoever leaves. The hub
hears the new recipients (`RecipientsChanged`) before any of those, so its channel events reach
exactly the people in it from then on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.chat import events
from relay.chat.args import id_field, snowflake
from relay.chat.fanout import RecipientsChanged
from relay.chat.objects import RecipientEvent, UserBrief, dm_out
from relay.errors import NotFound
from relay.storage.access import now_ms
from relay.storage.dms import DmRow

if TYPE_CHECKING:
    from relay.chat.context import Chat
    from relay.chat.objects import Channel
    from relay.storage.group_dms import Left


def _recipients(dm: DmRow) -> list[int]:
    return [u.id for u in dm.recipients]


def _brief(dm: DmRow, user_id: int) -> UserBrief:
    for u in dm.recipients:
        if u.id == user_id:
            return UserBrief(id=str(u.id), username=u.username, display_name=u.display_name)
    raise LookupError(user_id)


async def create(chat: Chat, user_id: int, others: list[str], name: str | None) -> Channel:
    """A new group DM of the user (its owner) and `others`; each hears CHANNEL_CREATE. The
    caller counted it against the action budget (relay.chat.dms.open_dm)."""
    ids = [id_field(text, f"recipients[{n}]") for n, text in enumerate(others)]
    dm = await chat.store.write(
        chat.q.group_dms.create_group_dm,
        chat.store.ids.next(),
        user_id,
        ids,
        name,
        now_ms(),
        chat.settings.max_group_dm_recipients,
    )
    payload = dm_out(dm)  # its channel actor, started by its first event, reads who is in it
    chat.fanout.to_users(_recipients(dm), events.ChannelCreate(d=payload), dm=True)
    return payload


async def rename(chat: Chat, user_id: int, channel_id: int, name: str | None) -> Channel:
    """Rename (any recipient); CHANNEL_UPDATE to all if the name changed."""
    old, new = await chat.store.write(chat.q.group_dms.rename, channel_id, user_id, name)
    payload = dm_out(new)
    if old.channel.name != new.channel.name:
        chat.fanout.to_users(_recipients(new), events.ChannelUpdate(d=payload), dm=True)
    return payload


async def add_recipient(chat: Chat, user_id: int, channel_id: str, target: str) -> None:
    """The owner adds someone (429 over the action budget): they hear CHANNEL_CREATE, everyone
    in it CHANNEL_RECIPIENT_ADD. Nothing happens for someone already in it."""
    if (refused := await chat.action_refused(user_id)) is not None:
        raise refused
    cid = snowflake(channel_id, "channel")
    uid = snowflake(target, "user")
    dm = await chat.store.write(
        chat.q.group_dms.add_recipient, cid, user_id, uid, chat.settings.max_group_dm_recipients
    )
    if dm is None:
        return
    chat.fanout.announce(RecipientsChanged(cid, _recipients(dm)))
    chat.fanout.to_users((uid,), events.ChannelCreate(d=dm_out(dm)), dm=True)
    payload = RecipientEvent(channel_id=str(cid), user=_brief(dm, uid))
    chat.fanout.to_users(_recipients(dm), events.ChannelRecipientAdd(d=payload), dm=True)


async def remove_recipient(chat: Chat, user_id: int, channel_id: str, target: str) -> None:
    """The owner removes someone else: they hear CHANNEL_DELETE, the rest
    CHANNEL_RECIPIENT_REMOVE."""
    cid = snowflake(channel_id, "channel")
    uid = snowflake(target, "user")
    before = await _group(chat, user_id, cid)
    left = await chat.store.write(chat.q.group_dms.remove_recipient, cid, user_id, uid)
    _announce_left(chat, before, left, uid)


async def leave(chat: Chat, user_id: int, channel_id: int) -> None:
    """Leave a group DM: CHANNEL_DELETE to the leaver, CHANNEL_RECIPIENT_REMOVE (and
    CHANNEL_UPDATE if the owner left) to those who remain; the last one out deletes it."""
    before = await _group(chat, user_id, channel_id)
    left = await chat.store.write(chat.q.group_dms.leave, channel_id, user_id)
    _announce_left(chat, before, left, user_id)


async def _group(chat: Chat, user_id: int, channel_id: int) -> DmRow:
    """The group DM as the user sees it before a change (the write checks again)."""
    found = await chat.store.read(chat.q.dms.channel_for, channel_id, user_id)
    if not isinstance(found, DmRow):
        raise NotFound("unknown channel", code="unknown_channel")
    return found


def _announce_left(chat: Chat, before: DmRow, left: Left, user_id: int) -> None:
    chat.fanout.to_users((user_id,), events.ChannelDelete(d=dm_out(before)), dm=True)
    if left.dm is None:  # the last one left: it is gone
        chat.fanout.announce(RecipientsChanged(before.channel.id, []))
        return
    dm = left.dm
    chat.fanout.announce(RecipientsChanged(dm.channel.id, _recipients(dm)))
    payload = RecipientEvent(channel_id=str(dm.channel.id), user=_brief(before, user_id))
    chat.fanout.to_users(_recipients(dm), events.ChannelRecipientRemove(d=payload), dm=True)
    if left.new_owner:
        chat.fanout.to_users(_recipients(dm), events.ChannelUpdate(d=dm_out(dm)), dm=True)
