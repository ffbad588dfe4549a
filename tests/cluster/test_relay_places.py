"""Byte-relay ids in cluster mode, on two real servers sharing one real Redis: transfers to an
id logged in on the other node are forwarded through Redis (TCP and WebSocket alike, byte for
byte, in order, within the receiving node's payload cap), and a login on one node replaces the
same id's connection on the other."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import coredis
import hypothesis.strategies as st
import trio
from hypothesis import given, settings

from relay.byterelay.cluster import KICK, TRANSFER, ClusterRelay, id_topic, kick_message, parse
from relay.protocol import relayd
from relay.protocol.relayd import Transfer
from tests.byterelay.conftest import running_relay, ws_bytes
from tests.cluster.test_two_servers import eventually
from tests.test_metrics import TOKEN, scrape, value

if TYPE_CHECKING:
    from pathlib import Path

    from tests.byterelay.conftest import RelayServer
    from tests.realservers import RedisServer


@settings(max_examples=50)
@given(st.integers(min_value=1, max_value=2**63 - 1), st.binary(min_size=1, max_size=64))
def test_id_topic_messages_round_trip(token: int, frames: bytes) -> None:
    assert parse(kick_message(token)) == (KICK, token)
    assert parse(TRANSFER + frames) == (TRANSFER, frames)
    assert parse(b"") is None
    assert parse(b"K123") is None  # a kick is exactly 9 bytes


def cluster_of(server: RelayServer) -> ClusterRelay:
    cluster = server.hub.cluster
    assert isinstance(cluster, ClusterRelay)
    return cluster


async def test_transfers_cross_nodes_and_a_login_replaces_the_other_nodes(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    common = {"broker": redis.url, "metrics_token": TOKEN}
    redis_client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    async with (
        running_relay(nursery, tmp_path / "a", **common) as one,
        running_relay(nursery, tmp_path / "b", relay_max_payload_bytes=1024, **common) as two,
        redis_client,
    ):

        async def listened(client_id: bytes, node: RelayServer) -> None:
            topic = id_topic(client_id)

            async def ready() -> bool:
                subscribers = await redis_client.pubsub_numsub(topic)
                return client_id in cluster_of(node).held and subscribers[topic.encode()] == 1

            await eventually(ready)

        with trio.fail_after(20):
            alice = await one.client(b"alice")
            bob = await two.client(b"bob")
            await listened(b"alice", one)
            await listened(b"bob", two)
            # One node to the other and back, byte for byte and in order.
            await alice.send(b"bob", b"hello bob")
            frame = await bob.receive()
            assert frame.raw == relayd.encode_transfer(b"alice", b"bob", b"hello bob")
            for i in range(100):
                await bob.send(b"alice", b"%d" % i)
            assert [(await alice.receive()).payload for _ in range(100)] == [
                b"%d" % i for i in range(100)
            ]
            # A WebSocket client on two reaches a TCP client on one.
            async with two.ws_client(b"carol") as carol:
                await listened(b"carol", two)
                await carol.send_message(relayd.encode_transfer(b"carol", b"alice", b"hi"))
                got = await alice.receive()
                assert (got.sender, got.payload) == (b"carol", b"hi")
                await alice.send(b"carol", b"back")
                back = relayd.decode(await ws_bytes(carol))
                assert isinstance(back, Transfer)
                assert back.payload == b"back"
            # Over the receiving node's cap (two's is 1 KiB): dropped there, counted; the next
            # one (in the same write, so forwarded in one run with it) arrives.
            dropped = cluster_of(two).dropped
            await alice.send_raw(
                relayd.encode_transfer(b"alice", b"bob", b"x" * 2000)
                + relayd.encode_transfer(b"alice", b"bob", b"small")
            )
            assert (await bob.receive()).payload == b"small"
            assert cluster_of(two).dropped == dropped + 1
            # Both nodes' figures on /metrics.
            samples = await scrape(f"{two.server.url}/metrics", TOKEN)
            name = "relay_byterelay_cluster_frames_total"
            assert value(samples, name, direction="in") == cluster_of(two).received >= 2
            assert value(samples, name, direction="out") == cluster_of(two).forwarded >= 100
            dropped_name = "relay_byterelay_dropped_frames_total"
            assert value(samples, dropped_name, reason="cluster") == dropped + 1
            # A transfer to an id nobody is logged in as anywhere is dropped (by Redis).
            await alice.send(b"nobody", b"lost")
            await alice.sync()

            # Alice logs in on two: her connection on one is closed (replaced, silently as
            # relayd does), and what bob sends her reaches her new one.
            async with AsyncExitStack():
                alice_two = await two.client(b"alice")
                assert await alice.read_to_eof() == b""
                await eventually(lambda: b"alice" not in cluster_of(one).held)
                assert one.hub.stats.replaced == 1
                assert b"alice" not in one.hub.clients
                await bob.send(b"alice", b"found you")
                assert (await alice_two.receive()).payload == b"found you"
                # And back on one: two's connection is replaced in turn.
                alice_one = await one.client(b"alice")
                assert await alice_two.read_to_eof() == b""
                await listened(b"alice", one)
                await bob.send(b"alice", b"again")
                assert (await alice_one.receive()).payload == b"again"


async def test_a_stuck_receiver_on_another_node_is_cut_and_the_queues_stay_bounded(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    forward_bytes = 1024 * 1024
    common = {"broker": redis.url, "relay_forward_queue_bytes": forward_bytes}
    slow = {"relay_queue_bytes": 256 * 1024, "relay_stall_s": 0.3}
    async with (
        running_relay(nursery, tmp_path / "a", **common) as one,
        running_relay(nursery, tmp_path / "b", **common, **slow) as two,
    ):
        with trio.fail_after(20):
            alice = await one.client(b"alice")
            stuck = await two.connect(rcvbuf=16 * 1024)
            await stuck.login(b"stuck")
            await eventually(lambda: b"stuck" in cluster_of(two).held)
            await eventually(lambda: id_topic(b"stuck") in cluster_of(two).broker.subscribed)
            frame = b"x" * (64 * 1024)
            async with trio.open_nursery() as senders:

                async def blast() -> None:
                    for _ in range(200):
                        await alice.send(b"stuck", frame)

                senders.start_soon(blast)
                # The receiving node waits for the stuck receiver's room as for a local
                # sender, then cuts it; its queues never pass their bounds meanwhile.
                while two.hub.stats.slow_disconnects == 0:
                    assert cluster_of(one).outgoing.used <= forward_bytes + len(frame) + 512
                    assert cluster_of(two).incoming.used <= forward_bytes + len(frame) + 512
                    await trio.sleep(0.01)
            assert b"stuck" not in two.hub.clients
            await alice.sync()  # the sender was never held up
