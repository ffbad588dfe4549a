"""A fan-out that sends every crossing through msgpack before it is delivered, as a broker
between processes would: the gateway suite runs against it too (tests/gateway/conftest.py), so
anything that is not plain data fails there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import outcome

from relay.chat import events
from relay.chat.fanout import Change
from relay.gateway.hub import Hub
from relay.storage.messages import NewMessage, Posted

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from actors import Asked, Reply
    from relay.chat.events import ChatEvent
    from relay.storage.audience import ChannelAudience

T = TypeVar("T")
_encoder = msgspec.msgpack.Encoder()


def through(value: Any, kind: type[T]) -> T:
    """`value` after a trip through msgpack, decoded as `kind`."""
    return msgspec.msgpack.decode(_encoder.encode(value), type=kind)


def event_through(event: ChatEvent) -> ChatEvent:
    back = events.decode(events.encode(event))
    assert back == event
    return back


class MsgpackHub(Hub):
    async def post(self, new: NewMessage) -> Asked[Posted]:
        return await super().post(through(new, NewMessage))

    async def post_with(
        self,
        new: NewMessage,
        on_answer: Callable[[outcome.Outcome[Posted]], object],
        *,
        deadline: float = float("inf"),
    ) -> Reply[Posted]:
        def answered(result: outcome.Outcome[Posted]) -> object:
            if isinstance(result, outcome.Value):
                result = outcome.Value(through(result.unwrap(), Posted))
            return on_answer(result)

        return await super().post_with(through(new, NewMessage), answered, deadline=deadline)

    async def to_channel(self, channel_id: int, event: ChatEvent) -> None:
        await super().to_channel(through(channel_id, int), event_through(event))

    def to_server(self, server_id: int, event: ChatEvent) -> None:
        super().to_server(through(server_id, int), event_through(event))

    def to_users(self, user_ids: Iterable[int], event: ChatEvent, *, dm: bool = False) -> None:
        users = through(list(user_ids), list[int])
        super().to_users(users, event_through(event), dm=through(dm, bool))

    def announce(self, change: Change) -> None:
        super().announce(through(change, Change))  # type: ignore[arg-type]

    async def _publish(self, info: ChannelAudience, event: object, write_now: bool) -> None:
        # The actor's turn: what a broker would carry from the channel's owner to every node.
        assert isinstance(event, events.ChatEvent)
        await super()._publish(info, event_through(event), write_now)
