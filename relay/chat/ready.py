"""READY: everything a client needs to start, in a fixed number of queries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.chat.messages import read_states
from relay.chat.objects import Presence, Ready, dm_out, me_out, server_state_out

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.chat.context import Chat


async def ready(
    chat: Chat,
    user_id: int,
    session_id: str,
    presence_of: Callable[[int], tuple[str, str | None] | None],
) -> Ready | None:
    """Who the user is, their servers with the channels they can see and the roles, DMs, read
    states, and who among the people they share a server with is online (`presence_of`: a
    user's status and activity, None if offline). None if the user is gone."""
    user = await chat.store.read(chat.q.users.get_user, user_id)
    if user is None:
        return None
    keys = await chat.store.read(chat.q.users.list_keys, user_id)
    states = await chat.store.read(chat.q.servers.ready_state, user_id)
    sharing: set[int] = set()
    for state in states:
        sharing.update(chat.fanout.online(state.server.id))
    presences = []
    for uid in sorted(sharing):
        seen = presence_of(uid)
        if seen is not None:
            presences.append(Presence(user_id=str(uid), status=seen[0], activity=seen[1]))
    dms = await chat.store.read(chat.q.dms.dms_of, user_id)
    return Ready(
        session_id=session_id,
        user=me_out(user, keys),
        servers=[server_state_out(s) for s in states],
        private_channels=[dm_out(dm) for dm in dms],
        read_states=await read_states(chat, user_id),
        presences=presences,
    )
