"""Servers: creating, reading, changing, deleting and handing one over; the user's servers,
discovery of public ones and joining one without an invite.

Every change is written first (one storage function that also checks, in its transaction, that
the user has the permission it needs), and announced after it committed. A server the user is
not a member of is 404 unknown_server, never 403 (DESIGN §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import UnsetType

from relay.chat import events, visibility
from relay.chat.args import field_error, id_field, snowflake
from relay.chat.fanout import MemberJoined, ServerDeleted
from relay.chat.members import JoinedServer, after_join
from relay.chat.objects import Deleted, public_server_out, server_out, server_state_out
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.chat.objects import PublicServer, Server, ServerWithChannels

MAX_QUERY_CHARS = 100  # a discovery search


async def create(chat: Chat, user_id: int, data: commands.CreateServer) -> ServerWithChannels:
    """A new server owned by the user, with its channels and roles (as SERVER_CREATE and
    joining send it). Raises 422 too_many_servers past the setting max_servers_owned."""
    ids = chat.store.ids
    state = await chat.store.write(
        chat.q.servers.create_server,
        ids.next(),
        (ids.next(), ids.next()),
        user_id,
        data.name,
        now_ms(),
        chat.settings.max_servers_owned,
    )
    payload = server_state_out(state)
    chat.fanout.announce(MemberJoined(state.server.id, user_id))
    chat.fanout.to_users((user_id,), events.ServerCreate(d=payload))
    return payload


async def mine(chat: Chat, user_id: int) -> list[Server]:
    """The servers the user is a member of, by id."""
    return [server_out(s) for s in await chat.store.read(chat.q.servers.servers_of, user_id)]


async def ready_states(chat: Chat, user_id: int) -> list[ServerWithChannels]:
    """The user's servers with the channels they can see and the roles, as READY has them (a
    fixed number of queries)."""
    return [server_state_out(s) for s in await chat.store.read(chat.q.servers.ready_state, user_id)]


async def discover(
    chat: Chat, user_id: int, query: str, after: int, limit: int
) -> list[PublicServer]:
    """Public servers whose name contains `query` (case-insensitive), by id after `after`."""
    if len(query) > MAX_QUERY_CHARS:
        raise field_error("q", f"at most {MAX_QUERY_CHARS} characters")
    rows = await chat.store.read(chat.q.servers.discover, query, after, limit)
    return [public_server_out(p) for p in rows]


async def join_public(chat: Chat, user_id: int, server_id: str) -> JoinedServer:
    """Join a public server without an invite (`created` False: a member already)."""
    sid = snowflake(server_id, "server")
    done = await chat.store.write(
        chat.q.members.join_public,
        sid,
        user_id,
        now_ms(),
        max_joined=chat.settings.max_servers_joined,
    )
    return after_join(chat, done, user_id)


async def get(chat: Chat, user_id: int, server_id: str) -> Server:
    sid = snowflake(server_id, "server")
    return server_out(await chat.store.read(chat.q.servers.require_member, sid, user_id))


async def update(
    chat: Chat, user_id: int, server_id: str, data: commands.UpdateServer, reason: str | None
) -> Server:
    """Change the name, description or public flag; SERVER_UPDATE only if something changed."""
    sid = snowflake(server_id, "server")
    name = data.name if isinstance(data.name, str) else None
    before = await chat.store.read(chat.q.servers.require_member, sid, user_id)
    server = await chat.store.write(
        chat.q.servers.update_server,
        sid,
        user_id,
        name,
        description=data.description,
        is_public=None if isinstance(data.public, UnsetType) else data.public,
        reason=reason,
    )
    payload = server_out(server)
    if server != before:
        chat.fanout.to_server(sid, events.ServerUpdate(d=payload))
    return payload


async def delete(chat: Chat, user_id: int, server_id: str) -> None:
    """Delete the server (its owner only); its members hear SERVER_DELETE."""
    sid = snowflake(server_id, "server")
    await chat.store.write(chat.q.servers.delete_server, sid, user_id)
    chat.fanout.to_server(sid, events.ServerDelete(d=Deleted(id=str(sid))))
    chat.fanout.announce(ServerDeleted(sid))


async def transfer(
    chat: Chat, user_id: int, server_id: str, data: commands.TransferOwnership, reason: str | None
) -> Server:
    """Hand the server to another member (its owner only). The owner's permissions change, so
    both users may gain or lose sight of channels."""
    sid = snowflake(server_id, "server")
    new_owner = id_field(data.owner_id, "owner_id")
    before = await visibility.before(chat, sid)
    server = await chat.store.write(
        chat.q.servers.transfer_ownership, sid, user_id, new_owner, reason
    )
    chat.fanout.to_server(sid, events.ServerUpdate(d=server_out(server)))
    await visibility.after(chat, sid, before, users={user_id, new_owner})
    return server_out(server)
