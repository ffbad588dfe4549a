"""The fan-out seam: where the chat layer sends what happened, once it committed.

`Fanout` is what the chat layer needs from whoever delivers events: order a channel's new
messages and events, reach a server's online members or a user's sessions, and hear about
membership and permission changes, which decide who hears what. Today's implementation is
in-process (the gateway hub and its channel actors, relay.gateway.hub); a broker between
processes can implement the same methods.

Everything that crosses it is plain data that round-trips through msgpack: ids, events
(relay.chat.events), new messages (relay.storage.messages.NewMessage) and the changes below. No
callables, memory channels or locks cross it, except a post's answer: a callback or an awaitable
handle for the poster's own process. tests/gateway runs the whole gateway suite with an
implementation that encodes every crossing to msgpack and decodes it before delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable

    import outcome

    from actors import Asked, Reply
    from relay.chat.events import ChatEvent
    from relay.storage.messages import NewMessage, Posted


class _Change(msgspec.Struct, frozen=True, tag_field="change"):
    pass


class MemberJoined(_Change, frozen=True, tag="member_joined"):
    """`user_id` joined (or created) the server: its events reach them from now on."""

    server_id: int
    user_id: int


class MemberLeft(_Change, frozen=True, tag="member_left"):
    """`user_id` left, was kicked or banned: no event of the server reaches them any more."""

    server_id: int
    user_id: int


class PermissionsChanged(_Change, frozen=True, tag="permissions_changed"):
    """Roles, who holds them, overwrites, channels or the owner changed: who sees which channel
    may have changed."""

    server_id: int


class ServerDeleted(_Change, frozen=True, tag="server_deleted"):
    server_id: int


class LoginRevoked(_Change, frozen=True, tag="login_revoked"):
    """A login was revoked (logout, password change, a refresh token reused): its gateway
    sessions end (close 4004)."""

    auth_session_id: int


class RecipientsChanged(_Change, frozen=True, tag="recipients_changed"):
    """A group DM's recipients are now `recipients` (empty: it is gone): its events reach them
    from now on."""

    channel_id: int
    recipients: list[int]


Change = (
    MemberJoined
    | MemberLeft
    | PermissionsChanged
    | ServerDeleted
    | LoginRevoked
    | RecipientsChanged
)


class Fanout(Protocol):
    async def post(self, new: NewMessage) -> Asked[Posted]:
        """Queue a new message with its channel (in order with everything else queued there);
        returns once it is queued; `answer()` is its outcome once committed.

        Raises NotFound("unknown_channel") if the channel is gone."""

    async def post_with(
        self,
        new: NewMessage,
        on_answer: Callable[[outcome.Outcome[Posted]], object],
        *,
        deadline: float,
    ) -> Reply[Posted]:
        """`post`, with the outcome passed to `on_answer` (which must not raise or block).

        Raises NotFound("unknown_channel"), or AskTimeout if it could not be queued by
        `deadline` (Trio time)."""

    async def to_channel(self, channel_id: int, event: ChatEvent) -> None:
        """Everyone who can see the channel (and whose intents take the event), in order with
        the channel's messages."""

    def to_server(self, server_id: int, event: ChatEvent) -> None:
        """Every online member of the server (server-wide events: SERVER_*, MEMBER_*, ROLE_*)."""

    def to_users(self, user_ids: Iterable[int], event: ChatEvent, *, dm: bool = False) -> None:
        """Every session of these users; `dm`: the event is about a DM channel."""

    def announce(self, change: Change) -> None:
        """A committed change of membership or permissions."""

    def online(self, server_id: int) -> Collection[int]:
        """The server's members who have a session now."""
