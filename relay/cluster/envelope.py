"""What crosses the broker between nodes: one msgpack envelope per publication, and the topics.

Every envelope names the node that published it (`node`), so a node skips its own publications
(it delivered them locally already). Events travel as the chat layer's typed events
(relay.chat.events), changes as relay.chat.fanout's; nothing else crosses.

Topics (Redis pub/sub channels), each subscribed by a node only while it has local sessions
that need it:
- `relay:s:<server id>`: server-wide events and the server's channel events (the audience of a
  server channel is a subset of the server's online members, so a node without any has nobody
  to deliver them to), and each node's online members of the server;
- `relay:u:<user id>`: events for one user, DM channel events (one publication per recipient);
- `relay:changes`: membership and permission changes (every node, always);
- `relay:presence`: presence changes (every node, always).
"""

from __future__ import annotations

from typing import cast

import msgspec

from relay.chat.events import ChatEvent, Event
from relay.chat.fanout import Change
from relay.storage.audience import ChannelAudience

PREFIX = "relay:"
CHANGES = PREFIX + "changes"
PRESENCE = PREFIX + "presence"


def server_topic(server_id: int) -> str:
    return f"{PREFIX}s:{server_id}"


def user_topic(user_id: int) -> str:
    return f"{PREFIX}u:{user_id}"


class _Envelope(msgspec.Struct, frozen=True, tag_field="k", array_like=True):
    node: str  # the publishing node's id


class ServerCast(_Envelope, frozen=True, tag="s"):
    """`Fanout.to_server`: every online member of the server."""

    server_id: int
    event: Event


class UserCast(_Envelope, frozen=True, tag="u"):
    """`Fanout.to_users`, for one of the users (published on that user's topic)."""

    user_id: int
    event: Event
    dm: bool


class ChannelCast(_Envelope, frozen=True, tag="c"):
    """A channel event or new message, after its channel actor's turn. `user_id`: for a DM,
    the one recipient whose topic carries this copy; None for a server channel."""

    audience: ChannelAudience
    event: Event
    user_id: int | None = None


class ChangeCast(_Envelope, frozen=True, tag="x"):
    """`Fanout.announce`: a committed membership or permission change."""

    change: Change


class PresenceCast(_Envelope, frozen=True, tag="p"):
    """A user's merged status changed on the publishing node; `servers`: the servers whose
    online members see it."""

    user_id: int
    status: str
    activity: str | None
    servers: list[int]


class OnlineCast(_Envelope, frozen=True, tag="o"):
    """The publishing node's online members of a server, now (empty: none any more)."""

    server_id: int
    users: list[int]


Envelope = ServerCast | UserCast | ChannelCast | ChangeCast | PresenceCast | OnlineCast

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def as_event(event: ChatEvent) -> Event:
    """A chat event as the union the envelopes decode (every ChatEvent is one of them)."""
    return cast("Event", event)


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes) -> Envelope:
    """Raises msgspec.DecodeError/ValidationError for anything `encode` did not make."""
    return _decoder.decode(data)
