"""An app room whose node died is taken over by another node (docs/cluster.md#app-rooms): node
A, a `relay serve` process of its own, makes a room and is killed (SIGKILL: no lease released);
once the room's lease expired (lease_ttl_s), a join through node B (in this process) takes the
room there, restarted empty with its saved settings, and a PATCH made on A before it died (a
room B cannot commit stays saved for another node). A clean stop, on the other hand, ends a
node's rooms for good; a node whose room was adopted elsewhere closes its copy; and
rooms_per_user counts an account's rooms on every node.

As in test_room_places, node B runs on a copy of A's database (so the account exists on both)."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import coredis
import httpx
import trio

from relay.client import open_websocket
from tests.cluster.test_two_servers import eventually
from tests.cluster.test_wired import relay_process
from tests.conftest import settings_for, start_server
from tests.rooms.conftest import ROOM_SETTINGS, RoomClient, account

if TYPE_CHECKING:
    from pathlib import Path

    from tests.realservers import RedisServer


async def test_a_room_whose_node_was_killed_is_taken_over_by_a_join_elsewhere(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    common = {"broker": redis.url, "lease_ttl_s": 1.0, **ROOM_SETTINGS}
    first, stop_first = await start_server(nursery, settings_for(tmp_path / "a", **common))
    alice = await account(first, "alice")
    token = alice.access_token
    await stop_first()
    data_a = tmp_path / "a" / "data"
    shutil.copytree(data_a, tmp_path / "b" / "data")
    # B can commit 10 room clients: a room of A's for 50 is more than it can take over.
    two, stop_two = await start_server(
        nursery, settings_for(tmp_path / "b", **common, room_capacity=10)
    )
    auth = {"Authorization": f"Bearer {token}"}
    check: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    with relay_process(data_a, redis, str(data_a / "relay.db")) as (url_a, ws_a):
        async with httpx.AsyncClient() as http, check:
            with trio.fail_after(20):
                made = await http.post(
                    url_a + "/v1/api/rooms",
                    json={"max_clients": 3, "protocol": "host", "public": True},
                    headers=auth,
                )
                room = made.json()
                big = await http.post(
                    url_a + "/v1/api/rooms",
                    json={"max_clients": 50, "protocol": "peer"},
                    headers=auth,
                )
                big_id = big.json()["id"]
                path = f"/v1/api/rooms/{room['id']}"
                patched = await http.patch(
                    url_a + path, json={"metadata": {"map": "dust"}}, headers=auth
                )
                assert patched.status_code == 200
                async with open_websocket(ws_a + "/v1/websocket") as ws:
                    old = RoomClient(ws)
                    await old.join(room["id"], room["secret"])
                    assert old.client_id == 1
                # Node B sends clients to A while A holds the room.
                assert (await http.get(two.url + path)).status_code == 307

                async def patch_saved() -> bool:  # written within 0.1 s of the change
                    saved = await check.get(f"relay:room:rec:{room['id']}")
                    return saved is not None and b"dust" in saved

                await eventually(patch_saved)
    # A was killed (SIGKILL, leaving the block): its lease expires within lease_ttl_s. Until
    # then B still redirects (or, once A's URLs are gone, answers unknown); after it, a join
    # through B takes the room over there.
    with trio.fail_after(20):
        async with httpx.AsyncClient() as http:
            while True:
                answer = await http.get(two.url + path)
                if answer.status_code == 200:
                    break
                assert answer.status_code in (307, 404)
                await trio.sleep(0.1)
            shown = answer.json()
            assert shown["metadata"] == {"map": "dust"}
            assert (shown["max_clients"], shown["protocol"], shown["public"]) == (3, "host", True)
            assert shown["current_clients"] == 0  # restarted empty
            # The old client id is gone with A: `reconnect` is refused, `connect` works, and
            # client ids start again from 1 (the first is the host).
            async with open_websocket(two.ws_url + "/v1/websocket") as ws:
                gone = RoomClient(ws)
                await gone.send(
                    "reconnect",
                    room_id=room["id"],
                    client_id=1,
                    client_secret=old.connected["client_secret"],
                )
                await gone.expect_error("invalid_client", 4004)
            async with (
                open_websocket(two.ws_url + "/v1/websocket") as ws1,
                open_websocket(two.ws_url + "/v1/websocket") as ws2,
            ):
                host, guest = RoomClient(ws1), RoomClient(ws2)
                assert (await host.join(room["id"], room["secret"]))["host_id"] == 1
                await guest.join(room["id"], room["secret"])
                assert (await host.event("client_joined"))["client_id"] == 2
                await guest.send("host", data={"hello": 1})
                assert await host.event("host") == {"type": "host", "from": 2, "data": {"hello": 1}}
            # The big room is not taken over by B (it cannot commit 50 clients): unknown there,
            # its lease free and its settings kept for a node that can.
            big_path = f"/v1/api/rooms/{big_id}"
            while True:
                status = (await http.get(two.url + big_path, headers=auth)).status_code
                if status != 307:
                    break
                await trio.sleep(0.1)
            assert status == 404
            async with coredis.Redis.from_url(redis.url) as look:
                assert await look.exists([f"relay:room:rec:{big_id}"]) == 1
                assert await look.exists([f"relay:lease:room:{big_id}"]) == 0
            # The creator still owns it: a PATCH and a DELETE work on B.
            patched = await http.patch(two.url + path, json={"public": False}, headers=auth)
            assert patched.json()["public"] is False
            assert (await http.delete(two.url + path, headers=auth)).status_code == 204
            assert (await http.get(two.url + path, headers=auth)).status_code == 404
            # A clean stop ends its rooms for good, as in one process: nothing to take over.
            kept = await http.post(
                two.url + "/v1/api/rooms", json={"max_clients": 2, "protocol": "peer"}, headers=auth
            )
            kept_id = kept.json()["id"]
    check = coredis.Redis.from_url(redis.url)
    async with check:
        assert await check.exists([f"relay:room:rec:{kept_id}"]) == 1
        await stop_two()
        assert await check.exists([f"relay:room:rec:{kept_id}", f"relay:lease:room:{kept_id}"]) == 0


async def test_rooms_per_user_counts_every_node_and_a_copy_adopted_elsewhere_closes(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    common = {"broker": redis.url, "rooms_per_user": 2, "lease_ttl_s": 1.0, **ROOM_SETTINGS}
    first, stop_first = await start_server(nursery, settings_for(tmp_path / "a", **common))
    alice = await account(first, "alice")
    token, alice_id = alice.access_token, (await alice.me())["id"]
    await stop_first()
    shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "data")
    one, stop_one = await start_server(nursery, settings_for(tmp_path / "a", **common))
    two, stop_two = await start_server(nursery, settings_for(tmp_path / "b", **common))
    auth = {"Authorization": f"Bearer {token}"}
    body = {"max_clients": 2, "protocol": "peer"}
    with trio.fail_after(20):
        async with httpx.AsyncClient() as http:

            async def create(url: str) -> httpx.Response:
                return await http.post(url + "/v1/api/rooms", json=body, headers=auth)

            on_one = (await create(one.url)).json()
            on_two = await create(two.url)
            assert on_two.status_code == 201
            # Alice has two live rooms, one per node: a third is refused on either.
            for url in (one.url, two.url):
                refused = await create(url)
                assert refused.status_code == 422
                assert refused.json()["error"]["code"] == "too_many_rooms"
            # One closes on one: a room may be made on two again, and only one of two made at
            # once on both nodes.
            gone = await http.delete(one.url + f"/v1/api/rooms/{on_one['id']}", headers=auth)
            assert gone.status_code == 204
            check: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
            async with check:

                async def given_back() -> bool:
                    return await check.hlen(f"relay:rooms:by:{alice_id}") == 1

                await eventually(given_back)
            answers: list[int] = []

            async def race(url: str) -> None:
                answers.append((await create(url)).status_code)

            async with trio.open_nursery() as at_once:
                at_once.start_soon(race, one.url)
                at_once.start_soon(race, two.url)
            assert sorted(answers) == [201, 422]
            # The summary adds up every node's rooms, clients and capacity.
            expected = {
                "number_of_rooms": 2,
                "max_clients": 20_000,  # two nodes' room_capacity
                "current_clients": 0,
                "committed_clients": 4,
                "protocols": {
                    "host": {"number_of_rooms": 0, "current_clients": 0, "committed_clients": 0},
                    "peer": {"number_of_rooms": 2, "current_clients": 0, "committed_clients": 4},
                },
            }

            async def summed(url: str) -> bool:
                return bool((await http.get(url + "/v1/api/summary")).json() == expected)

            await eventually(lambda: summed(one.url))
            await eventually(lambda: summed(two.url))

            # Two's lease on its room is taken by another node (as when two was paused past the
            # ttl and another adopted the room): two closes its copy, its client is told
            # room_closed (4012), and two no longer has the room.
            room = on_two.json()
            async with open_websocket(two.ws_url + "/v1/websocket") as ws:
                client = RoomClient(ws)
                await client.join(room["id"], room["secret"])
                async with coredis.Redis.from_url(redis.url) as ghost:
                    await ghost.set(f"relay:lease:room:{room['id']}", b"ghost:999999", px=5000)
                    await client.expect_error("room_closed", 4012)
                    gone_here = await http.get(two.url + f"/v1/api/rooms/{room['id']}")
                    assert gone_here.status_code == 404  # held by a node with no URLs
                    await ghost.delete([f"relay:lease:room:{room['id']}"])
    await stop_two()
    await stop_one()
