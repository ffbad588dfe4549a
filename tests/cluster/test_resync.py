"""A node that falls behind the broker resyncs: the sessions that needed what it lost are ended
and closed with 4014, and what waits for it stays bounded (docs/cluster.md).

The node under test is a real hub, broker and broker fan-out on a real server's store, with
real Redis; its gateway sessions are attached to a sink that records what the connection would
have been told (the gateway endpoint has no part in this).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import coredis
import trio
from coredis.tokens import PureToken

from relay.chat.events import PresenceUpdateEvent
from relay.chat.objects import Presence
from relay.chat.views import Views
from relay.cluster import envelope
from relay.cluster.broker import Broker, frame
from relay.cluster.envelope import ServerCast, server_topic
from relay.cluster.fanout import BrokerFanout
from relay.cluster.owners import ChannelOwners
from relay.gateway.hub import Hub
from relay.gateway.session import Session
from relay.protocol.gateway import Close
from relay.storage import audience
from tests.cluster.test_two_servers import eventually
from tests.conftest import settings_for, start_server
from tests.gateway.test_gateway import setup_pair

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.realservers import RedisServer

QUEUE = 16


@dataclass
class RecordingSink:
    frames: list[bytes] = field(default_factory=list)
    closed: tuple[int, str] | None = None

    def send_frame(self, frame: bytes, write_now: bool, /) -> bool:
        self.frames.append(frame)
        return True

    def slow_consumer(self) -> None:
        raise AssertionError("never full")

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


@dataclass
class SecondNode:
    hub: Hub
    broker: Broker
    fanout: BrokerFanout
    redis: coredis.Redis[bytes]
    server_id: int
    sink: RecordingSink
    session: Session


@asynccontextmanager
async def second_node(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer, **overrides: object
) -> AsyncIterator[SecondNode]:
    """A real server with a guild (alice, bob), and a second node on its store where bob has a
    session; its broker runs, its fan-out's tasks do not (the test starts them, or not)."""
    running, stop = await start_server(nursery, settings_for(tmp_path / "a", broker=redis.url))
    _, bob, guild = await setup_pair(running)
    settings = settings_for(tmp_path / "b", broker=redis.url, broker_queue=QUEUE, **overrides)
    store = running.runtime.store
    hub = Hub(store, settings, Views(partial(store.read, audience.server_snapshot)))
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    async with client, trio.open_nursery() as inner:
        broker = Broker(client, settings)
        # Its channel owners are not run: nothing here posts.
        owners = ChannelOwners(client, store, broker.node_id, hub.channel_actor)
        fanout = BrokerFanout(hub, broker, owners, settings)
        await inner.start(broker.run)
        session = Session(int(bob.user_id), 0, "json", replay_size=100, replay_age_s=60)
        sink = RecordingSink()
        session.sink = sink
        server_id = int(guild["id"])
        hub.add_session(session, [server_id])
        broker.want({server_topic(server_id), envelope.CHANGES})
        await eventually(lambda: server_topic(server_id) in broker.subscribed)
        yield SecondNode(hub, broker, fanout, client, server_id, sink, session)
        inner.cancel_scope.cancel()
    await stop()


def cast_from(node_id: str, server_id: int, n: int) -> ServerCast:
    presence = Presence(user_id=str(n + 1), status="online", activity=None)
    return ServerCast(node_id, server_id, PresenceUpdateEvent(d=presence))


def event_from_elsewhere(server_id: int, n: int) -> bytes:
    return frame("node-elsewhere", envelope.encode(cast_from("node-elsewhere", server_id, n)))


async def publish(node: SecondNode, count: int) -> None:
    topic = server_topic(node.server_id)
    async with node.redis.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.publish(topic, event_from_elsewhere(node.server_id, n))


async def test_a_flood_over_the_bound_resyncs_and_stays_bounded(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    async with second_node(nursery, tmp_path, redis) as node:
        with trio.fail_after(10):
            # Nothing fans out (the fan-out's task is not running): 20 times the bound arrives.
            await publish(node, QUEUE * 20)
            await eventually(lambda: node.broker.received == QUEUE * 20)
        assert node.broker.resyncs >= 1
        assert node.broker.inbox.statistics().current_buffer_used <= QUEUE
        # Bob's session needed what was dropped: ended (no RESUME) and closed with 4014.
        assert node.sink.closed is not None
        assert node.sink.closed[0] == int(Close.RESYNC) == 4014
        assert node.hub.sessions == {}
        assert node.fanout.resynced_sessions == 1


async def test_a_message_waiting_too_long_resyncs(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    async with second_node(nursery, tmp_path, redis, broker_max_lag_s=0.05) as node:
        with trio.fail_after(10):
            await publish(node, 3)  # under the bound
            await eventually(lambda: node.broker.received == 3)
            await trio.sleep(0.1)  # the node is busy elsewhere for longer than the lag allowed
            async with trio.open_nursery() as run:
                await run.start(node.fanout.run)
                await eventually(lambda: node.sink.closed is not None)
                run.cancel_scope.cancel()
        assert node.sink.closed is not None
        assert node.sink.closed[0] == Close.RESYNC
        assert node.fanout.delivered == 0  # late ones are dropped, not delivered
        assert node.hub.sessions == {}


async def test_a_lost_subscription_resyncs_then_subscribes_again(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    async with second_node(nursery, tmp_path, redis) as node:
        with trio.fail_after(10):
            async with trio.open_nursery() as run:
                await run.start(node.fanout.run)
                await publish(node, 1)  # delivered normally first
                await eventually(lambda: node.fanout.delivered == 1)
                assert len(node.sink.frames) == 1
                # Redis drops the node's pub/sub connection: whatever was published meanwhile
                # is lost to it, so every session here resyncs, and it subscribes again.
                await node.redis.client_kill(type_=PureToken.PUBSUB, skipme=False)
                await eventually(lambda: node.sink.closed is not None)
                assert node.sink.closed is not None
                assert node.sink.closed[0] == Close.RESYNC
                await eventually(lambda: node.broker.connected and bool(node.broker.subscribed))
                run.cancel_scope.cancel()


async def test_the_watchdog_notices_a_node_that_stalled(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    async with second_node(nursery, tmp_path, redis, broker_max_lag_s=0.1) as node:
        with trio.fail_after(10):
            async with trio.open_nursery() as run:
                await run.start(node.fanout.run)
                await eventually(lambda: node.broker.lag_s > 0)  # probes go round
                assert node.sink.closed is None
                # The whole process stalls (as under a CPU it cannot get): whatever Redis holds
                # for it by now is late, so the watchdog drops the connection and resyncs.
                time.sleep(0.5)  # noqa: ASYNC251 - blocking the event loop is the point
                await eventually(lambda: node.sink.closed is not None)
                assert node.sink.closed is not None
                assert node.sink.closed[0] == int(Close.RESYNC)
                await eventually(lambda: node.broker.connected and node.broker.lag_s < 0.1)
                run.cancel_scope.cancel()


async def test_a_publication_another_node_dropped_resyncs_its_readers(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    async with second_node(nursery, tmp_path, redis) as node:
        # A third node whose publish queue holds 2: of 5 publications, 3 never reach Redis.
        settings = settings_for(tmp_path / "c", broker=redis.url, broker_publish_queue=2)
        client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
        async with client, trio.open_nursery() as run:
            await run.start(node.fanout.run)
            elsewhere = Broker(client, settings)
            topic = server_topic(node.server_id)
            for n in range(5):
                elsewhere.publish(topic, envelope.encode(cast_from("node-c", node.server_id, n)))
            assert elsewhere.publish_dropped == 3
            with trio.fail_after(10):
                await run.start(elsewhere.run)  # sends the 2, then the topic's gap notice
                await eventually(lambda: node.sink.closed is not None)
            assert elsewhere.gap_notices == 1
            assert node.sink.closed is not None
            assert node.sink.closed[0] == int(Close.RESYNC)
            assert node.hub.sessions == {}
            run.cancel_scope.cancel()
