"""The text-channel actor: the one place where a channel's events get their order.

Everything that reaches a channel's audience goes through its inbox: new messages (`Post`) and
every other channel event (`Publish`: edits, deletes, reactions, typing, acks). Posts get their
id from the actor in inbox order and their writes are queued to the store in that same order;
the store commits in queue order, so history order = id order = delivery order. The actor does
not wait for each commit before taking the next message: it hands the queued write to its
*publisher* task, which awaits the commits one by one (they finish in order), then answers the
poster and publishes the new message's event. Publishes travel the same queue, so nothing
overtakes a post.

The actor never looks inside an event: the chat layer made it, `created(row)` makes the one for
a new message, and `publish(info, event, write_now)` hands it to whoever delivers it (the
gateway hub, which finds the audience: who can see the channel now). `info` says which server
the channel is in, or that it is a DM, so nothing about membership is copied here.

Resource handling: `run()` owns the publisher task in its own nursery and a bounded queue to it
(256 items; a full queue makes the actor wait, which pushes back on the callers). When the
inbox closes, the queue closes after it and the publisher drains it, so every accepted post is
published and answered.

Error handling: a write that fails (e.g. a foreign key) fails that post's caller only. Anything
else escapes and crashes the actor; the registry restarts it (`on_crash` has nothing to close:
subscribers belong to the hub).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import trio

from actors.base import Actor, Reply
from relay.storage import messages
from relay.storage.messages import NewMessage, Posted
from relay.storage.sqlite.db import Pending, StoreClosed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlite_utils import Database

    from relay.storage.audience import ChannelAudience
    from relay.storage.messages import MessageRow
    from relay.storage.sqlite.db import Store


class Post(msgspec.Struct, frozen=True):
    """Store a new message (`messages.post`) and answer `Posted` through `reply`; publish
    `created(row)` if it is new (a repeated nonce answers the earlier message, created=False)."""

    new: NewMessage
    reply: Reply[Posted]


class Publish(msgspec.Struct, frozen=True):
    """Publish an event to the channel's audience, in order (opaque to the actor)."""

    event: object


class Fault(msgspec.Struct, frozen=True):
    """Crash on purpose: lets tests prove that supervision restarts a channel."""


ChannelMsg = Post | Publish | Fault


class _Queued(msgspec.Struct):
    pending: Pending[Posted] | None
    event: object
    reply: Reply[Posted] | None


class ChannelActor(Actor[ChannelMsg]):
    batch_max = 64  # posts queued meanwhile go to the store together: one wake-up for the lot

    def __init__(
        self,
        key: str,
        store: Store,
        publish: Callable[[ChannelAudience, object, bool], Awaitable[None]],
        created: Callable[[MessageRow], object],
        load: Callable[[], Awaitable[ChannelAudience | None]],
        *,
        idle_timeout_s: float | None = None,
        write: Callable[[Database, int, NewMessage], Posted] = messages.post,
    ) -> None:
        super().__init__(key)
        self.store = store
        # The post's write: in cluster mode, `messages.post` under the owner's fencing token
        # (relay.storage.fencing.post), refused once a newer owner has written.
        self._write = write
        self._publish = publish
        self._created = created
        self._load = load
        self._info: ChannelAudience | None = None
        self.idle_timeout_s = idle_timeout_s
        self._queue_send, self._queue_recv = trio.open_memory_channel[_Queued](256)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publisher)
            with self._queue_send:
                await super().run(task_status=task_status)

    async def on_start(self) -> None:
        # None: the channel was deleted; its events then reach nobody until the actor idles out.
        self._info = await self._load()

    async def handle(self, msg: ChannelMsg) -> None:
        match msg:
            case Post(new, reply):
                try:
                    pending = await self.store.submit(self._write, self.store.ids.next(), new)
                except StoreClosed as e:
                    reply.fail(e)
                    return
                await self._to_publisher(_Queued(pending, None, reply))
            case Publish(event):
                await self._to_publisher(_Queued(None, event, None))
            case Fault():
                raise RuntimeError(f"fault injected into {self.key}")

    async def _to_publisher(self, item: _Queued) -> None:
        try:
            self._queue_send.send_nowait(item)  # no checkpoint while the queue has room
        except trio.WouldBlock:
            await self._queue_send.send(item)

    async def _publisher(self) -> None:
        while True:
            # Take what is already queued without a scheduler pass per item: a commit batch
            # finishes many posts at once, and publishing them together lets every
            # connection's writer send them in one write instead of one write per message.
            try:
                item = self._queue_recv.receive_nowait()
            except trio.WouldBlock:
                try:
                    item = await self._queue_recv.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            event = item.event
            if item.pending is not None:
                assert item.reply is not None
                if not item.pending.done.is_set():
                    await item.pending.done.wait()
                try:
                    posted = item.pending.result_now()
                except Exception as e:  # the write's own error (or StoreClosed) is the poster's
                    item.reply.fail(e)
                    continue
                item.reply.send(posted)
                event = self._created(posted.message) if posted.created else None
            if event is not None and self._info is not None:
                # The last event this task has before it waits: each connection writes at once,
                # right after its delivery, rather than all of them after the loop (the first
                # receivers of 1000 got the event ~3 ms later that way, at 10 events/s). While
                # more are queued, the writes wait for the flusher's pass, one per connection
                # for all of them.
                write_now = self._queue_recv.statistics().current_buffer_used == 0
                await self._publish(self._info, event, write_now)
