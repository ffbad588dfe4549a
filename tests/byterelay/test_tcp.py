"""The relayd TCP listener through the real server: forwarding, last login wins, offline drop,
heartbeats and idle, every rule violation closing silently, and large payloads."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
import trio_websocket

from relay.client import open_websocket
from relay.protocol import relayd
from tests.byterelay.conftest import RelaydClient
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from pathlib import Path

    from tests.byterelay.conftest import RelayServer


async def test_two_clients_exchange_data(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        alice = await relay_server.client(b"alice")
        bob = await relay_server.client(b"bob")
        await alice.send(b"bob", b"hello bob")
        frame = await bob.receive()
        assert (frame.sender, frame.to, frame.payload) == (b"alice", b"bob", b"hello bob")
        # What the receiver gets is the sender's frame, byte for byte.
        assert frame.raw == relayd.encode_transfer(b"alice", b"bob", b"hello bob")
        for i in range(100):
            await bob.send(b"alice", b"%d" % i)
        assert [(await alice.receive()).payload for _ in range(100)] == [
            b"%d" % i for i in range(100)
        ]
        stats = relay_server.hub.stats
        assert stats.frames_forwarded == 101 + 2  # and the two logins' confirmations
        assert stats.logins == 2
        async with relay_server.server.client() as http:  # the same counters on /readyz
            ready = (await http.request("GET", "/readyz")).json()
        assert ready["byte_relay"]["frames_forwarded"] == 103
        assert ready["byte_relay"]["open_connections"] == 2


async def test_frames_split_and_batched_arbitrarily(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        bob = await relay_server.client(b"bob")
        alice = await relay_server.connect()
        stream = relayd.encode_login(b"alice") + b"".join(
            relayd.encode_transfer(b"alice", b"bob", bytes([i]) * i) for i in range(50)
        )
        for i in range(0, len(stream), 7):  # a few bytes per segment
            await alice.send_raw(stream[i : i + 7])
        assert [(await bob.receive()).payload for _ in range(50)] == [
            bytes([i]) * i for i in range(50)
        ]


async def test_one_read_for_several_receivers(relay_server: RelayServer) -> None:
    # One write from the sender carries frames for two receivers, small and large, interleaved:
    # each receiver gets its own, in order.
    with trio.fail_after(5):
        alice = await relay_server.client(b"alice")
        bob = await relay_server.client(b"bob")
        carol = await relay_server.client(b"carol")
        sizes = [10, 70_000, 10, 10, 200_000, 10, 64 * 1024, 10]
        payloads = [os.urandom(size) for size in sizes]
        targets = [b"bob", b"carol", b"bob", b"bob", b"carol", b"carol", b"bob", b"carol"]
        await alice.send_raw(
            b"".join(
                relayd.encode_transfer(b"alice", t, p)
                for t, p in zip(targets, payloads, strict=True)
            )
        )
        for client, name in ((bob, b"bob"), (carol, b"carol")):
            expected = [p for t, p in zip(targets, payloads, strict=True) if t == name]
            assert [(await client.receive()).payload for _ in expected] == expected


async def test_frames_before_a_bad_one_are_still_delivered(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        bob = await relay_server.client(b"bob")
        alice = await relay_server.client(b"alice")
        good = relayd.encode_transfer(b"alice", b"bob", b"before the bad frame")
        await alice.send_raw(good * 3 + b"RELX")  # in one read: three frames, then garbage
        await alice.expect_silent_close()
        assert [(await bob.receive()).raw for _ in range(3)] == [good] * 3


async def test_last_login_wins(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        first = await relay_server.client(b"dup")
        second = await relay_server.client(b"dup")  # its confirmation reached `second`
        await first.expect_silent_close()
        bob = await relay_server.client(b"bob")
        await bob.send(b"dup", b"for the newest")
        assert (await second.receive()).payload == b"for the newest"
        assert relay_server.hub.stats.replaced == 1
        assert relay_server.hub.clients[b"dup"].remote is not None


async def test_data_for_an_offline_id_is_dropped(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        alice = await relay_server.client(b"alice")
        await alice.send(b"nobody", b"lost")
        await alice.sync()
        assert relay_server.hub.stats.dropped_offline == 1
        nobody = await relay_server.client(b"nobody")  # the first frame it sees is its own
        await alice.send(b"nobody", b"found")
        assert (await nobody.receive()).payload == b"found"


async def test_a_repeated_login_changes_nothing(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        alice = await relay_server.client(b"alice")
        await alice.login(b"alice")
        assert relay_server.hub.stats.replaced == 0


@pytest.mark.settings(relay_idle_s=0.5)
async def test_heartbeats_are_not_forwarded_and_keep_a_connection_alive(
    relay_server: RelayServer,
) -> None:
    with trio.fail_after(5):
        alice = await relay_server.client(b"alice")
        silent = await relay_server.client(b"silent")
        start = trio.current_time()
        for _ in range(6):  # 1.2 s: more than twice the idle timeout
            await alice.heartbeat()
            await trio.sleep(0.2)
        await alice.send_raw(relayd.encode_transfer(b"alice", b"", b"a heartbeat may carry bytes"))
        await alice.sync()  # still open, and nothing but our own frames came back
        await silent.expect_silent_close()
        assert trio.current_time() - start >= 0.5
        stats = relay_server.hub.stats
        assert stats.heartbeats == 7
        assert stats.idle_closes == 1
        assert stats.frames_forwarded == 3  # the three confirmations


VIOLATIONS = {
    "transfer before login": relayd.encode_transfer(b"alice", b"bob", b"x"),
    "wrong magic": b"RELX\x01\x01\x01a",
    "wrong version": b"RELY\x02\x01\x01a",
    "unknown command": b"RELY\x01\x05\x01a",
    "empty login id": b"RELY\x01\x01\x00",
    "HTTP": b"GET / HTTP/1.1\r\n\r\n",
    "from is not the logged-in id": relayd.encode_login(b"alice")
    + relayd.encode_transfer(b"mallory", b"bob", b"x"),
    "a heartbeat from another id": relayd.encode_login(b"alice")
    + relayd.encode_heartbeat(b"mallory"),
    "a second login with another id": relayd.encode_login(b"alice") + relayd.encode_login(b"eve"),
    # The header alone: the server must close without waiting for (or reading) 4 GiB.
    "a 4 GiB length": relayd.encode_login(b"alice")
    + relayd.encode_transfer(b"alice", b"bob")[:-4]
    + b"\xff\xff\xff\xff",
    "one byte over the cap": relayd.encode_login(b"alice")
    + relayd.encode_transfer(b"alice", b"bob")[:-4]
    + (8 * 1024 * 1024 + 1).to_bytes(4, "big"),
}


async def test_every_violation_closes_silently(relay_server: RelayServer) -> None:
    with trio.fail_after(10):
        bob = await relay_server.client(b"bob")
        for name, data in VIOLATIONS.items():
            client = await relay_server.connect()
            await client.send_raw(data)
            try:
                await client.expect_silent_close()
            except AssertionError:
                pytest.fail(f"{name}: the connection was not closed silently")
        await bob.sync()  # nothing reached bob, and the relay still serves
        assert relay_server.hub.stats.violations == len(VIOLATIONS)
        assert relay_server.hub.stats.frames_forwarded == 2
        assert set(relay_server.hub.clients) == {b"bob"}


@pytest.mark.parametrize("size", [64 * 1024, 8 * 1024 * 1024])
async def test_large_payloads_arrive_intact(relay_server: RelayServer, size: int) -> None:
    with trio.fail_after(10):
        alice = await relay_server.client(b"alice")
        bob = await relay_server.client(b"bob")
        payloads = [os.urandom(size), os.urandom(size)]
        for payload in payloads:
            await alice.send(b"bob", payload)
        assert [(await bob.receive()).payload for _ in payloads] == payloads
        await bob.send(b"alice", payloads[0])
        assert (await alice.receive()).payload == payloads[0]


@pytest.mark.settings(relay_max_payload_bytes=1000)
async def test_the_cap_is_a_setting(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        bob = await relay_server.client(b"bob")
        alice = await relay_server.client(b"alice")
        await alice.send(b"bob", b"x" * 1000)
        assert (await bob.receive()).payload == b"x" * 1000
        await alice.send(b"bob", b"x" * 1001)
        await alice.expect_silent_close()
        assert relay_server.hub.stats.violations == 1


async def open_and_close(url: str) -> None:
    async with open_websocket(url):
        pass


async def test_off_means_no_listener_and_no_endpoint(nursery: trio.Nursery, tmp_path: Path) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path))  # relay_port=None
    assert running.runtime.byte_relay is None
    assert running.runtime.relay_addresses == []
    with pytest.RaisesGroup(
        pytest.RaisesExc(trio_websocket.ConnectionRejected, check=lambda e: e.status_code == 404),
        flatten_subgroups=True,
    ):
        await open_and_close(f"{running.ws_url}/v1/relay")
    await shutdown()


async def test_shutdown_closes_relay_connections(nursery: trio.Nursery, tmp_path: Path) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, relay_port=0))
    hub = running.runtime.byte_relay
    assert hub is not None
    with trio.fail_after(10):
        async with await trio.open_tcp_stream(*running.runtime.relay_addresses[0]) as stream:
            client = RelaydClient(stream)
            await client.login(b"alice")
            async with open_websocket(f"{running.ws_url}/v1/relay") as ws:
                await ws.send_message(relayd.encode_login(b"bob"))
                await ws.send_message(relayd.encode_transfer(b"bob", b"bob", b"sync"))
                await ws.get_message()
                await client.send(b"bob", b"hi")
                assert await ws.get_message() == relayd.encode_transfer(b"alice", b"bob", b"hi")
                await shutdown()
                await client.expect_silent_close()
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await ws.get_message()
                assert ws.closed is not None
                assert ws.closed.code == 1001
    assert hub.stats.open_connections == 0
    assert hub.clients == {}


@pytest.mark.settings(max_connections_per_ip=2)
async def test_connections_over_the_per_address_cap_are_closed_at_once(
    relay_server: RelayServer,
) -> None:
    with trio.fail_after(5):
        a = await relay_server.client(b"a")
        b = await relay_server.client(b"b")
        third = await relay_server.connect()
        await third.expect_silent_close()
        assert relay_server.hub.gate.refused == 1
        await a.send(b"b", b"still relayed")
        assert (await b.receive()).payload == b"still relayed"
        await a.stream.aclose()
        await trio.testing.wait_all_tasks_blocked()  # the server's side of it has ended too
        await relay_server.client(b"c")  # room again
