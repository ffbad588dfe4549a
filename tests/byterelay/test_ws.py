"""The byte relay over WebSocket (`/v1/relay`): one frame per binary message, the same id
namespace as TCP, and a close code for every way a connection ends."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
import trio
import trio_websocket

from relay.protocol import relayd
from relay.protocol.relayd import Transfer
from tests.byterelay.conftest import wait_until, ws_bytes

if TYPE_CHECKING:
    from tests.byterelay.conftest import RelayServer


async def close_code(ws: trio_websocket.WebSocketConnection) -> int | None:
    """Read until the server closes; its close code."""
    with pytest.raises(trio_websocket.ConnectionClosed):
        await read_forever(ws)
    assert ws.closed is not None
    return ws.closed.code


async def read_forever(ws: trio_websocket.WebSocketConnection) -> None:
    while True:
        await ws.get_message()


async def test_tcp_and_websocket_clients_exchange_data(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        tcp = await relay_server.client(b"tcp")
        async with relay_server.ws_client(b"browser") as ws:
            await tcp.send(b"browser", b"to the browser")
            message = await ws_bytes(ws)
            assert message == relayd.encode_transfer(b"tcp", b"browser", b"to the browser")
            await ws.send_message(relayd.encode_transfer(b"browser", b"tcp", b"to the socket"))
            frame = await tcp.receive()
            assert (frame.sender, frame.payload) == (b"browser", b"to the socket")


async def test_two_websocket_clients(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        async with relay_server.ws_client(b"a") as a, relay_server.ws_client(b"b") as b:
            for i in range(20):
                await a.send_message(relayd.encode_transfer(b"a", b"b", b"%d" % i))
            got = [relayd.decode(await ws_bytes(b)) for _ in range(20)]
        assert [f.payload for f in got if isinstance(f, Transfer)] == [b"%d" % i for i in range(20)]


@pytest.mark.parametrize("size", [64 * 1024, 8 * 1024 * 1024])
async def test_large_payloads_both_ways(relay_server: RelayServer, size: int) -> None:
    with trio.fail_after(10):
        tcp = await relay_server.client(b"tcp")
        async with relay_server.ws_client(b"ws") as ws:
            payload = os.urandom(size)
            await tcp.send(b"ws", payload)
            frame = relayd.decode(await ws_bytes(ws))
            assert isinstance(frame, Transfer)
            assert frame.payload == payload
            await ws.send_message(relayd.encode_transfer(b"ws", b"tcp", payload[::-1]))
            assert (await tcp.receive()).payload == payload[::-1]


async def test_a_tcp_login_replaces_a_websocket_one(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        async with relay_server.ws_client(b"same") as ws:
            tcp = await relay_server.client(b"same")
            assert await close_code(ws) == 4000
        async with relay_server.ws_client(b"same") as newest:
            await tcp.expect_silent_close()
            bob = await relay_server.client(b"bob")
            await bob.send(b"same", b"for the newest")
            frame = relayd.decode(await ws_bytes(newest))
            assert isinstance(frame, Transfer)
            assert frame.payload == b"for the newest"
        assert relay_server.hub.stats.replaced == 2


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("a text message", 1003),
        (relayd.encode_transfer(b"a", b"b", b"x"), 1008),  # before login
        (b"RELY\x01\x07", 1008),
        (relayd.encode_login(b"a") + relayd.encode_login(b"a"), 1008),  # two frames
        (relayd.encode_login(b"a")[:-1], 1008),  # half a frame
        (relayd.encode_transfer(b"a", b"b")[:-4] + b"\xff\xff\xff\xff", 1009),
        (relayd.encode_transfer(b"a", b"b", b"x" * (8 * 1024 * 1024 + 1)), 1009),
    ],
)
async def test_violations_close_with_a_code(
    relay_server: RelayServer, message: str | bytes, code: int
) -> None:
    with trio.fail_after(5):
        async with relay_server.ws() as ws:
            await ws.send_message(message)
            assert await close_code(ws) == code
        assert relay_server.hub.stats.violations == 1


async def test_from_must_be_the_logged_in_id(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        async with relay_server.ws_client(b"alice") as ws:
            await ws.send_message(relayd.encode_transfer(b"mallory", b"alice", b"x"))
            assert await close_code(ws) == 1008


@pytest.mark.settings(relay_idle_s=0.3)
async def test_idle_websocket_is_closed(relay_server: RelayServer) -> None:
    with trio.fail_after(5):
        async with relay_server.ws_client(b"alice") as ws:
            for _ in range(3):
                await trio.sleep(0.2)
                await ws.send_message(relayd.encode_heartbeat(b"alice"))
            assert await close_code(ws) == 4009
        assert relay_server.hub.stats.heartbeats == 3
        assert relay_server.hub.stats.idle_closes == 1


@pytest.mark.settings(relay_idle_s=0.3, relay_stall_s=1.0, relay_queue_bytes=256 * 1024)
async def test_a_sender_stalled_longer_than_idle_s_is_not_idle(relay_server: RelayServer) -> None:
    # The idle timer covers waiting for the client's next message, not a forward that waits
    # for room at a receiver that does not read (the slow-receiver policy's stall_s).
    hub = relay_server.hub
    with trio.fail_after(20):
        stuck = await relay_server.connect(rcvbuf=16 * 1024)
        await stuck.login(b"stuck")
        async with relay_server.ws_client(b"alice") as ws:
            frame = relayd.encode_transfer(b"alice", b"stuck", os.urandom(64 * 1024))

            async def keep_alive() -> None:  # the receiver reads nothing but is not idle
                while True:
                    await stuck.send_raw(relayd.encode_heartbeat(b"stuck"))
                    await trio.sleep(0.1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_alive)
                for _ in range(100):  # never cancelled mid-message: the stream stays whole
                    await ws.send_message(frame)
                await wait_until(lambda: hub.stats.slow_disconnects > 0)
                nursery.cancel_scope.cancel()
            assert hub.stats.idle_closes == 0
            await ws.send_message(relayd.encode_transfer(b"alice", b"alice", b"still here"))
            assert await ws_bytes(ws) == relayd.encode_transfer(b"alice", b"alice", b"still here")


async def test_a_tcp_burst_reaches_a_websocket_as_one_message_per_frame(
    relay_server: RelayServer,
) -> None:
    # Frames that arrive back to back over TCP are forwarded as one run (relayd.py); a WebSocket
    # receiver must still get each one in its own message.
    with trio.fail_after(5):
        tcp = await relay_server.client(b"tcp")
        async with relay_server.ws_client(b"ws") as ws:
            frames = [relayd.encode_transfer(b"tcp", b"ws", b"%d" % i) for i in range(20)]
            await tcp.send_raw(b"".join(frames))
            assert await ws_bytes(ws) == frames[0]
            assert [await ws_bytes(ws) for _ in frames[1:]] == frames[1:]
