"""The broker client: one Redis connection pool per process, a batching publisher and one
pub/sub connection whose subscriptions follow what local sessions need.

Publishing never blocks the caller: `publish` queues (bounded by `broker_publish_queue`; when
full the publication is dropped, policy "drop newest, then tell"), and one task sends what is
queued in pipelines of up to PUBLISH_BATCH. A topic that lost a publication (a full queue, a
failed pipeline) gets a gap notice (`GAP`) as soon as Redis takes publications again: the other
nodes resync the sessions that needed it, as for what they lose themselves, so nothing is lost
without a resync. Receiving: one task reads the pub/sub connection
and hands each message to a bounded inbox (`broker_queue`). coredis's own queue is unbounded,
but this task empties it as fast as messages arrive and does nothing else, so what waits is in
the inbox. When the inbox is full the node has fallen behind: policy "resync", the inbox is
emptied and `on_behind` is told every topic whose messages were dropped (relay.cluster.fanout
closes the sessions that needed them).

Resource handling: `run()` owns the publisher and the subscriber; the client itself is opened
by `open_broker` at the top of the task tree (relay.services) and closed after them.

Error handling: a lost pub/sub connection means messages were missed: `on_behind` hears every
subscribed topic, then the subscriber reconnects with backoff and subscribes again. A failed
publish batch is dropped and counted, and its topics get gap notices (above).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import coredis
import trio

from relay.cluster import topiclog
from relay.cluster.topiclog import Mark
from relay.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from relay.config import Settings

log = logging.getLogger("relay.cluster")

PUBLISH_BATCH = 256  # publications per pipeline (77k/s at 64 on this machine, 5.8k/s one by one)
SUBSCRIBE_TIMEOUT_S = 30.0
SYNC_BATCH = 1000  # topics per sync script call
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0

# (trio time it arrived, topic, payload, its log mark: on a logged topic, relay.cluster.topiclog)
Received = tuple[float, str, bytes, Mark | None]
SEPARATOR = b"|"  # never in a node id (relay.config.NodeId)
# The payload of a gap notice: "this node lost a publication on this topic". An envelope
# (msgpack, relay.cluster.envelope) never starts with a zero byte.
GAP = b"\x00gap"


def frame(node_id: str, payload: bytes) -> bytes:
    """A publication as it goes to Redis: the publisher's node id, then the payload, so that a
    node drops its own publications before decoding or queueing them."""
    return node_id.encode() + SEPARATOR + payload


def unframe(data: bytes) -> tuple[bytes, bytes]:
    """(node id, payload) of a publication; raises ValueError if it has no header."""
    node, separator, payload = data.partition(SEPARATOR)
    if not separator:
        raise ValueError("a publication without its node header")
    return node, payload


class FellBehind(Exception):
    """The watchdog's probes come back later than `broker_max_lag_s`."""


def default_node_id() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return f"{host[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


class Broker:
    def __init__(self, redis: coredis.Redis[bytes], settings: Settings) -> None:
        self.redis = redis
        self.node_id = settings.node_id or default_node_id()
        # (topic, framed data, publication id: 0 unless on a logged topic)
        self._outbox_send, self._outbox_recv = trio.open_memory_channel[tuple[str, bytes, int]](
            settings.broker_publish_queue
        )
        self.topic_log = settings.broker_topic_log  # entries kept per logged topic
        # Topic logs only serve a RESUME on another node: without that, plain PUBLISH.
        self.logging = settings.resume_anywhere
        self._publish_script = redis.register_script(topiclog.PUBLISH_SCRIPT)
        self._sync_script = redis.register_script(topiclog.SYNC_SCRIPT)
        # Told each logged publication of this node that was dropped (topic, pub id), and the
        # topics the subscription left (their counts are stale from then on).
        self.on_lost: Callable[[str, int], None] = lambda topic, pub: None
        self.on_unsubscribed: Callable[[set[str]], None] = lambda topics: None
        self._to_sync: set[str] = set()  # subscribed logged topics to sync (`_sync_forever`)
        self._sync_wake = trio.Event()
        self.syncs = 0  # topics synced (relay.cluster.topiclog.SYNC_SCRIPT)
        self._inbox_send, self.inbox = trio.open_memory_channel[Received](settings.broker_queue)
        self.max_lag_s = settings.broker_max_lag_s
        # This node's own topic: the watchdog's probes go round through Redis on it.
        self.probe_topic = f"relay:n:{self.node_id}"
        self.lag_s = 0.0  # how late the latest probe came back
        self._heard_up_to = 0.0  # when the latest probe that came back was sent (Trio time)
        self.wanted: set[str] = {self.probe_topic}  # topics local sessions need, and the probe's
        # Topics whose other nodes' publications bypass the inbox and go to their handler (sync,
        # quick): the owners of voice channels and byte-relay ids (relay.cluster.voice, .relayids).
        self.direct: dict[str, Callable[[bytes], None]] = {}
        self.subscribed: set[str] = set()  # topics the pub/sub connection is subscribed to
        self._wanted_changed = trio.Event()
        # Told the topics whose messages were lost (inbox overflow, lost connection); sync.
        self.on_behind: Callable[[set[str]], None] = lambda topics: None
        self.connected = False
        self.published = 0
        self.publish_dropped = 0  # queue full or a failed pipeline
        self.gaps: set[str] = set()  # topics that lost a publication, their notice not yet sent
        self.gap_notices = 0  # gap notices sent
        self.received = 0  # other nodes' publications heard
        self.own_skipped = 0  # this node's own publications heard back and dropped unread
        self._mark = self.node_id.encode() + SEPARATOR
        self.resyncs = 0  # times messages were lost and on_behind was told

    # -- publishing ------------------------------------------------------------------------------

    def _logged(self, topic: str) -> bool:
        return self.logging and topiclog.logged(topic)

    def publish(self, topic: str, data: bytes, pub: int = 0, *, log_it: bool = True) -> None:
        """Queue a publication (never blocks); dropped and counted when the queue is full.
        Sent framed with this node's id (`frame`); on a logged topic (relay.cluster.topiclog)
        through the log unless `log_it` is false, `pub` its id among this node's
        publications."""
        if not log_it:
            pub = -1  # a plain PUBLISH even on a logged topic
        try:
            self._outbox_send.send_nowait((topic, self._mark + data, pub))
        except trio.WouldBlock:
            self.publish_dropped += 1
            if pub > 0:
                self.on_lost(topic, pub)
            if topic != self.probe_topic:  # a lost probe is the watchdog's business
                self.gaps.add(topic)
            if self.publish_dropped % 1000 == 1:
                log.warning("broker publish queue full: dropping", extra={"topic": topic})

    async def _publish_forever(self) -> None:
        recv = self._outbox_recv
        while True:
            if self.gaps:
                await self._send_gap_notices()
            first: tuple[str, bytes, int] | None = None
            # While notices wait (Redis failed), retry them even if nothing else is published.
            with trio.move_on_after(RECONNECT_MIN_S if self.gaps else math.inf):
                try:
                    first = await recv.receive()
                except trio.EndOfChannel:
                    return
            if first is None:
                continue
            batch = [first]
            while len(batch) < PUBLISH_BATCH:
                try:
                    batch.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
            # Logged topics' publications in one script call (offsets, logs, PUBLISH), placed
            # where the first of them was: a topic's publications keep their order.
            logs = [(t, pub, data) for t, data, pub in batch if pub >= 0 and self._logged(t)]
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for topic, data, pub in batch:
                        if pub < 0 or not self._logged(topic):
                            pipe.publish(topic, data)
                        elif logs:
                            args: list[str | int | bytes] = [
                                self.topic_log,
                                topiclog.LOG_TTL_S * 1000,
                                topiclog.new_epoch(),
                                topiclog.PREFIX,
                                topiclog.pack(logs),
                            ]
                            self._publish_script(keys=[], args=args, client=pipe)
                            logs = []
                self.published += len(batch)
            except (coredis.exceptions.RedisError, OSError) as e:
                self.publish_dropped += len(batch)
                self.gaps.update(topic for topic, _, _ in batch)
                for topic, _, pub in batch:
                    if pub > 0:
                        self.on_lost(topic, pub)
                log.warning("broker publish failed", extra={"error": str(e), "n": len(batch)})
                await trio.sleep(RECONNECT_MIN_S)

    async def _send_gap_notices(self) -> None:
        gaps, self.gaps = self.gaps, set()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for topic in gaps:
                    pipe.publish(topic, self._mark + GAP)
            self.gap_notices += len(gaps)
        except (coredis.exceptions.RedisError, OSError) as e:
            self.gaps |= gaps
            log.warning("broker gap notices failed", extra={"error": str(e), "n": len(gaps)})

    # -- subscribing -----------------------------------------------------------------------------

    def want(self, topics: Iterable[str]) -> None:
        """The topics local sessions need now; the subscriber catches up (subscribes to the
        new ones, unsubscribes from the rest) without blocking the caller."""
        topics = {*topics, self.probe_topic, *self.direct}
        if topics != self.wanted:
            self.wanted = topics
            self._wanted_changed.set()

    def listen(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Hand other nodes' publications on `topic` to `handler` (called in the reading task:
        it must not block), from when the subscription is confirmed until `unlisten`."""
        self.direct[topic] = handler
        self.want(self.wanted)

    def unlisten(self, topic: str) -> None:
        if self.direct.pop(topic, None) is not None:
            self.want(self.wanted - {topic})

    def sync_again(self, topics: Iterable[str]) -> None:
        """Sync these topics again (their counts were dropped) if they are subscribed; the
        others are synced when they are subscribed again."""
        again = {t for t in topics if t in self.subscribed and self._logged(t)}
        if again:
            self._to_sync |= again
            self._sync_wake.set()

    def drain(self) -> set[str]:
        """Empty the inbox; the topics of what was in it."""
        topics: set[str] = set()
        while True:
            try:
                topics.add(self.inbox.receive_nowait()[1])
            except trio.WouldBlock:
                return topics

    def _behind(self, topics: set[str]) -> None:
        self.resyncs += 1
        self.on_behind(topics)

    async def _subscribe_forever(self) -> None:
        backoff = RECONNECT_MIN_S
        while True:
            began = trio.current_time()
            try:
                await self._subscribed_session()
            except Exception as e:  # any failure of the connection: resync, then retry
                log.warning("broker subscription lost", extra={"error": repr(e)})
            except BaseExceptionGroup as group:
                # coredis's pub/sub tasks may add their own Cancelled to a failure's group (they
                # were cancelled by it): still a failure. A cancellation of this task alone is
                # raised again (and at the next checkpoint anyway).
                if group.split(trio.Cancelled)[1] is None:
                    raise
                log.warning("broker subscription lost", extra={"error": repr(group)})

            if trio.current_time() - began > RECONNECT_MAX_S:
                backoff = RECONNECT_MIN_S  # it had been working: not a failing Redis
            self.connected = False
            lost = self.subscribed | self.drain()
            self.on_unsubscribed(self.subscribed)
            self.subscribed = set()
            if lost:
                self._behind(lost)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    async def _subscribed_session(self) -> None:
        # retry_policy=None: coredis would otherwise reconnect and resubscribe by itself,
        # silently, and the messages published meanwhile would be lost unnoticed.
        async with (
            self.redis.pubsub(
                ignore_subscribe_messages=True,
                retry_policy=None,
                # Thousands of topics at once (sessions reconnecting) on a busy node: coredis's
                # default 1 s for their acknowledgements would fail the connection.
                subscription_timeout=SUBSCRIBE_TIMEOUT_S,
            ) as pubsub,
            trio.open_nursery() as nursery,
        ):
            self.connected = True
            self._heard_up_to = trio.current_time()
            nursery.start_soon(self._read, pubsub)
            nursery.start_soon(self._watch)
            while True:
                self._wanted_changed = trio.Event()
                wanted = set(self.wanted)
                new, gone = wanted - self.subscribed, self.subscribed - wanted
                if gone:
                    # Forgotten at once: what still arrives for them is ignored (`_read`).
                    self.subscribed -= gone
                    self.on_unsubscribed(gone)
                    await pubsub.unsubscribe(*sorted(gone))
                if new:
                    self.subscribed |= new  # before: its first messages may beat the ack
                    await pubsub.subscribe(*sorted(new))
                    self.sync_again(new)
                if self.wanted == wanted:
                    await self._wanted_changed.wait()

    async def _read(self, pubsub: coredis.patterns.pubsub.PubSub[bytes]) -> None:
        send = self._inbox_send
        while True:
            message = await pubsub.get_message()
            if message is None or message["type"] != "message":
                continue  # subscription acknowledgements
            channel, data = message["channel"], message["data"]
            topic = channel.decode() if isinstance(channel, bytes) else str(channel)
            if topic not in self.subscribed:
                continue
            assert isinstance(data, bytes)
            if topic == self.probe_topic:
                self._probe_heard(data)
                continue
            handler = self.direct.get(topic)
            if handler is not None:
                if not data.startswith(self._mark) and not data.endswith(SEPARATOR + GAP):
                    _call(handler, data)  # no resync for voice and byte-relay (lossy) topics
                continue
            try:
                marked = topiclog.parse(data)
                if marked is not None:  # a logged topic's: counted even when it is this node's
                    mark, data = marked
                elif data.startswith(self._mark):
                    self.own_skipped += 1  # delivered here when it was published
                    continue
                node, payload = unframe(data)
            except ValueError:
                log.warning("broker message without a node header", extra={"topic": topic})
                continue
            if marked is not None:
                if payload == topiclog.SYNC:
                    pass  # a count's start, no publication
                elif node == self._mark[:-1]:
                    payload = topiclog.OWN  # only its mark counts (relay.cluster.fanout)
                else:
                    self.received += 1
                try:
                    send.send_nowait((trio.current_time(), topic, payload, mark))
                except trio.WouldBlock:
                    self._behind({topic} | self.drain())
                continue
            if payload == GAP:  # another node lost a publication here: resync its readers
                self._behind({topic})
                continue
            self.received += 1
            try:
                send.send_nowait((trio.current_time(), topic, payload, None))
            except trio.WouldBlock:
                self._behind({topic} | self.drain())

    async def _sync_forever(self) -> None:
        # A task of its own: a script call cancelled with the pub/sub connection's nursery
        # (coredis) would not stay within it.
        # Every quarter of the logs' ttl, every subscribed logged topic again: a quiet topic's
        # log must not expire under sessions that would RESUME from it.
        renew_at = trio.current_time() + topiclog.LOG_TTL_S / 4
        while True:
            with trio.move_on_at(renew_at):
                await self._sync_wake.wait()
            self._sync_wake = trio.Event()
            if trio.current_time() >= renew_at:
                renew_at = trio.current_time() + topiclog.LOG_TTL_S / 4
                self._to_sync |= {t for t in self.subscribed if self._logged(t)}
            topics, self._to_sync = self._to_sync & self.subscribed, set()
            for start in range(0, len(topics), SYNC_BATCH):
                await self._sync(sorted(topics)[start : start + SYNC_BATCH])

    async def _sync(self, topics: list[str]) -> None:
        """Publish the logged `topics`' current marks (topiclog.SYNC_SCRIPT): heard after
        everything published before, they start this node's counts. A failure leaves them
        uncounted (the sessions that need them are not resumable elsewhere) and is logged."""
        if not topics:
            return
        args: list[str | int | bytes] = [
            topiclog.LOG_TTL_S * 1000,
            topiclog.new_epoch(),
            topiclog.PREFIX,
            self._mark + topiclog.SYNC,
            *topics,
        ]
        try:
            await self._sync_script(keys=[], args=args)
            self.syncs += len(topics)
        except (coredis.exceptions.RedisError, OSError) as e:
            log.warning("topic logs not synced", extra={"error": str(e), "n": len(topics)})

    async def _watch(self) -> None:
        """The watchdog: a probe through Redis every quarter of `broker_max_lag_s`; when the
        latest one heard back is older than that (plus the probe interval), what this node hears
        is that late: everything queued for it in Redis and in its socket is dropped with the
        connection (FellBehind), and `_subscribe_forever` resyncs and reconnects."""
        every = self.max_lag_s / 4
        while True:
            self.publish(self.probe_topic, repr(trio.current_time()).encode())
            await trio.sleep(every)
            late = trio.current_time() - self._heard_up_to
            if late > self.max_lag_s + every:
                raise FellBehind(f"the broker's messages arrive {late:.1f} s late")

    def _probe_heard(self, data: bytes) -> None:
        try:
            sent = float(unframe(data)[1])
        except ValueError:
            return
        self._heard_up_to = max(self._heard_up_to, sent)
        self.lag_s = trio.current_time() - sent

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish_forever)
            nursery.start_soon(self._subscribe_forever)
            nursery.start_soon(self._sync_forever)
            task_status.started()


def _call(handler: Callable[[bytes], None], data: bytes) -> None:
    try:
        handler(unframe(data)[1])
    except Exception:  # a bad message or a handler's bug must not end the subscription
        log.warning("broker direct handler failed", exc_info=True)


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    """The Redis client of the process (one connection pool), checked with a PING.

    Raises:
        ConfigError: the broker does not answer (start-up stops with this one line)."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url)
    async with client:
        try:
            await client.ping()
        except (coredis.exceptions.RedisError, OSError) as e:
            where = url.split("@")[-1]  # no password in the message
            raise ConfigError(f"broker {where} (RELAY_BROKER) does not answer: {e}") from None
        yield client
