"""App rooms in cluster mode, on two real servers sharing one real Redis: a room lives on the
node that created it; the other node answers its REST requests with a 307 to that node and its
WebSocket joins with a `moved` frame and close 4014, and forgets the room once it is deleted.

As in test_two_servers, the second server runs on a copy of the first one's database (so the
account exists on both)."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import httpx
import hypothesis.strategies as st
import msgspec
import trio
from hypothesis import given, settings

from relay.client import open_websocket
from relay.protocol.rooms import Close, Moved
from tests.cluster.test_two_servers import eventually
from tests.conftest import settings_for, start_server
from tests.rooms.conftest import ROOM_SETTINGS, RoomClient, account, new_room

if TYPE_CHECKING:
    from pathlib import Path

    from tests.realservers import RedisServer


@settings(max_examples=30)
@given(st.builds(Moved, room_id=st.text(max_size=20), url=st.text(max_size=200)))
def test_moved_frame_round_trips(frame: Moved) -> None:
    data = msgspec.json.encode(frame)
    assert msgspec.json.decode(data)["type"] == "moved"
    assert msgspec.json.decode(data, type=Moved) == frame


async def follow(http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
    """A request that follows one 307 with its token (httpx, like browsers, drops the
    Authorization header on a redirect to another origin: a client re-sends it)."""
    answer = await http.request(method, url, **kw)
    if answer.status_code != 307:
        return answer
    return await http.request(method, answer.headers["location"], **kw)


async def _equal(value: Any, expected: object) -> bool:
    return bool(await value == expected)


async def test_a_room_is_reached_through_its_node_from_the_other(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    common = {"broker": redis.url, **ROOM_SETTINGS}
    first, stop_first = await start_server(nursery, settings_for(tmp_path / "a", **common))
    alice = await account(first, "alice")
    token = alice.access_token
    await stop_first()
    shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "data")
    one, stop_one = await start_server(nursery, settings_for(tmp_path / "a", **common))
    two, stop_two = await start_server(nursery, settings_for(tmp_path / "b", **common))
    alice_one = one.client()
    alice_one.access_token = token
    auth = {"Authorization": f"Bearer {token}"}
    with trio.fail_after(20):
        room = await new_room(alice_one, public=True)
        path = f"/v1/api/rooms/{room['id']}"
        async with httpx.AsyncClient() as http:
            # REST on two: a 307 to one, which a client follows (PATCH keeps its method).
            moved = await http.get(two.url + path + "?x=1", headers=auth)
            assert moved.status_code == 307
            assert moved.headers["location"] == one.url + path + "?x=1"
            found = await follow(http, "GET", two.url + path, headers=auth)
            assert found.status_code == 200
            assert found.json()["secret"] == room["secret"]
            body = {"metadata": {"map": "x"}}
            patched = await follow(http, "PATCH", two.url + path, json=body, headers=auth)
            assert patched.json()["metadata"] == {"map": "x"}
            # The bundled client (and so `relay rooms`) follows the redirect with its token.
            alice_via_two = two.client()
            alice_via_two.access_token = token
            shown = await alice_via_two.call("GET", path)
            assert shown["secret"] == room["secret"]
            # A room nobody has is unknown on two as on one.
            missing = await http.get(two.url + "/v1/api/rooms/12345", headers=auth)
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "unknown_room"

            # The WebSocket on two: `moved` with one's URL, then close 4014; joined there.
            async with open_websocket(two.ws_url + "/v1/websocket") as ws:
                client = RoomClient(ws)
                await client.send("connect", room_id=room["id"], secret=room["secret"])
                went = await client.event("moved")
                assert went == {
                    "type": "moved",
                    "room_id": room["id"],
                    "url": one.ws_url + "/v1/websocket",
                }
                await client.expect_error("room_elsewhere", Close.ELSEWHERE)
            async with open_websocket(went["url"]) as ws:
                client = RoomClient(ws)
                connected = await client.join(room["id"], room["secret"])
                assert connected["client_id"] == 1

            # The public listing covers both nodes (private rooms stay out of it), in id
            # order, and pages with `after` across them.
            alice_two = two.client()
            alice_two.access_token = token
            room_two = await new_room(alice_two, public=True)
            await new_room(alice_two, public=False)
            listed = [room["id"], room_two["id"]]

            async def listing(server_url: str, query: str = "") -> list[str]:
                page = await http.get(server_url + "/v1/api/rooms" + query)
                return [r["id"] for r in page.json()]

            await eventually(lambda: _equal(listing(one.url), listed))
            assert await listing(two.url) == listed
            assert await listing(two.url, f"?after={room['id']}") == [room_two["id"]]
            assert await listing(one.url, "?limit=1") == [room["id"]]
            shown = (await http.get(two.url + "/v1/api/rooms")).json()[0]
            assert "secret" not in shown
            assert shown["metadata"] == {"map": "x"}

            # Deleted on one (through two's redirect): unknown there, and two stops sending
            # clients to one once the room's lease is released.
            gone = await follow(http, "DELETE", two.url + path, headers=auth)
            assert gone.status_code == 204
            assert (await follow(http, "GET", two.url + path, headers=auth)).status_code == 404

            async def forgotten() -> bool:
                return (await http.get(two.url + path, headers=auth)).status_code == 404

            await eventually(forgotten)
            await eventually(lambda: _equal(listing(two.url), [room_two["id"]]))
    await stop_two()
    await stop_one()
