"""Channel owners across processes: each channel's messages get their ids and their order from
one process at a time (its *owner*), and a post that arrives anywhere else is forwarded there.

The API the cluster fan-out calls (the same shapes as `relay.chat.fanout.Fanout.post` and
`post_with`, so its `post`/`post_with` only delegate):

- `await owners.post(new) -> Asked[Posted]`: queue a new message; returns once it is queued,
  in order with everything this process queued before; `answer()` is its outcome once committed
  by the owner (wherever that is).
- `await owners.post_with(new, on_answer, deadline=...) -> Reply[Posted]`: the same, with the
  outcome handed to `on_answer` (which must not raise or block).
- `await owners.publish(channel_id, event)`: a channel event (relay.chat.events: an edit, a
  reaction, typing) published by the owner's actor, in order with the channel's messages
  (`Fanout.to_channel`); returns once queued here.
- `owners.owns(channel_id)`: whether this process is the channel's owner now.
- `await nursery.start(owners.run)`: the tasks below; cancelling it ends them and releases
  every lease this process holds (another process can take over at once).

Wiring (cluster mode, in the composition root): `ChannelOwners(redis, store, node_id,
new_actor, ttl_s=settings.lease_ttl_s, forward_timeout_s=settings.send_timeout_s)`, where
`new_actor(channel_id, write)` returns `ChannelActor(f"channel:{channel_id}", store, publish,
created, partial(store.read, audience.channel_audience, channel_id),
idle_timeout_s=settings.actor_idle_s, write=write)` with `publish` handing the channel's event
to the broker (every node delivers it to its own sessions) and `created` the hub's; the
cluster fan-out's `post`, `post_with` and `to_channel` call `post`, `post_with` and `publish`.

Theory of operation. Every post (and channel event) goes through this process's one *router*
(an actor, so one queue in arrival order). For a channel this process owns, the router hands
the post to the channel's local actor (relay's own `ChannelActor`, built by `new_actor` with a
fenced write).
For any other channel it runs one script in Redis per post, in pipelined batches: if the lease
`channel:<id>` is held, push the request onto the holder's request list
(`<prefix>node:<holder>:requests`) and answer the holder; if nobody holds it, this process takes
the lease, claims the channel in storage (`fencing.claim`: its token becomes the newest, and
the channel's last id is read after it, so its own ids continue above every earlier owner's)
and starts the channel's actor. The owner reads its request list in batches, hands each request
to its channel's actor in list order and pushes the answer onto the requester's reply list
(`<prefix>node:<requester>:replies`), also in pipelined batches. A request carries a deadline:
the owner skips one that has passed, and the requester answers `channel_busy` (retry with the
same nonce) for any it has heard nothing about by then.

Order: one process assigns a channel's ids at a time, in its actor's inbox order; requests from
one process reach the owner in the order that process queued them (one list, pushed in order by
one task). A post refused because ownership moved (the owner answers `not_owner`, or its fenced
write raised StaleOwner, so nothing was stored) is routed again: it queues behind what is
already queued, so of one poster's sends in flight during a takeover, a refused one may commit
after a later one (docs/ownership.md).

Resource handling: `run()` owns the router, the request reader, the reply reader, the reply
writer, the deadline sweeper and one task per owned channel (holding its lease, running its
actor). Replies wait in a bounded queue (REPLY_QUEUE; when full, the answer is dropped and its
requester answers `channel_busy` at its deadline). Redis lists of a process's requests and
replies expire `LIST_TTL_S` after their last push, so those of a dead process go away.

Error handling: a Redis error while forwarding fails that batch's posts with `channel_busy`;
in a reader it is logged and the reader tries again after a pause. A channel actor that crashes
ends its ownership (the lease is released; the next post takes it again).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from functools import partial
from typing import TYPE_CHECKING, cast

import coredis
import msgspec
import outcome
import trio

from actors.base import Actor, Reply
from actors.channel import ChannelActor, Post, Publish
from actors.errors import ActorStopped
from relay.chat.events import ChatEvent, Event
from relay.chat.messages import channel_busy
from relay.cluster.lease import Leases
from relay.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RelayError,
    RequestTimeout,
    Unavailable,
    Unprocessable,
)
from relay.storage import fencing
from relay.storage.messages import NewMessage, Posted
from relay.storage.sqlite.db import StoreClosed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlite_utils import Database

    from actors.base import Asked
    from relay.cluster.lease import Lease
    from relay.storage.sqlite.db import Store

log = logging.getLogger("relay.cluster")

BATCH = 64  # requests or replies per pipeline / per read
REPLY_QUEUE = 4096
LIST_TTL_S = 60.0
READ_BLOCK_S = 1.0  # a reader's blocking pop; cancellation ends it at once anyway
RETRY_AFTER_S = 0.02  # before routing a refused post again (ownership is moving)
SWEEP_EVERY_S = 0.1
# A Redis round trip that takes longer fails (TooSlowError, handled as a Redis error): a Redis
# that hangs rather than refuses must not stall the router and every post behind it.
REDIS_TIMEOUT_S = 2.0

# KEYS[1]: the channel's lease. ARGV: key prefix, the list's ttl, then the channel's requests.
# The holder's request list gets them only while the lease is held, atomically with the check.
_FORWARD = """
local value = redis.call('GET', KEYS[1])
if not value then return false end
local holder = string.match(value, '^(.*):%d+$')
local list = ARGV[1] .. 'node:' .. holder .. ':requests'
redis.call('RPUSH', list, unpack(ARGV, 3))
redis.call('PEXPIRE', list, ARGV[2])
return holder
"""


# -- the wire ----------------------------------------------------------------------------------


class WireError(msgspec.Struct, frozen=True, kw_only=True):
    """An error that crosses to the requester: a RelayError by class name, or `not_owner`."""

    kind: str  # a RelayError class name, "not_owner" (route again) or "internal"
    message: str
    code: str = ""
    fields: dict[str, str] | None = None
    retry_after_s: float = 0.0  # RateLimited
    limit: int = 0
    limit_name: str = ""


class ForwardedPost(msgspec.Struct, frozen=True, tag="post", kw_only=True):
    """A post for the owner: `new` with its answer due on `requester`'s reply list."""

    request_id: int
    requester: str
    deadline_ms: int  # Unix time: the requester answers channel_busy after it
    new: NewMessage


class ForwardedEvent(msgspec.Struct, frozen=True, tag="event", kw_only=True):
    """A channel event for the owner to publish in order; answered with an empty Answer."""

    request_id: int
    requester: str
    deadline_ms: int
    channel_id: int
    event: Event


class Answer(msgspec.Struct, frozen=True, tag="answer", kw_only=True):
    """The owner's answer to `request_id`: `posted`, or `error`."""

    request_id: int
    posted: Posted | None = None
    error: WireError | None = None


Envelope = ForwardedPost | ForwardedEvent | Answer
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes) -> Envelope:
    """Raises msgspec.DecodeError or msgspec.ValidationError for what is not an envelope."""
    return _decoder.decode(data)


class NotOwner(Exception):
    """The process a post reached does not own its channel (any more): nothing was stored."""


_RELAY_ERRORS: dict[str, type[RelayError]] = {
    cls.__name__: cls
    for cls in (
        BadRequest,
        Forbidden,
        NotFound,
        Conflict,
        Gone,
        PayloadTooLarge,
        RequestTimeout,
        Unprocessable,
        Unavailable,
    )
}


def wire_error(exc: BaseException) -> WireError:
    """An exception raised by a post, as it crosses to the requester."""
    if isinstance(exc, NotOwner | fencing.StaleOwner):
        return WireError(kind="not_owner", message=str(exc))
    if isinstance(exc, ActorStopped | trio.TooSlowError):
        # The owner's actor stopped (its lease lost, a crash) or was full past the deadline:
        # the write may have committed, so no second try here; the poster retries with its
        # nonce (on a single process a stopped actor means a deleted channel, not here).
        busy = channel_busy()
        return WireError(kind="Unavailable", message=busy.message, code=busy.code)
    if isinstance(exc, RateLimited):
        return WireError(
            kind="RateLimited",
            message=exc.message,
            code=exc.code,
            retry_after_s=exc.retry_after_s,
            limit=int(exc.headers["X-RateLimit-Limit"]),
            limit_name=exc.limit_name,
        )
    if isinstance(exc, StoreClosed):
        return WireError(
            kind="Unavailable", message="the server is shutting down", code="unavailable"
        )
    if isinstance(exc, RelayError) and type(exc).__name__ in _RELAY_ERRORS:
        fields = dict(exc.fields) if exc.fields else None
        return WireError(kind=type(exc).__name__, message=exc.message, code=exc.code, fields=fields)
    return WireError(kind="internal", message="the message could not be stored")


def error_of(wire: WireError) -> Exception:
    """The exception a requester raises for an owner's error."""
    if wire.kind == "not_owner":
        return NotOwner(wire.message)
    if wire.kind == "RateLimited":
        error = RateLimited(
            wire.message,
            limit=wire.limit,
            retry_after_s=wire.retry_after_s,
            limit_name=wire.limit_name,
        )
        error.code = wire.code
        return error
    cls = _RELAY_ERRORS.get(wire.kind)
    if cls is None:
        return RelayError(wire.message)
    return cls(wire.message, code=wire.code or None, fields=wire.fields)


# -- the router ---------------------------------------------------------------------------------


class _Route(msgspec.Struct):
    """A post (`new`, whose `reply` is answered once, wherever it commits) or a channel event
    to publish (`event`) on its way to the channel's owner."""

    channel_id: int
    new: NewMessage | None
    event: ChatEvent | None
    reply: Reply[Posted] | None
    deadline: float  # Trio time

    def give_up(self, error: Exception) -> None:
        if self.reply is not None:
            self.reply.fail(error)
        else:  # an event nobody waits for: its channel's audience misses it live
            log.warning("a channel event was not published", extra={"channel": self.channel_id})


class _Router(Actor[_Route]):
    """Takes every post of this process in order and sends each to its channel's owner."""

    inbox_size = 1024
    batch_max = BATCH

    def __init__(self, owners: ChannelOwners) -> None:
        super().__init__("channel-owners")
        self.owners = owners
        self._batch: list[_Route] = []

    async def handle(self, msg: _Route) -> None:
        owners = self.owners
        # Keyed by id: the route is alive (in this inbox) while its key is there.
        if owners._queued.pop(id(msg), None) is None:
            return  # given up by the sweeper while it waited here
        if not self._batch:
            owned = owners._owned.get(msg.channel_id)
            if owned is not None and owned.actor.accepting:
                await owners._post_local(owned, msg)
                return
        self._batch.append(msg)
        if len(self._batch) >= BATCH or self._inbox.statistics().current_buffer_used == 0:
            batch, self._batch = self._batch, []
            try:
                await owners._forward(batch)
            except Exception:  # a bug: these posts fail, the router (every post) goes on
                log.error("routing posts failed", exc_info=True)
                for route in batch:
                    route.give_up(channel_busy())


# -- the component -----------------------------------------------------------------------------


class _Owned:
    __slots__ = ("actor", "lease")

    def __init__(self, actor: ChannelActor, lease: Lease) -> None:
        self.actor = actor
        self.lease = lease


class ChannelOwners:
    """This process's part in channel ownership: see the module doc.

    Args:
        redis: a client with `decode_responses=False`, opened by the caller.
        store: the storage every process shares (fenced writes; the claim).
        node: this process's id, unique in the cluster (no ':').
        new_actor: builds a channel's actor for this process as owner, given the channel id
            and the fenced write to pass as `ChannelActor(write=...)`.
        ttl_s: the lease ttl (settings.lease_ttl_s): how long a dead owner's channels wait
            for a new owner.
        forward_timeout_s: `post()`'s deadline (settings.send_timeout_s); `post_with` takes
            the caller's.
    """

    def __init__(
        self,
        redis: coredis.Redis[bytes],
        store: Store,
        node: str,
        new_actor: Callable[[int, Callable[[Database, int, NewMessage], Posted]], ChannelActor],
        *,
        ttl_s: float = 5.0,
        forward_timeout_s: float = 10.0,
        prefix: str = "relay:",
    ) -> None:
        if ":" in node:
            raise ValueError("a node id must not contain ':'")
        self.redis = redis
        self.store = store
        self.node = node
        self.prefix = prefix
        self.forward_timeout_s = forward_timeout_s
        self.leases = Leases(redis, ttl_s=ttl_s, prefix=prefix)
        self._new_actor = new_actor
        self._forward_script = redis.register_script(_FORWARD)
        self._owned: dict[int, _Owned] = {}
        self._router = _Router(self)
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Route] = {}  # forwarded, by request id, until answered
        self._queued: dict[int, _Route] = {}  # waiting for the router, by id(route)
        self._replies_send, self._replies_recv = trio.open_memory_channel[tuple[str, Answer]](
            REPLY_QUEUE
        )
        self._nursery: trio.Nursery | None = None
        self.forwarded = 0  # posts this process sent to another owner
        self.served = 0  # forwarded posts this process committed as owner

    def requests_key(self, node: str) -> str:
        return f"{self.prefix}node:{node}:requests"

    def replies_key(self, node: str) -> str:
        return f"{self.prefix}node:{node}:replies"

    def owned(self) -> int:
        """How many channels this process owns now."""
        return len(self._owned)

    def owns(self, channel_id: int) -> bool:
        owned = self._owned.get(channel_id)
        return owned is not None and owned.actor.accepting

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._router.run)
            nursery.start_soon(self._read_requests)
            nursery.start_soon(self._read_replies)
            nursery.start_soon(self._write_replies)
            nursery.start_soon(self._sweep)
            task_status.started()

    # -- posting -------------------------------------------------------------------------------

    async def post(self, new: NewMessage) -> Asked[Posted]:
        """Queue `new` with its channel's owner (module doc); `answer()` is its outcome."""
        deadline = trio.current_time() + self.forward_timeout_s
        return await self._router.start_ask(partial(self._queue, new, deadline))

    async def publish(self, channel_id: int, event: ChatEvent) -> None:
        """Publish a channel event (an edit, a reaction, typing...) through the channel's
        owner, in order with its messages; returns once queued here. Nobody waits for it: if
        the owner dies with it, its audience misses it live (it committed: history has it)."""
        deadline = trio.current_time() + self.forward_timeout_s
        route = _Route(channel_id, None, event, None, deadline)
        self._queued[id(route)] = route
        await self._router.send(route)

    async def post_with(
        self,
        new: NewMessage,
        on_answer: Callable[[outcome.Outcome[Posted]], object],
        *,
        deadline: float,
    ) -> Reply[Posted]:
        """`post`, with the outcome passed to `on_answer`. Raises AskTimeout if it could not
        be queued by `deadline` (Trio time), which also bounds the wait for the owner."""
        if deadline == math.inf:
            deadline = trio.current_time() + self.forward_timeout_s
        return await self._router.start_ask_with(
            partial(self._queue, new, deadline), on_answer, deadline=deadline
        )

    def _queue(self, new: NewMessage, deadline: float, reply: Reply[Posted]) -> _Route:
        """A post's route, known to the sweeper until the router takes it: a router that
        waits on a slow Redis does not keep the posts queued behind it past their deadlines."""
        route = _Route(new.channel_id, new, None, reply, deadline)
        self._queued[id(route)] = route
        return route

    async def _post_local(self, owned: _Owned, route: _Route) -> None:
        """Hand a post or event to the channel's actor here; a post refused by the fence is
        routed again."""
        reply, new = route.reply, route.new

        def answered(result: outcome.Outcome[Posted]) -> None:
            if isinstance(result, outcome.Error) and isinstance(result.error, fencing.StaleOwner):
                self._lose(route.channel_id, owned)
                self._route_again(route)
            else:
                assert reply is not None
                if isinstance(result, outcome.Error) and isinstance(result.error, ActorStopped):
                    result = outcome.Error(channel_busy())  # as `wire_error` says why
                _settle(reply, result)

        try:
            with trio.fail_at(route.deadline):
                if new is None:
                    await owned.actor.send(Publish(route.event))
                else:
                    await owned.actor.start_ask_with(
                        partial(Post, new), answered, deadline=route.deadline
                    )
        except trio.TooSlowError:
            route.give_up(channel_busy())
        except Exception as e:  # stopped meanwhile (ActorStopped) or full past the deadline
            route.give_up(e)

    def _route_again(self, route: _Route) -> None:
        """A post refused because ownership moved (nothing stored): route it again shortly."""
        assert self._nursery is not None
        self._nursery.start_soon(self._requeue, route)

    async def _requeue(self, route: _Route) -> None:
        await trio.sleep(RETRY_AFTER_S)
        self._queued[id(route)] = route
        try:
            self._router.tell(route)
        except Exception:  # full or stopping: the poster retries with its nonce
            del self._queued[id(route)]
            route.give_up(channel_busy())

    async def _forward(self, batch: list[_Route]) -> None:
        """Push the posts to their channels' owners (one script call per channel, all in one
        pipeline); take the channels nobody owns and post those here, in order."""
        now_ms = time.time_ns() // 1_000_000
        now = trio.current_time()
        by_channel: dict[int, list[tuple[int, _Route]]] = {}
        for route in batch:
            by_channel.setdefault(route.channel_id, []).append((next(self._ids), route))
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                holders = await self._push_requests(by_channel, now_ms, now)
        except Exception:
            log.warning("forwarding failed", exc_info=True)
            for routes in by_channel.values():
                for request_id, route in routes:
                    if self._waiting.pop(request_id, None) is not None:
                        route.give_up(channel_busy())
            return
        for (channel_id, routes), holder in zip(by_channel.items(), holders, strict=True):
            if holder is not None:
                self.forwarded += len(routes)
                continue
            # Nobody owns the channel: this process takes it.
            for request_id, _ in routes:
                del self._waiting[request_id]
            owned = await self._take(channel_id)
            for _, route in routes:
                if owned is None:
                    self._route_again(route)  # taken by another meanwhile
                else:
                    await self._post_local(owned, route)

    async def _push_requests(
        self, by_channel: dict[int, list[tuple[int, _Route]]], now_ms: int, now: float
    ) -> list[object]:
        """One pipeline: each channel's requests onto its owner's list; the holders (None:
        nobody owns the channel)."""
        list_ttl_ms = round(LIST_TTL_S * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            results: list[Awaitable[object]] = []
            for channel_id, routes in by_channel.items():
                requests = [
                    encode(self._request(r, i, now_ms + round((r.deadline - now) * 1000)))
                    for i, r in routes
                ]
                results.append(
                    self._forward_script(
                        keys=[self.leases.key(f"channel:{channel_id}")],
                        args=[self.prefix, list_ttl_ms, *requests],
                        client=pipe,
                    )
                )
                # Registered before the pipeline runs: an answer may come back at once.
                for request_id, route in routes:
                    self._waiting[request_id] = route
        return [await result for result in results]

    def _request(self, route: _Route, request_id: int, deadline_ms: int) -> Envelope:
        if route.new is not None:
            return ForwardedPost(
                request_id=request_id,
                requester=self.node,
                deadline_ms=deadline_ms,
                new=route.new,
            )
        assert route.event is not None
        return ForwardedEvent(
            request_id=request_id,
            requester=self.node,
            deadline_ms=deadline_ms,
            channel_id=route.channel_id,
            event=cast("Event", route.event),  # every ChatEvent is one of the union
        )

    # -- owning --------------------------------------------------------------------------------

    async def _take(self, channel_id: int) -> _Owned | None:
        """Become the channel's owner if nobody is (None if another process just did)."""
        owned = self._owned.get(channel_id)
        if owned is not None and owned.actor.accepting:
            return owned
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                lease = await self.leases.acquire(f"channel:{channel_id}", self.node)
        except Exception:  # Redis unreachable: routed again until the deadline
            log.warning("channel lease not acquired", extra={"channel": channel_id}, exc_info=True)
            return None
        if lease is None:
            return None
        assert self._nursery is not None
        try:
            owned = await self._nursery.start(self._own, channel_id, lease)
        except Exception:
            log.error("channel not taken", extra={"channel": channel_id}, exc_info=True)
            return None
        return owned  # type: ignore[no-any-return]

    async def _own(
        self, channel_id: int, lease: Lease, *, task_status: trio.TaskStatus[_Owned]
    ) -> None:
        """Hold the channel's lease and run its actor until it idles out or the lease is lost."""
        owned: _Owned | None = None

        def lost() -> None:
            if owned is not None:
                self._lose(channel_id, owned)

        try:
            # Drain for a third of the ttl: what the actor already queued commits or is
            # refused by the fence; either way each poster hears.
            async with self.leases.hold(lease, on_lost=lost, drain_s=self.leases.ttl_s / 3):
                last = await self.store.write(fencing.claim, channel_id, lease.token)
                self.store.ids.advance_past(last)
                actor = self._new_actor(channel_id, partial(fencing.post, fence=lease.token))
                async with trio.open_nursery() as nursery:
                    await nursery.start(actor.run)
                    owned = _Owned(actor, lease)
                    self._owned[channel_id] = owned
                    task_status.started(owned)
        except Exception:
            if owned is None:
                raise  # not started: to `_take`, through nursery.start
            log.error("channel owner crashed", extra={"channel": channel_id}, exc_info=True)
        finally:
            if owned is not None and self._owned.get(channel_id) is owned:
                del self._owned[channel_id]

    def _lose(self, channel_id: int, owned: _Owned) -> None:
        """This process no longer owns the channel: take no more posts for it."""
        if self._owned.get(channel_id) is owned:
            del self._owned[channel_id]
        owned.actor.close()

    # -- serving forwarded posts ---------------------------------------------------------------

    async def _pop(self, key: str) -> list[bytes]:
        """Up to BATCH items from the head of a list, waiting up to READ_BLOCK_S for one."""
        with trio.fail_after(READ_BLOCK_S + REDIS_TIMEOUT_S):
            popped = await self.redis.blmpop(
                [key], READ_BLOCK_S, coredis.PureToken.LEFT, count=BATCH
            )
        if popped is None:
            return []
        items = popped[1]
        assert isinstance(items, list)
        return [item for item in items if isinstance(item, bytes)]

    async def _read_requests(self) -> None:
        key = self.requests_key(self.node)
        while True:
            try:
                popped = await self._pop(key)
            except Exception:
                log.warning("reading forwarded posts failed", exc_info=True)
                await trio.sleep(READ_BLOCK_S)
                continue
            for data in popped:
                try:
                    request = decode(data)
                except msgspec.DecodeError:
                    log.error("a forwarded post that is not an envelope was dropped")
                    continue
                if isinstance(request, ForwardedPost | ForwardedEvent):
                    await self._serve(request)

    async def _serve(self, request: ForwardedPost | ForwardedEvent) -> None:
        left_s = (request.deadline_ms - time.time_ns() // 1_000_000) / 1000
        if left_s <= 0:
            return  # its requester has answered channel_busy already
        channel_id = (
            request.new.channel_id if isinstance(request, ForwardedPost) else request.channel_id
        )
        owned = self._owned.get(channel_id)
        if owned is None or not owned.actor.accepting:
            self._answer(request, outcome.Error(NotOwner(f"{self.node} does not own it")))
            return
        if isinstance(request, ForwardedEvent):
            try:
                with trio.fail_after(left_s):
                    await owned.actor.send(Publish(request.event))
            except (trio.TooSlowError, ActorStopped) as e:
                self._answer(request, outcome.Error(e))
            else:
                self._answer(request, outcome.Value(None))
            return

        def answered(result: outcome.Outcome[Posted]) -> None:
            if isinstance(result, outcome.Error) and isinstance(result.error, fencing.StaleOwner):
                assert owned is not None
                self._lose(channel_id, owned)
            elif isinstance(result, outcome.Value):
                self.served += 1
            self._answer(request, result)

        try:
            await owned.actor.start_ask_with(
                partial(Post, request.new), answered, deadline=trio.current_time() + left_s
            )
        except Exception as e:
            self._answer(request, outcome.Error(e))

    def _answer(
        self, request: ForwardedPost | ForwardedEvent, result: outcome.Outcome[Posted | None]
    ) -> None:
        if isinstance(result, outcome.Value):
            answer = Answer(request_id=request.request_id, posted=result.value)
        else:
            assert isinstance(result, outcome.Error)
            answer = Answer(request_id=request.request_id, error=wire_error(result.error))
        try:
            self._replies_send.send_nowait((request.requester, answer))
        except trio.WouldBlock:  # its requester answers channel_busy at the deadline
            log.warning("a forwarded post's answer was dropped: the reply queue is full")

    async def _write_replies(self) -> None:
        list_ttl_ms = round(LIST_TTL_S * 1000)
        async for first in self._replies_recv:
            batch = [first]
            while len(batch) < BATCH:
                try:
                    batch.append(self._replies_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                with trio.fail_after(REDIS_TIMEOUT_S):
                    await self._push_replies(batch, list_ttl_ms)
            except Exception:  # their requesters answer channel_busy at the deadline
                log.warning("answers to forwarded posts were lost", exc_info=True)

    async def _push_replies(self, batch: list[tuple[str, Answer]], list_ttl_ms: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for requester in {requester for requester, _ in batch}:
                key = self.replies_key(requester)
                pipe.rpush(key, [encode(a) for r, a in batch if r == requester])
                pipe.pexpire(key, list_ttl_ms)

    # -- answers to this process's forwarded posts -----------------------------------------------

    async def _read_replies(self) -> None:
        key = self.replies_key(self.node)
        while True:
            try:
                popped = await self._pop(key)
            except Exception:
                log.warning("reading answers failed", exc_info=True)
                await trio.sleep(READ_BLOCK_S)
                continue
            for data in popped:
                try:
                    answer = decode(data)
                except msgspec.DecodeError:
                    log.error("an answer that is not an envelope was dropped")
                    continue
                if isinstance(answer, Answer):
                    self._answered(answer)

    def _answered(self, answer: Answer) -> None:
        route = self._waiting.pop(answer.request_id, None)
        if route is None:
            return  # answered channel_busy at its deadline already
        if answer.error is None:
            if route.reply is not None and answer.posted is not None:
                route.reply.send(answer.posted)
            return  # an event: published
        error = error_of(answer.error)
        if isinstance(error, NotOwner):
            self._route_again(route)
        else:
            route.give_up(error)

    async def _sweep(self) -> None:
        """Answer channel_busy for forwarded posts past their deadline (owner dead or slow)."""
        while True:
            await trio.sleep(SWEEP_EVERY_S)
            now = trio.current_time()
            for request_id in [i for i, r in self._waiting.items() if r.deadline <= now]:
                self._waiting.pop(request_id).give_up(channel_busy())
            for key in [k for k, r in self._queued.items() if r.deadline <= now]:
                self._queued.pop(key).give_up(channel_busy())


def _settle(reply: Reply[Posted], result: outcome.Outcome[Posted]) -> None:
    if isinstance(result, outcome.Value):
        reply.send(result.value)
    else:
        assert isinstance(result, outcome.Error)
        error = result.error
        reply.fail(error if isinstance(error, Exception) else RuntimeError(repr(error)))
