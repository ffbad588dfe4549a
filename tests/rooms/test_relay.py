"""Joining rooms and relaying through them: real server, real WebSocket clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from relay.protocol.rooms import Close, Kind
from relay.rooms import endpoint
from tests.rooms.conftest import account, joined, new_room, open_client

if TYPE_CHECKING:
    from relay.client import RelayClient
    from tests.conftest import RunningServer


async def test_first_client_is_host_and_members_are_in_join_order(
    rooms_server: RunningServer,
) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, metadata={"map": "dust"})
    with trio.fail_after(5):
        async with joined(rooms_server, room) as first, joined(rooms_server, room) as second:
            assert first.connected["client_id"] == 1
            assert first.connected["host_id"] == 1
            assert first.connected["room_id"] == room["id"]
            assert first.connected["protocol"] == "peer"
            assert first.connected["max_clients"] == 8
            assert first.connected["metadata"] == {"map": "dust"}
            assert len(first.connected["client_secret"]) >= 32
            assert second.connected["client_id"] == 2
            assert second.connected["host_id"] == 1
            assert second.connected["members"] == [
                {"client_id": 1, "connected": True},
                {"client_id": 2, "connected": True},
            ]
            assert second.connected["client_secret"] != first.connected["client_secret"]
            assert await first.event() == {"type": "client_joined", "client_id": 2}


@pytest.mark.parametrize(
    ("room_id", "secret", "code"),
    [("", "x", "invalid_frame"), ("123", "x", "unknown_room"), (None, "wrong", "invalid_secret")],
    ids=["empty id", "unknown room", "wrong secret"],
)
async def test_join_refused(
    rooms_server: RunningServer, room_id: str | None, secret: str, code: str
) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    with trio.fail_after(5):
        async with open_client(rooms_server) as client:
            await client.send(
                "connect", room_id=room["id"] if room_id is None else room_id, secret=secret
            )
            close = Close.INVALID_FRAME if code == "invalid_frame" else Close.JOIN_FAILED
            await client.expect_error(code, close)


async def test_full_room_refuses_the_next_client(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, max_clients=2)
    with trio.fail_after(5):
        async with (
            joined(rooms_server, room),
            joined(rooms_server, room),
            open_client(rooms_server) as third,
        ):
            await third.send("connect", room_id=room["id"], secret=room["secret"])
            error = await third.expect_error("room_full", Close.JOIN_FAILED)
            assert "2" in error["message"]


async def test_anything_before_joining_closes(rooms_server: RunningServer) -> None:
    with trio.fail_after(5):
        async with open_client(rooms_server) as client:
            await client.send("broadcast", data=1)
            await client.expect_error("not_joined", Close.NOT_JOINED)
        async with open_client(rooms_server) as client:
            await client.send_binary(Kind.BROADCAST, 0, b"x")
            await client.expect_error("not_joined", Close.NOT_JOINED)
        async with open_client(rooms_server) as client:
            await client.send_raw("{not json")
            await client.expect_error("invalid_frame", Close.INVALID_FRAME)


async def test_join_timeout(rooms_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint, "JOIN_TIMEOUT_S", 0.2)
    with trio.fail_after(5):
        async with open_client(rooms_server) as client:
            await client.expect_error("join_timeout", Close.JOIN_TIMEOUT)


async def test_a_second_join_on_one_connection_closes(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    with trio.fail_after(5):
        async with joined(rooms_server, room) as client:
            await client.send("connect", room_id=room["id"], secret=room["secret"])
            await client.expect_error("already_joined", Close.ALREADY_JOINED)


async def three_in(server: RunningServer, owner: RelayClient, protocol: str) -> dict[str, str]:
    return await new_room(owner, max_clients=3, protocol=protocol)


async def test_peer_relay_broadcast_target_host(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await three_in(rooms_server, alice, "peer")
    with trio.fail_after(5):
        async with (
            joined(rooms_server, room) as a,
            joined(rooms_server, room) as b,
            joined(rooms_server, room) as c,
        ):
            for client in (a, a, b):  # joins of the others (everyone hears them in peer rooms)
                await client.event("client_joined")
            # JSON: broadcast reaches everyone but the sender, data unchanged
            await b.send_raw('{"type": "broadcast", "data": {"x": [1, 2.5, "é"]}}')
            for receiver in (a, c):
                event = await receiver.event("broadcast")
                assert event == {"type": "broadcast", "from": 2, "data": {"x": [1, 2.5, "é"]}}
            # JSON target and host
            await c.send("target", to=2, data="psst")
            assert await b.event() == {"type": "target", "from": 3, "data": "psst"}
            await c.send("host", data=None)
            assert await a.event() == {"type": "host", "from": 3, "data": None}
            # binary, all three kinds
            await a.send_binary(Kind.BROADCAST, 0, b"\x00\xffall")
            assert await b.binary() == (Kind.BROADCAST, 1, b"\x00\xffall")
            assert await c.binary() == (Kind.BROADCAST, 1, b"\x00\xffall")
            await b.send_binary(Kind.TARGET, 3, b"one")
            assert await c.binary() == (Kind.TARGET, 2, b"one")
            await b.send_binary(Kind.HOST, 0, b"")
            assert await a.binary() == (Kind.HOST, 2, b"")
            # nothing else arrived anywhere: a marker broadcast is each client's next frame
            await a.send("broadcast", data="end")
            await c.send("broadcast", data="end")
            assert (await b.event())["from"] == 1
            assert (await b.event())["from"] == 3
            assert (await c.event())["from"] == 1
            assert (await a.event())["from"] == 3


async def test_host_protocol_is_a_star(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await three_in(rooms_server, alice, "host")
    with trio.fail_after(5):
        async with (
            joined(rooms_server, room) as host,
            joined(rooms_server, room) as b,
            joined(rooms_server, room) as c,
        ):
            assert await host.event() == {"type": "client_joined", "client_id": 2}
            assert await host.event() == {"type": "client_joined", "client_id": 3}
            # others may not broadcast or target, in JSON or binary; the connection stays open
            await b.send("broadcast", data=1)
            await b.expect_error("forbidden")
            await b.send("target", to=3, data=1)
            await b.expect_error("forbidden")
            await b.send_binary(Kind.BROADCAST, 0, b"x")
            await b.expect_error("forbidden")
            await b.send_binary(Kind.TARGET, 3, b"x")
            await b.expect_error("forbidden")
            # ... but may send to the host
            await b.send("host", data="hi host")
            assert await host.event() == {"type": "host", "from": 2, "data": "hi host"}
            await c.send_binary(Kind.HOST, 0, b"bin")
            assert await host.binary() == (Kind.HOST, 3, b"bin")
            # the host broadcasts and targets
            await host.send("broadcast", data="all")
            assert (await b.event())["data"] == "all"
            assert (await c.event())["data"] == "all"
            await host.send_binary(Kind.TARGET, 3, b"you")
            assert await c.binary() == (Kind.TARGET, 1, b"you")
            # c saw nothing of b's refused sends
            await host.send("target", to=2, data="end")
            assert (await b.event())["data"] == "end"


async def test_unknown_target_is_an_error_that_keeps_the_connection(
    rooms_server: RunningServer,
) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    with trio.fail_after(5):
        async with joined(rooms_server, room) as a, joined(rooms_server, room) as b:
            await a.event("client_joined")
            await a.send("target", to=99, data=1)
            await a.expect_error("unknown_client")
            await a.send_binary(Kind.TARGET, 99, b"")
            await a.expect_error("unknown_client")
            await a.send("target", to=2, data="still here")
            assert (await b.event())["data"] == "still here"


async def test_the_server_stamps_the_sender(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    with trio.fail_after(5):
        async with (
            joined(rooms_server, room) as a,
            joined(rooms_server, room) as b,
            joined(rooms_server, room) as c,
        ):
            await a.event("client_joined")
            await a.event("client_joined")
            await b.event("client_joined")
            # Binary: the id field is the target or ignored, never the sender.
            await c.send_binary(Kind.BROADCAST, 1, b"as if from 1")
            assert await a.binary() == (Kind.BROADCAST, 3, b"as if from 1")
            assert await b.binary() == (Kind.BROADCAST, 3, b"as if from 1")
            # JSON: a client naming a sender breaks the protocol; nothing is forwarded.
            await c.send("broadcast", data="forged", **{"from": 1})
            await c.expect_error("invalid_frame", Close.INVALID_FRAME)
            assert await a.event() == {"type": "client_disconnected", "client_id": 3}
            await b.event("client_disconnected")
            await b.send("broadcast", data="next")
            assert await a.event() == {"type": "broadcast", "from": 2, "data": "next"}


async def test_leave_and_normal_close_leave_at_once(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    with trio.fail_after(5):
        async with joined(rooms_server, room) as a:
            async with joined(rooms_server, room) as b:
                await a.event("client_joined")
                await b.send("leave")
                assert await b.close_code() == 1000
                assert await a.event() == {"type": "client_left", "client_id": 2, "reason": "left"}
            async with joined(rooms_server, room) as c:
                assert c.client_id == 3  # ids are never reused
                await a.event("client_joined")
                await c.ws.aclose()  # 1000
                assert await a.event() == {"type": "client_left", "client_id": 3, "reason": "left"}
        room_now = await alice.call("GET", f"/v1/api/rooms/{room['id']}")
        assert room_now["current_clients"] == 0
        assert room_now["status"] == "empty"
