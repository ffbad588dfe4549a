"""Channel owners and replay buffers wired into two real servers on one Redis and one PostgreSQL
database: one order for a channel's messages on every node whoever posts where, and a RESUME on
another node after the session's node stopped or was killed (SIGKILL), with what was published
while no node served it (the topic logs)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import coredis
import msgspec
import trio

from relay.client import open_gateway
from relay.cluster.envelope import server_topic
from tests.cluster.test_two_servers import client_for, eventually, fanout_of
from tests.conftest import settings_for, start_server
from tests.gateway.test_gateway import setup_pair, text_channel
from tests.realservers import wait_for_relay

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from relay.client import Gateway
    from tests.conftest import RunningServer
    from tests.gateway.conftest import Member
    from tests.realservers import PostgresServer, RedisServer

PER_NODE = 15


async def two_nodes(
    nursery: trio.Nursery,
    tmp_path: Path,
    redis: RedisServer,
    database: str,
    second: trio.Nursery | None = None,
) -> tuple[RunningServer, RunningServer, Member, Member, dict[str, Any]]:
    """Servers `one` (in `second`'s nursery if given, to be cancelled) and `two` on one
    database, with a guild of Alice and Bob."""
    common = {"broker": redis.url, "database": database, "message_rate": 1000, "lease_ttl_s": 1.0}
    one, _ = await start_server(second or nursery, settings_for(tmp_path / "a", **common))
    two, _ = await start_server(nursery, settings_for(tmp_path / "b", **common))
    alice, bob, guild = await setup_pair(one)
    return one, two, alice, bob, guild


async def created_ids(gw: Gateway, count: int) -> list[int]:
    return [int((await gw.dispatch("MESSAGE_CREATE"))["d"]["id"]) for _ in range(count)]


async def test_one_order_for_a_channel_on_every_node(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer, postgres: PostgresServer
) -> None:
    one, two, alice, bob, guild = await two_nodes(nursery, tmp_path, redis, postgres.new_database())
    server_id, channel = int(guild["id"]), text_channel(guild)
    path = f"/v1/api/channels/{channel}/messages"
    alice_one, bob_two = client_for(one, alice.token), client_for(two, bob.token)
    with trio.fail_after(20):
        async with (
            open_gateway(one.ws_url) as a1,
            open_gateway(one.ws_url) as b1,
            open_gateway(two.ws_url) as a2,
            open_gateway(two.ws_url) as b2,
        ):
            for gw, member in ((a1, alice), (b1, bob), (a2, alice), (b2, bob)):
                await gw.identify(member.token)
            topic = server_topic(server_id)
            await eventually(
                lambda: all(topic in fanout_of(n).broker.subscribed for n in (one, two))
            )
            # The first post makes one the channel's owner; then both nodes post at once,
            # REST on one side and pipelined gateway sends (op 12) on the other.
            await alice_one.call("POST", path, {"content": "first"})
            assert fanout_of(one).owners.owns(int(channel))

            async def from_one() -> None:
                for n in range(PER_NODE):
                    await alice_one.call("POST", path, {"content": f"one {n}"})

            async def from_two() -> None:
                for n in range(PER_NODE):
                    await b2.send(
                        12, {"channel_id": channel, "content": f"two {n}", "nonce": str(n)}
                    )

            async with trio.open_nursery() as posters:
                posters.start_soon(from_one)
                posters.start_soon(from_two)
            total = 1 + 2 * PER_NODE
            seen = [await created_ids(gw, total) for gw in (a1, b1, a2, b2)]
            # Every session on both nodes saw one order: id order, and history's order.
            assert seen[0] == sorted(seen[0])
            assert all(order == seen[0] for order in seen)
            # History (one database) is in id order, and in that order on both nodes.
            for client in (alice_one, bob_two):
                history = await client.call("GET", f"{path}?limit=100")
                assert [int(m["id"]) for m in history] == seen[0]
            # Two's sends were forwarded to one and committed there; none of one's went out.
            assert fanout_of(two).owners.forwarded >= PER_NODE
            assert fanout_of(one).owners.forwarded == 0
            # A channel event on two (typing) goes through the owner too, to every node.
            await bob_two.call("POST", f"/v1/api/channels/{channel}/typing")
            for gw in (a1, a2):
                typing = await gw.dispatch("TYPING_START")
                assert typing["d"]["user_id"] == bob.user_id
            assert fanout_of(two).owners.forwarded >= PER_NODE + 1
            # /readyz shows it: one owns the channel and served two's posts.
            ready = (await alice_one.call("GET", "/readyz"))["broker"]
            assert (ready["owned_channels"], ready["forwarded"]) == (1, 0)
            assert ready["served"] >= PER_NODE


async def test_resume_on_another_node_after_the_first_stopped(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer, postgres: PostgresServer
) -> None:
    async with trio.open_nursery() as first:
        database = postgres.new_database()
        one, two, alice, bob, guild = await two_nodes(nursery, tmp_path, redis, database, first)
        channel = text_channel(guild)
        path = f"/v1/api/channels/{channel}/messages"
        bob_two = client_for(two, bob.token)
        with trio.fail_after(20):
            await bob_two.call("POST", path, {"content": "owner"})  # two owns the channel
            async with open_gateway(one.ws_url) as ga:
                await ga.identify(alice.token)
                topic = server_topic(int(guild["id"]))
                await eventually(lambda: topic in fanout_of(one).broker.subscribed)
                await bob_two.call("POST", path, {"content": "seen"})
                await ga.dispatch("MESSAGE_CREATE")
                session_id, seq = ga.session_id, ga.seq
            assert session_id is not None
            # Alice's connection is gone; her session on one keeps buffering, in Redis too.
            missed = [
                (await bob_two.call("POST", path, {"content": f"missed {n}"}))["id"]
                for n in range(3)
            ]
            session = one.runtime.hub.sessions[session_id]
            await eventually(lambda: session.seq == seq + 3)
            cluster = one.runtime.cluster_sessions
            assert cluster is not None
            await cluster.log.flushed()
            # While one serves the session (its lease renewed), two refuses to take it.
            async with open_gateway(two.ws_url) as gb:
                await gb.resume(alice.token, session_id, seq)
                assert (await gb.receive())["op"] == 9
            # On its own node the session resumes from memory, as on a single process.
            async with open_gateway(one.ws_url) as ga:
                await ga.resume(alice.token, session_id, seq)
                again = [await ga.receive() for _ in range(4)]
                assert [f["d"]["id"] for f in again[:3]] == missed
                assert again[3]["d"] == {"replayed": 3}
                seq = ga.seq
            missed = [
                (await bob_two.call("POST", path, {"content": f"missed {n}"}))["id"]
                for n in range(3, 6)
            ]
            await eventually(lambda: session.seq >= seq + 3)
            await cluster.log.flushed()
        # One stops (cancelled): its sessions' leases are released, their buffers kept.
        first.cancel_scope.cancel()
    with trio.fail_after(20):
        async with open_gateway(two.ws_url) as gb:
            # Bob cannot take Alice's session; an unknown one is invalid at once.
            await gb.resume(bob.token, session_id, seq)
            assert (await gb.receive())["op"] == 9
        async with open_gateway(two.ws_url) as gb:
            await gb.resume(alice.token, "no-such-session", 1)
            assert (await gb.receive())["op"] == 9
        # Its frames are JSON: a msgpack connection cannot take the session over.
        async with open_gateway(two.ws_url, encoding="msgpack") as gb:
            await gb.resume(alice.token, session_id, seq)
            assert (await gb.receive())["op"] == 9
        async with open_gateway(two.ws_url) as ga:
            await ga.resume(alice.token, session_id, seq)
            replayed = [await ga.receive()]
            while replayed[-1]["t"] != "RESUMED":
                replayed.append(await ga.receive())
            created = [f["d"]["id"] for f in replayed if f["t"] == "MESSAGE_CREATE"]
            assert created == missed
            assert [f["s"] for f in replayed] == list(range(seq + 1, seq + 1 + len(replayed)))
            assert replayed[-1]["d"] == {"replayed": len(replayed) - 1}
            # Two serves the session now, numbering on from there.
            await bob_two.call("POST", path, {"content": "after"})
            after = await ga.dispatch("MESSAGE_CREATE")
            assert after["d"]["content"] == "after"
            assert after["s"] >= seq + 5  # after RESUMED (and Alice's own presence)
            sessions = two.runtime.cluster_sessions
            assert sessions is not None
            assert sessions.taken_over == 1


@contextlib.contextmanager
def relay_process(data_dir: Path, redis: RedisServer, database: str) -> Iterator[tuple[str, str]]:
    """`python -m relay serve` on `data_dir` with the broker, in a process of its own (to be
    killed): its (HTTP URL, gateway URL)."""
    http_port, realtime_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELAY_")},
        "RELAY_DATA_DIR": str(data_dir),
        "RELAY_HTTP_PORT": str(http_port),
        "RELAY_REALTIME_PORT": str(realtime_port),
        "RELAY_RELAY_PORT": "off",
        "RELAY_VOICE_UDP_PORT": "0",
        "RELAY_BROKER": redis.url,
        "RELAY_DATABASE": database,
        "RELAY_MESSAGE_RATE": "1000",
        "RELAY_LEASE_TTL_S": "1",
        "RELAY_LOG_LEVEL": "warning",
    }
    log = open(data_dir.parent / "server.log", "wb")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve"], env=env, stderr=log)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_for_relay(url, proc, data_dir.parent / "server.log")
        yield url, f"ws://127.0.0.1:{realtime_port}"
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


async def test_resume_on_another_node_after_the_first_was_killed(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer, postgres: PostgresServer
) -> None:
    database = postgres.new_database()
    common = {"broker": redis.url, "database": database, "message_rate": 1000, "lease_ttl_s": 1.0}
    two, _ = await start_server(nursery, settings_for(tmp_path / "b", **common))
    alice, bob, guild = await setup_pair(two)
    path = f"/v1/api/channels/{text_channel(guild)}/messages"
    bob_two = client_for(two, bob.token)
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    (tmp_path / "a" / "data").mkdir(parents=True)
    with relay_process(tmp_path / "a" / "data", redis, database) as (_, ws_url):
        async with client:
            with trio.fail_after(20):
                await bob_two.call("POST", path, {"content": "owner"})  # two owns the channel
                async with open_gateway(ws_url) as ga:
                    await ga.identify(alice.token)
                    topic = server_topic(int(guild["id"])).encode()
                    await eventually(lambda: _subscribed(client, topic))
                    await bob_two.call("POST", path, {"content": "seen"})
                    await ga.dispatch("MESSAGE_CREATE")
                    session_id, seq = ga.session_id, ga.seq
                assert session_id is not None
                # Alice's connection is gone; her node buffers what follows, in Redis too.
                missed = [
                    (await bob_two.call("POST", path, {"content": f"missed {n}"}))["id"]
                    for n in range(3)
                ]

                async def written() -> bool:
                    data = await client.get(f"relay:session:{session_id}")
                    return data is not None and msgspec.msgpack.decode(data)["seq"] == seq + 3

                await eventually(written)
    # Killed (SIGKILL, on leaving the block): its session lease expires within lease_ttl_s.
    # Meanwhile, with no node serving the session, a message in the channel and a DM: the
    # RESUME gets them from the topic logs, after what the buffer holds.
    with trio.fail_after(20):
        missed.append((await bob_two.call("POST", path, {"content": "while dead"}))["id"])
        dm = await bob_two.call(
            "POST", "/v1/api/users/@me/channels", {"recipient_id": alice.user_id}
        )
        dm_path = f"/v1/api/channels/{dm['id']}/messages"
        missed_dm = (await bob_two.call("POST", dm_path, {"content": "dm while dead"}))["id"]
        async with open_gateway(two.ws_url) as ga:
            await ga.resume(alice.token, session_id, seq)
            replayed = [await ga.receive() for _ in range(7)]
            assert [f["d"]["id"] for f in replayed[:3]] == missed[:3]  # from the buffer
            caught_up = {(f["t"], f["d"]["id"]) for f in replayed[3:6]}  # from the logs
            assert caught_up == {
                ("MESSAGE_CREATE", missed[3]),
                ("CHANNEL_CREATE", dm["id"]),
                ("MESSAGE_CREATE", missed_dm),
            }
            assert [f["s"] for f in replayed] == list(range(seq + 1, seq + 8))
            assert replayed[6]["d"] == {"replayed": 6}
            await bob_two.call("POST", path, {"content": "after"})
            assert (await ga.dispatch("MESSAGE_CREATE"))["d"]["content"] == "after"


async def _subscribed(client: coredis.Redis[bytes], topic: bytes) -> bool:
    return bool((await client.pubsub_numsub(topic.decode()))[topic])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
