"""The room REST API on a real server: create, list, get, patch, delete, summary, and the
limits (bad input, wrong user, rooms per user, server-wide capacity)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

from relay.client import ApiError
from tests.rooms.conftest import account, joined, new_room

if TYPE_CHECKING:
    from tests.conftest import RunningServer

pytestmark = pytest.mark.settings(room_max_clients=50, rooms_per_user=3, room_capacity=100)


async def test_create_returns_the_room_with_its_secret(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    assert alice.user is not None
    room = await new_room(
        alice, max_clients=4, protocol="host", public=True, metadata={"map": "dust", "v": [1]}
    )
    assert room["max_clients"] == 4
    assert room["current_clients"] == 0
    assert room["status"] == "empty"
    assert room["protocol"] == "host"
    assert room["host_id"] is None
    assert room["public"] is True
    assert room["metadata"] == {"map": "dust", "v": [1]}
    assert room["creator_id"] == alice.user["id"]
    assert len(room["secret"]) >= 43  # 32 random bytes, URL-safe base64
    other = await new_room(alice)
    assert other["secret"] != room["secret"]
    assert other["metadata"] == {}
    assert other["public"] is False
    assert int(other["id"]) > int(room["id"])


async def test_changes_need_a_token(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice)
    anon = rooms_server.client()
    for method, path, body in [
        ("POST", "/v1/api/rooms", {"max_clients": 2, "protocol": "peer"}),
        ("PATCH", f"/v1/api/rooms/{room['id']}", {"public": True}),
        ("DELETE", f"/v1/api/rooms/{room['id']}", None),
    ]:
        response = await anon.request(method, path, json=body)
        assert response.status_code == 401, (method, response.text)
        assert response.json()["error"]["code"] == "missing_token"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_clients": 0, "protocol": "peer"}, "max_clients"),
        ({"max_clients": 51, "protocol": "peer"}, "max_clients"),
        ({"max_clients": "2", "protocol": "peer"}, "max_clients"),
        ({"max_clients": 2, "protocol": "star"}, "protocol"),
        ({"protocol": "peer"}, "max_clients"),
        ({"max_clients": 2, "protocol": "peer", "secret": "mine"}, "secret"),
        ({"max_clients": 2, "protocol": "peer", "metadata": [1, 2]}, "metadata"),
        ({"max_clients": 2, "protocol": "peer", "metadata": {"x": "y" * 4090}}, "metadata"),
        ({"max_clients": 2, "protocol": "peer", "public": "yes"}, "public"),
    ],
)
async def test_create_refuses_bad_input(
    rooms_server: RunningServer, body: dict[str, Any], field: str
) -> None:
    alice = await account(rooms_server, "alice")
    response = await alice.request("POST", "/v1/api/rooms", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_field"
    assert field in error["fields"]


async def test_deeply_nested_metadata_is_a_400(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    nested = '{"max_clients":2,"protocol":"peer","metadata":{"a":' + "[" * 3000 + "]" * 3000 + "}}"
    response = await alice.request(
        "POST", "/v1/api/rooms", content=nested, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


async def test_list_shows_public_rooms_without_secrets_in_pages(
    rooms_server: RunningServer,
) -> None:
    alice = await account(rooms_server, "alice")
    bob = await account(rooms_server, "bob")
    public = [await new_room(alice, public=True), await new_room(bob, public=True)]
    await new_room(alice)  # private: never listed
    public.append(await new_room(bob, public=True, protocol="host"))
    anon = rooms_server.client()
    listed = await anon.call("GET", "/v1/api/rooms")
    assert [r["id"] for r in listed] == [r["id"] for r in public]
    assert all("secret" not in r for r in listed)
    first = await anon.call("GET", "/v1/api/rooms?limit=2")
    assert [r["id"] for r in first] == [r["id"] for r in public[:2]]
    rest = await anon.call("GET", f"/v1/api/rooms?after={first[-1]['id']}&limit=2")
    assert [r["id"] for r in rest] == [public[2]["id"]]
    assert await anon.call("GET", f"/v1/api/rooms?after={public[2]['id']}") == []
    for query in ("limit=0", "limit=101", "limit=x", "after=abc"):
        response = await anon.request("GET", f"/v1/api/rooms?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == "invalid_field"


async def test_get_shows_the_secret_to_the_creator_only(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    bob = await account(rooms_server, "bob")
    anon = rooms_server.client()
    public = await new_room(alice, public=True)
    private = await new_room(alice)
    mine = await alice.call("GET", f"/v1/api/rooms/{private['id']}")
    assert mine["secret"] == private["secret"]
    for client in (bob, anon):
        seen = await client.call("GET", f"/v1/api/rooms/{public['id']}")
        assert "secret" not in seen
        assert seen["id"] == public["id"]
        response = await client.request("GET", f"/v1/api/rooms/{private['id']}")
        assert response.status_code == 404  # a private room exists only for its creator
        assert response.json()["error"]["code"] == "unknown_room"
    for room_id in ("1", "abc", "99999999999999999999"):
        response = await anon.request("GET", f"/v1/api/rooms/{room_id}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_room"


async def test_get_reports_live_clients_and_host(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, max_clients=2, public=True)
    path = f"/v1/api/rooms/{room['id']}"
    with trio.fail_after(5):
        async with joined(rooms_server, room) as first:
            seen = await alice.call("GET", path)
            assert (seen["current_clients"], seen["host_id"], seen["status"]) == (1, 1, "open")
            async with joined(rooms_server, room):
                await first.event("client_joined")
                seen = await alice.call("GET", path)
                assert (seen["current_clients"], seen["status"]) == (2, "full")


async def test_patch_by_the_creator_reaches_the_members(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    room = await new_room(alice, max_clients=4)
    path = f"/v1/api/rooms/{room['id']}"
    with trio.fail_after(5):
        async with joined(rooms_server, room) as member:
            updated = await alice.call(
                "PATCH", path, {"max_clients": 6, "public": True, "metadata": {"round": 2}}
            )
            assert (updated["max_clients"], updated["public"]) == (6, True)
            assert updated["metadata"] == {"round": 2}
            assert updated["secret"] == room["secret"]
            event = await member.event("room_updated")
            assert event == {
                "type": "room_updated",
                "max_clients": 6,
                "public": True,
                "metadata": {"round": 2},
            }
            unchanged = await alice.call("PATCH", path, {"public": False})
            assert (unchanged["max_clients"], unchanged["metadata"]) == (6, {"round": 2})


async def test_patch_refuses_bad_input_other_users_and_unknown_rooms(
    rooms_server: RunningServer,
) -> None:
    alice = await account(rooms_server, "alice")
    bob = await account(rooms_server, "bob")
    room = await new_room(alice, public=True)
    path = f"/v1/api/rooms/{room['id']}"
    for body in ({"max_clients": 0}, {"max_clients": 51}, {"protocol": "host"}, {"public": 1}):
        response = await alice.request("PATCH", path, json=body)
        assert response.status_code == 400, body
    response = await bob.request("PATCH", path, json={"public": False})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_creator"
    response = await alice.request("PATCH", "/v1/api/rooms/12345", json={"public": False})
    assert response.status_code == 404


async def test_delete_by_the_creator_only(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    bob = await account(rooms_server, "bob")
    room = await new_room(alice, public=True)
    path = f"/v1/api/rooms/{room['id']}"
    response = await bob.request("DELETE", path)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_creator"
    assert (await alice.request("DELETE", path)).status_code == 204
    assert (await alice.request("GET", path)).status_code == 404
    assert (await alice.request("DELETE", path)).status_code == 404
    assert await alice.call("GET", "/v1/api/rooms") == []


async def test_summary_totals_and_per_protocol(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    bob = await account(rooms_server, "bob")
    host_room = await new_room(alice, max_clients=5, protocol="host")
    await new_room(alice, max_clients=7, protocol="peer")
    await new_room(bob, max_clients=3, protocol="peer")
    anon = rooms_server.client()
    with trio.fail_after(5):
        async with joined(rooms_server, host_room), joined(rooms_server, host_room):
            summary = await anon.call("GET", "/v1/api/summary")
    assert summary == {
        "number_of_rooms": 3,
        "max_clients": 100,
        "current_clients": 2,
        "committed_clients": 15,
        "protocols": {
            "host": {"number_of_rooms": 1, "current_clients": 2, "committed_clients": 5},
            "peer": {"number_of_rooms": 2, "current_clients": 0, "committed_clients": 10},
        },
    }


async def test_rooms_per_user(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    bob = await account(rooms_server, "bob")
    rooms = [await new_room(alice) for _ in range(3)]
    with pytest.raises(ApiError) as error:
        await new_room(alice)
    assert (error.value.status, error.value.code) == (422, "too_many_rooms")
    await new_room(bob)  # per user
    await alice.call("DELETE", f"/v1/api/rooms/{rooms[0]['id']}")
    await new_room(alice)  # a deleted room frees its place


@pytest.mark.settings(room_capacity=20, rooms_per_user=10)
async def test_capacity_bounds_committed_clients(rooms_server: RunningServer) -> None:
    alice = await account(rooms_server, "alice")
    first = await new_room(alice, max_clients=12)
    with pytest.raises(ApiError) as error:
        await new_room(alice, max_clients=9)
    assert (error.value.status, error.value.code) == (422, "capacity_exceeded")
    second = await new_room(alice, max_clients=8)
    with pytest.raises(ApiError) as error:
        await alice.call("PATCH", f"/v1/api/rooms/{second['id']}", {"max_clients": 9})
    assert error.value.code == "capacity_exceeded"
    await alice.call("PATCH", f"/v1/api/rooms/{first['id']}", {"max_clients": 4})
    await alice.call("PATCH", f"/v1/api/rooms/{second['id']}", {"max_clients": 16})
    summary = await alice.call("GET", "/v1/api/summary")
    assert (summary["committed_clients"], summary["max_clients"]) == (20, 20)
