"""Members: listing a server's members and leaving one, and the membership announcements
(what the fan-out hears when someone joins or leaves a server).

The announcements are made by every operation that changes membership (joining by invite or
publicly, creating a server, leaving, kicks and bans), after the change committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from relay.chat import events
from relay.chat.args import snowflake
from relay.chat.fanout import MemberJoined, MemberLeft, PermissionsChanged
from relay.chat.objects import (
    Deleted,
    MemberAdd,
    MemberRemove,
    RoleDeleted,
    ServerWithChannels,
    iso,
    member_out,
    server_state_out,
    user_brief_out,
)

if TYPE_CHECKING:
    from relay.chat.context import Chat
    from relay.chat.objects import Member
    from relay.storage.members import Joined, MemberRow


class JoinedServer(msgspec.Struct, frozen=True, kw_only=True):
    """What joining a server answers: the server with its channels and roles, and False in
    `created` if the user was a member already (nothing changed, nothing was announced)."""

    server: ServerWithChannels
    created: bool


async def page(chat: Chat, user_id: int, server_id: str, after: int, limit: int) -> list[Member]:
    """The server's members by user id, after `after` (a member may list them)."""
    sid = snowflake(server_id, "server")
    rows = await chat.store.read(chat.q.members.members_page, sid, user_id, after, limit)
    return [member_out(m) for m in rows]


async def leave(chat: Chat, user_id: int, server_id: str) -> None:
    """Leave the server (not its owner: 422 owner_cannot_leave)."""
    sid = snowflake(server_id, "server")
    member = await chat.store.write(chat.q.members.leave_server, sid, user_id)
    announce_departure(chat, sid, member)


def after_join(chat: Chat, done: Joined, user_id: int) -> JoinedServer:
    """After a join committed: announce it if the user is new, and say what to answer."""
    if done.created:
        announce_join(chat, done, user_id)
    return JoinedServer(server=server_state_out(done.state), created=done.created)


def announce_join(chat: Chat, joined: Joined, user_id: int) -> None:
    """After a user joined: MEMBER_ADD to the server (the joiner included), then the server to
    the joiner."""
    sid = joined.state.server.id
    member = joined.member
    fanout = chat.fanout
    fanout.announce(MemberJoined(sid, user_id))
    fanout.to_server(
        sid,
        events.MemberAddEvent(
            d=MemberAdd(
                server_id=str(sid),
                user=user_brief_out(member.user),
                joined_at=iso(member.joined_at),
            )
        ),
    )
    fanout.to_users((user_id,), events.ServerCreate(d=server_state_out(joined.state)))


def announce_departure(chat: Chat, server_id: int, member: MemberRow) -> None:
    """After a member left, was kicked or banned: MEMBER_REMOVE to the server (them included),
    then they stop hearing it and get SERVER_DELETE. A bot's managed role was deleted with its
    membership: ROLE_DELETE for it."""
    user = user_brief_out(member.user)
    fanout = chat.fanout
    chat.voice.leave(member.user.id, server_id)  # a kick or ban ends their voice state too
    fanout.to_server(
        server_id,
        events.MemberRemoveEvent(d=MemberRemove(server_id=str(server_id), user=user)),
    )
    if member.managed_role is not None:  # a bot's role went with it (relay.storage.applications)
        fanout.announce(PermissionsChanged(server_id))
        gone = RoleDeleted(server_id=str(server_id), role_id=str(member.managed_role))
        fanout.to_server(server_id, events.RoleDelete(d=gone))
    fanout.announce(MemberLeft(server_id, member.user.id))
    fanout.to_users((member.user.id,), events.ServerDelete(d=Deleted(id=str(server_id))))
