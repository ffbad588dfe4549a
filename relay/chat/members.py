"""Membership announcements: what the fan-out hears when someone joins or leaves a server.

Called by every operation that changes membership (joining by invite or publicly, creating a
server, leaving, kicks and bans), after the change committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.chat import events
from relay.chat.fanout import MemberJoined, MemberLeft
from relay.chat.objects import (
    Deleted,
    MemberAdd,
    MemberRemove,
    iso,
    server_state_out,
    user_brief_out,
)

if TYPE_CHECKING:
    from relay.chat.context import Chat
    from relay.storage.members import Joined, MemberRow


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
    then they stop hearing it and get SERVER_DELETE."""
    user = user_brief_out(member.user)
    fanout = chat.fanout
    fanout.to_server(
        server_id,
        events.MemberRemoveEvent(d=MemberRemove(server_id=str(server_id), user=user)),
    )
    fanout.announce(MemberLeft(server_id, member.user.id))
    fanout.to_users((member.user.id,), events.ServerDelete(d=Deleted(id=str(server_id))))
