"""Limits of the room WebSocket: capacity on join, message size, message rate, slow consumers,
and garbage frames (hypothesis) that must never hurt the room."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio_websocket
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.events import TextMessage

from actors.room import RoomActor
from relay.protocol.rooms import Close, Kind
from relay.rooms import endpoint as room_endpoint
from tests.conftest import settings_for, start_server
from tests.realtime.clients import TEXT, RawClient, masked, open_raw, split_url
from tests.rooms.conftest import account, joined, new_room, open_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.conftest import RunningServer


@pytest.mark.settings(room_capacity=4)
async def test_capacity_is_enforced_on_join(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    first = await new_room(alice, max_clients=3)
    with trio.fail_after(5):
        async with (
            joined(rooms_server, first),
            joined(rooms_server, first),
            joined(rooms_server, first),
        ):
            # Lowering max_clients keeps who is there but frees committed capacity ...
            await alice.call("PATCH", f"/v1/api/rooms/{first['id']}", {"max_clients": 1})
            async with open_client(rooms_server) as refused:
                await refused.send("connect", room_id=first["id"], secret=first["secret"])
                await refused.expect_error("room_full", Close.JOIN_FAILED)
            second = await new_room(alice, max_clients=3)
            # ... so a second room fits, but only one client more fits the server.
            async with joined(rooms_server, second):
                async with open_client(rooms_server) as refused:
                    await refused.send("connect", room_id=second["id"], secret=second["secret"])
                    await refused.expect_error("server_full", Close.JOIN_FAILED)
                summary = await alice.call("GET", "/v1/api/summary")
                assert (summary["current_clients"], summary["committed_clients"]) == (4, 4)


@pytest.mark.settings(room_message_bytes=1000)
async def test_oversize_messages_close_with_1009(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    with trio.fail_after(5):
        async with joined(rooms_server, room) as a, joined(rooms_server, room) as b:
            await a.event("client_joined")
            # Counted in UTF-8 bytes: 400 "é" are 800 bytes (fits), 500 are 1000+ (does not).
            fits = json.dumps({"type": "broadcast", "data": "é" * 400}, ensure_ascii=False)
            await a.send_raw(fits)
            assert (await b.event("broadcast"))["data"] == "é" * 400
            await a.send_raw(
                json.dumps({"type": "broadcast", "data": "é" * 500}, ensure_ascii=False)
            )
            await a.expect_error("message_too_big", 1009)
            assert await b.event() == {"type": "client_disconnected", "client_id": 1}
            await b.send_binary(Kind.BROADCAST, 0, bytes(995))  # header + 995 = 1000: fits
            await b.send_binary(Kind.BROADCAST, 0, bytes(996))
            await b.expect_error("message_too_big", 1009)


@pytest.mark.settings(room_message_rate=5)
async def test_rate_limit_closes_with_4008(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    with trio.fail_after(5):
        async with joined(rooms_server, room) as a, joined(rooms_server, room) as b:
            await a.event("client_joined")
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                for n in range(20):
                    await b.send("broadcast", data=n)
            await b.expect_error("rate_limited", Close.RATE_LIMITED)
            got: list[Any] = []
            while (event := await a.event())["type"] == "broadcast":
                got.append(event["data"])
            assert event == {"type": "client_disconnected", "client_id": 2}
            assert 3 <= len(got) <= 6  # the burst (5, less the connect) plus a little refill
            assert got == list(range(len(got)))


async def next_json(client: RawClient) -> dict[str, Any]:
    """The server's next text message on a raw client, as JSON."""
    event = await client.next_event()
    assert isinstance(event, TextMessage), event
    message: dict[str, Any] = json.loads(event.data)
    return message


async def test_a_message_the_busy_room_cannot_take_is_dropped_with_an_error(
    rooms_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A room whose inbox holds one message, and no wait for room. Of three messages that
    # arrive in one read, the first goes straight to the waiting room, the second fills its
    # inbox and the third finds it full: the room has not run in between.
    monkeypatch.setattr(RoomActor, "inbox_size", 1)
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    with trio.fail_after(5):
        async with (
            joined(rooms_server, room) as reader,
            open_raw(rooms_server.ws_url, "/v1/websocket") as sender,
        ):
            connect = {"type": "connect", "room_id": room["id"], "secret": room["secret"]}
            await sender.send(masked(TEXT, json.dumps(connect).encode()))
            assert (await next_json(sender))["type"] == "connected"
            assert await reader.event() == {"type": "client_joined", "client_id": 2}
            monkeypatch.setattr(room_endpoint, "ROOM_SEND_TIMEOUT_S", 0)

            def broadcast(n: int) -> bytes:
                return masked(TEXT, json.dumps({"type": "broadcast", "data": n}).encode())

            await sender.send(broadcast(0) + broadcast(1) + broadcast(2))  # one write
            assert (await next_json(sender))["code"] == "busy"
            await sender.send(broadcast(3))  # still joined: the next message goes through
            for n in (0, 1, 3):
                assert await reader.event() == {"type": "broadcast", "from": 2, "data": n}


@contextlib.asynccontextmanager
async def slow_client(server: RunningServer, room: dict[str, Any]) -> AsyncIterator[RawClient]:
    """A client that joins and then stops reading (a tiny receive buffer makes it fill fast)."""
    host, port = split_url(server.ws_url)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, port))
    client = RawClient(trio.SocketStream(sock))
    async with client.stream:
        await client.handshake("/v1/websocket")
        connect = {"type": "connect", "room_id": room["id"], "secret": room["secret"]}
        await client.send(masked(TEXT, json.dumps(connect).encode()))
        yield client


class Progress:
    def __init__(self) -> None:
        self.count = 0
        self._changed = trio.Event()

    def bump(self) -> None:
        self.count += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            await self._changed.wait()


@pytest.mark.settings(outbox_frames=8, room_message_rate=100_000, room_message_bytes=60_000)
async def test_slow_consumer_is_cut_without_stalling_the_room(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    payload = bytes(50_000)
    with trio.fail_after(15):
        async with (
            joined(rooms_server, room) as sender,
            joined(rooms_server, room) as reader,
            slow_client(rooms_server, room) as slow,
        ):
            assert await reader.event() == {"type": "client_joined", "client_id": 3}
            received = Progress()
            cut = trio.Event()

            async def read(until: trio.Event) -> None:
                while not until.is_set() or received.count < sent:
                    frame = await reader.receive()
                    if isinstance(frame, dict):
                        assert frame == {"type": "client_disconnected", "client_id": 3}
                        cut.set()
                        continue
                    assert frame[:2] == (Kind.BROADCAST, 1)
                    assert int.from_bytes(frame[2][:4], "big") == received.count  # in order
                    received.bump()

            sent = 0
            done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, done)
                after_cut = 0
                while after_cut < 20:
                    await received.wait_for(sent - 3)  # the reader keeps up: never near full
                    await sender.send_binary(Kind.BROADCAST, 0, sent.to_bytes(4, "big") + payload)
                    sent += 1
                    after_cut += cut.is_set()
                    assert sent < 5000, "the slow client was never cut"
                done.set()
                await received.wait_for(sent)
            close = await slow.expect_close()
            assert close.code == Close.SLOW_CONSUMER
            await sender.send("broadcast", data="still fine")
            assert (await reader.event("broadcast"))["data"] == "still fine"


# -- garbage -------------------------------------------------------------------------------------

TYPES = ["connect", "reconnect", "broadcast", "target", "host", "list", "kick", "grant_host"]
FIELDS = ["type", "data", "to", "client_id", "room_id", "secret", "client_secret", "from", "reason"]
scalars = st.none() | st.booleans() | st.integers(-5, 2**33) | st.text(max_size=12)
values = st.recursive(
    scalars | st.sampled_from(TYPES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
frames = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=40),
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=5).map(json.dumps),
    st.builds(
        lambda t, fields: json.dumps({"type": t, **fields}),
        st.sampled_from(TYPES),
        st.dictionaries(st.sampled_from(FIELDS[1:]), values, max_size=3),
    ),
    st.builds(lambda n: "[" * n + "]" * n, st.integers(500, 3000)),
)


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def fuzz_room(server: RunningServer, sessions: list[tuple[list[str | bytes], bool]]) -> None:
    """Each session: a client (joined or not) sends garbage; then the room still relays."""
    owner = await account(server, "fuzz")
    room = await new_room(owner, protocol="peer", max_clients=len(sessions) + 2)
    async with joined(server, room) as a, joined(server, room) as b:
        for garbage, join_first in sessions:
            async with open_client(server) as fuzzer:
                if join_first:
                    await fuzzer.join(room["id"], room["secret"])
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    for data in garbage:
                        await fuzzer.send_raw(data)
                await fuzzer.ws.aclose()  # whatever happened to the fuzzer, it ends normally
        await a.send("broadcast", data="alive")
        while (event := await b.receive()) != {"type": "broadcast", "from": 1, "data": "alive"}:
            assert isinstance(event, dict), event
            assert event["type"] != "error", event


# pytest-trio tears fixtures down after the first hypothesis example, so each example runs
# its own server (in a fresh directory: the test's tmp_path would be shared).
@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.lists(frames, min_size=1, max_size=4), st.booleans()), max_size=6))
async def test_garbage_never_hurts_the_room(sessions: list[tuple[list[str | bytes], bool]]) -> None:
    errors = Errors()
    loggers = [logging.getLogger(name) for name in ("relay", "actors")]
    for logger in loggers:
        logger.addHandler(errors)
    try:
        with tempfile.TemporaryDirectory() as tmp, trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                server, shutdown = await start_server(
                    nursery, settings_for(Path(tmp), room_message_rate=1000)
                )
                await fuzz_room(server, sessions)
                await shutdown()
    finally:
        for logger in loggers:
            logger.removeHandler(errors)
    assert errors.records == []
