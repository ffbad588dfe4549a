"""After a change of permissions: refresh the permission cache (relay.chat.views), and tell
each online member about the channels they gained (CHANNEL_CREATE) or lost (CHANNEL_DELETE)
sight of, and about changed channels they still see (CHANNEL_UPDATE).

Usage, around any write that can change who sees what:

    before = await visibility.before(chat, server_id)
    ... the write ...
    await visibility.after(chat, server_id, before, channels={...}, users={...})

`before` is the cache's view from just before the write; `after` invalidates it (so from here on
no event reaches someone who lost VIEW_CHANNEL), loads the new one and diffs the two for the
online members in `users` (default: all) over the channels in `channels` (default: all). Scoping
keeps the diff cheap: a role given to one member needs only that member's channels, an overwrite
on one channel only that channel's audience.

Two changes racing may announce a channel twice or not at all to someone (each diff sees its own
before/after); routing itself is always from the latest snapshot, so no event goes astray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.chat import events
from relay.chat.fanout import PermissionsChanged
from relay.chat.objects import channel_out

if TYPE_CHECKING:
    from collections.abc import Iterable

    from relay.chat.context import Chat
    from relay.chat.views import ServerView
    from relay.storage.channels import ChannelRow


async def before(chat: Chat, server_id: int) -> ServerView | None:
    return await chat.views.get(server_id)


async def after(
    chat: Chat,
    server_id: int,
    old: ServerView | None,
    *,
    users: Iterable[int] | None = None,
    channels: Iterable[int] | None = None,
    updated: Iterable[int] = (),
    deleted: Iterable[ChannelRow] = (),
) -> None:
    """Invalidate the server's permission snapshot and announce what changed for whom.

    `updated`: channels whose object changed (CHANNEL_UPDATE to those who still see them);
    `deleted`: channels that are gone (CHANNEL_DELETE to those who saw them)."""
    chat.fanout.announce(PermissionsChanged(server_id))
    new = await chat.views.get(server_id)
    gone_rows = {c.id: c for c in deleted}
    changed = set(updated)
    scope = None if channels is None else {*channels, *changed, *gone_rows}
    online = set(chat.fanout.online(server_id))
    targets = online if users is None else online & set(users)
    rows: dict[int, ChannelRow] | None = None
    for user_id in sorted(targets):
        saw = old.visible(user_id, scope) if old is not None else set()
        sees = new.visible(user_id, scope) if new is not None else set()
        lost, gained, kept = saw - sees, sees - saw, saw & sees & changed
        if not (lost or gained or kept):
            continue
        if rows is None:  # read the channels once, only if someone needs them
            rows = {
                c.id: c for c in await chat.store.read(chat.q.channels.list_channels, server_id)
            }
            rows.update(gone_rows)
        for kind, ids in (
            (events.ChannelDelete, lost),
            (events.ChannelCreate, gained),
            (events.ChannelUpdate, kept),
        ):
            for channel_id in sorted(
                ids, key=lambda c: (rows[c].position, c) if c in rows else (0, c)
            ):
                if channel_id in rows:
                    chat.fanout.to_users((user_id,), kind(d=channel_out(rows[channel_id])))
