"""READY: everything a client needs to start, in a fixed number of queries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.chat.dms import dm_channels
from relay.chat.messages import read_states
from relay.chat.objects import Presence, Ready, me_out
from relay.chat.servers import ready_states
from relay.chat.threads import ready_threads
from relay.chat.voice import server_states

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.chat.context import Chat


async def ready(
    chat: Chat,
    user_id: int,
    session_id: str,
    presence_of: Callable[[int], tuple[str, str | None] | None],
) -> Ready | None:
    """Who the user is, their servers with the channels they can see and the roles, DMs, the
    active threads they are in, read states, and who among the people they share a server
    with is online (`presence_of`: a user's status and activity, None if offline). None if
    the user is gone."""
    user = await chat.store.read(chat.q.users.get_user, user_id)
    if user is None:
        return None
    keys = await chat.store.read(chat.q.users.list_keys, user_id)
    servers = await ready_states(chat, user_id)
    sharing: set[int] = set()
    for server in servers:
        sharing.update(chat.fanout.online(int(server.id)))
    presences = []
    for uid in sorted(sharing):
        seen = presence_of(uid)
        if seen is not None:
            presences.append(Presence(user_id=str(uid), status=seen[0], activity=seen[1]))
    return Ready(
        session_id=session_id,
        user=me_out(user, keys),
        servers=servers,
        private_channels=await dm_channels(chat, user_id),
        read_states=await read_states(chat, user_id),
        presences=presences,
        voice_states=server_states(chat, [int(s.id) for s in servers]),
        threads=await ready_threads(chat, user_id),
    )
