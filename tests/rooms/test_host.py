"""Host powers, host migration, closing a room, reconnecting, and the two grace periods."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from relay.protocol.rooms import Close
from tests.rooms.conftest import account, joined, new_room, open_client

if TYPE_CHECKING:
    from tests.conftest import RunningServer
    from tests.rooms.conftest import RoomClient

GOING_AWAY = 1001  # a client closing with anything but 1000 may come back


async def drop(client: RoomClient) -> None:
    """Disconnect without leaving (like a page reload)."""
    await client.ws.aclose(code=GOING_AWAY)


async def test_list_and_kick(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, protocol="host")
    with trio.fail_after(5):
        async with (
            joined(rooms_server, room) as host,
            joined(rooms_server, room) as b,
            joined(rooms_server, room) as c,
        ):
            await host.event("client_joined")
            await host.event("client_joined")
            for power in ("list", "kick", "grant_host"):
                await b.send(power, **({} if power == "list" else {"client_id": 3}))
                await b.expect_error("not_host")
            await host.send("list")
            assert await host.event() == {
                "type": "members",
                "host_id": 1,
                "members": [{"client_id": n, "connected": True} for n in (1, 2, 3)],
            }
            await host.send("kick", client_id=1)
            await host.expect_error("forbidden")
            await host.send("kick", client_id=9)
            await host.expect_error("unknown_client")
            await host.send("kick", client_id=2, reason="spamming")
            error = await b.expect_error("kicked", Close.KICKED)
            assert "spamming" in error["message"]
            assert await host.event() == {"type": "client_left", "client_id": 2, "reason": "kicked"}
            await host.send("broadcast", data="after")
            assert (await c.event())["data"] == "after"  # c heard nothing about b (host room)
            secret = b.connected["client_secret"]
        async with open_client(rooms_server) as again:  # a kicked client cannot come back
            await again.send("reconnect", room_id=room["id"], client_id=2, client_secret=secret)
            await again.expect_error("invalid_client", Close.JOIN_FAILED)


async def test_grant_host(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, protocol="host")
    with trio.fail_after(5):
        async with (
            joined(rooms_server, room) as a,
            joined(rooms_server, room) as b,
            joined(rooms_server, room) as c,
        ):
            await a.event("client_joined")
            await a.event("client_joined")
            await a.send("grant_host", client_id=7)
            await a.expect_error("unknown_client")
            await a.send("grant_host", client_id=3)
            for client in (a, b, c):
                assert await client.event() == {"type": "host_assigned", "host_id": 3}
            await a.send("list")
            await a.expect_error("not_host")
            await a.send("broadcast", data=1)
            await a.expect_error("forbidden")  # the star moved with the host
            await a.send("host", data="to the new host")
            assert await c.event() == {"type": "host", "from": 1, "data": "to the new host"}
            await c.send("list")
            assert (await c.event("members"))["host_id"] == 3


async def test_host_migrates_to_the_longest_connected(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, protocol="host")
    with trio.fail_after(5):
        async with (
            joined(rooms_server, room) as a,
            joined(rooms_server, room) as b,
            joined(rooms_server, room) as c,
            joined(rooms_server, room) as d,
        ):
            for _ in range(3):
                await a.event("client_joined")
            await drop(b)  # away, within its grace: not an heir while others are connected
            assert await a.event() == {"type": "client_disconnected", "client_id": 2}
            await a.send("leave")
            for client in (c, d):
                assert await client.event() == {"type": "host_migrating", "previous_host_id": 1}
                assert await client.event() == {"type": "host_assigned", "host_id": 3}
            # The new host hears that the old one left, and has the powers.
            assert await c.event() == {"type": "client_left", "client_id": 1, "reason": "left"}
            await c.send("list")
            assert (await c.event("members"))["members"] == [
                {"client_id": 2, "connected": False},
                {"client_id": 3, "connected": True},
                {"client_id": 4, "connected": True},
            ]
            await c.send("leave")
            assert await d.event() == {"type": "host_migrating", "previous_host_id": 3}
            assert await d.event() == {"type": "host_assigned", "host_id": 4}


async def test_peer_room_passes_the_host_without_migrating(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, protocol="peer")
    with trio.fail_after(5):
        async with joined(rooms_server, room) as a, joined(rooms_server, room) as b:
            await a.event("client_joined")
            await a.send("leave")
            assert await b.event() == {"type": "host_assigned", "host_id": 2}
            assert await b.event() == {"type": "client_left", "client_id": 1, "reason": "left"}


async def test_closing_the_room_tells_everyone_why(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, protocol="host", public=True)
    with trio.fail_after(5):
        async with joined(rooms_server, room) as a, joined(rooms_server, room) as b:
            await a.event("client_joined")
            await alice.call("DELETE", f"/v1/api/rooms/{room['id']}")
            for client in (a, b):
                error = await client.expect_error("room_closed", Close.ROOM_CLOSED)
                assert "creator" in error["message"]
        async with open_client(rooms_server) as late:
            await late.send("connect", room_id=room["id"], secret=room["secret"])
            await late.expect_error("unknown_room", Close.JOIN_FAILED)
    summary = await alice.call("GET", "/v1/api/summary")
    assert (summary["number_of_rooms"], summary["current_clients"]) == (0, 0)


async def test_reconnect_within_the_grace_keeps_identity_and_host(
    rooms_server: RunningServer,
) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, protocol="peer")
    with trio.fail_after(5):
        async with joined(rooms_server, room) as host, joined(rooms_server, room) as other:
            await host.event("client_joined")
            identity = host.connected
            await drop(host)
            assert await other.event() == {"type": "client_disconnected", "client_id": 1}
            async with open_client(rooms_server) as back:
                again = await back.rejoin(room["id"], 1, identity["client_secret"])
                assert again["client_id"] == 1
                assert again["host_id"] == 1
                assert again["members"] == [
                    {"client_id": 1, "connected": True},
                    {"client_id": 2, "connected": True},
                ]
                assert await other.event() == {"type": "client_reconnected", "client_id": 1}
                await back.send("list")  # still the host
                assert (await back.event("members"))["host_id"] == 1
                await other.send("broadcast", data="welcome back")
                assert (await back.event("broadcast"))["from"] == 2


async def test_reconnect_refusals_and_replacement(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    with trio.fail_after(5):
        async with joined(rooms_server, room) as first:
            secret = first.connected["client_secret"]
            for client_id, client_secret in ((1, "wrong"), (2, secret)):
                async with open_client(rooms_server) as bad:
                    await bad.send(
                        "reconnect",
                        room_id=room["id"],
                        client_id=client_id,
                        client_secret=client_secret,
                    )
                    await bad.expect_error("invalid_client", Close.JOIN_FAILED)
            # The same client from a second connection: the new one wins.
            async with open_client(rooms_server) as second:
                await second.rejoin(room["id"], 1, secret)
                await first.expect_error("replaced", Close.REPLACED)
                await second.send("list")
                assert (await second.event("members"))["members"] == [
                    {"client_id": 1, "connected": True}
                ]


@pytest.mark.settings(room_reconnect_grace_s=0.3)
async def test_host_migrates_when_its_grace_runs_out(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, protocol="host")
    with trio.fail_after(5):
        async with joined(rooms_server, room) as host, joined(rooms_server, room) as b:
            await host.event("client_joined")
            secret = host.connected["client_secret"]
            await drop(host)
            started = trio.current_time()
            assert await b.event() == {"type": "host_migrating", "previous_host_id": 1}
            assert trio.current_time() - started >= 0.25  # not before the grace ran out
            assert await b.event() == {"type": "host_assigned", "host_id": 2}
            assert await b.event() == {"type": "client_left", "client_id": 1, "reason": "timed_out"}
            async with open_client(rooms_server) as late:
                await late.send("reconnect", room_id=room["id"], client_id=1, client_secret=secret)
                await late.expect_error("invalid_client", Close.JOIN_FAILED)


@pytest.mark.settings(room_empty_grace_s=0.3)
async def test_an_empty_room_closes_after_its_grace(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    never_joined = await new_room(alice)
    used = await new_room(alice)
    with trio.fail_after(5):
        async with joined(rooms_server, used) as client:
            await client.send("leave")
            assert await client.close_code() == 1000
        left_at = trio.current_time()
        # Within the grace a client may still join, and that keeps the room.
        async with joined(rooms_server, used) as again:
            await trio.sleep(0.4)  # the grace itself is under test
            await again.send("list")
            await again.event("members")
        await trio.sleep(0.1)
        assert trio.current_time() - left_at > 0.3
        gone: set[str] = set()
        while len(gone) < 2:  # both close once empty for the grace
            await trio.sleep(0.05)
            for room in (never_joined, used):
                response = await alice.request("GET", f"/v1/api/rooms/{room['id']}")
                if response.status_code == 404:
                    gone.add(room["id"])
        summary = await alice.call("GET", "/v1/api/summary")
        assert (summary["number_of_rooms"], summary["committed_clients"]) == (0, 0)
