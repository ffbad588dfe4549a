"""Roles, who holds them, and channel overwrites through the real server: the objects, their
validation, their events, and how categories pass their overwrites to synced channels."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from nacl.signing import SigningKey

from relay.client import open_gateway
from relay.permissions import DEFAULT_EVERYONE, P
from tests.conftest import settings_for, start_server
from tests.rest.conftest import add_role, gather, give, join, new_server

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from relay.client import Gateway
    from tests.rest.conftest import Person, SharedServer

VIEW = str(int(P.VIEW_CHANNEL))


async def event(gateway: Gateway, t: str) -> dict[str, Any]:
    with trio.fail_after(5):
        frame = await gateway.dispatch(t)
    payload: dict[str, Any] = frame["d"]
    return payload


async def test_role_lifecycle_and_events(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, member = await gather(partial(people, "owner"), partial(people, "member"))
    server, _ = await new_server(owner)
    await join(owner, server, member)
    path = f"/servers/{server}/roles"
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(member.token)
        created = await owner.call(
            "POST",
            path,
            {"name": "Mods", "permissions": str(int(P.KICK_MEMBERS)), "color": 0xFF8800,
             "hoist": True, "mentionable": True, "position": 3},
        )  # fmt: skip
        assert await event(gw, "ROLE_CREATE") == {"server_id": server, "role": created}
        assert created == {
            "id": created["id"],
            "name": "Mods",
            "permissions": str(int(P.KICK_MEMBERS)),
            "color": 0xFF8800,
            "position": 3,
            "hoist": True,
            "mentionable": True,
        }
        plain = await owner.call("POST", path, {})
        assert (plain["name"], plain["permissions"], plain["position"]) == ("new role", "0", 1)
        assert [r["id"] for r in await member.call("GET", path)] == [
            server,
            plain["id"],
            created["id"],
        ]

        renamed = await owner.call("PATCH", f"{path}/{created['id']}", {"name": "Moderators"})
        assert (await event(gw, "ROLE_UPDATE"))["role"] == renamed
        await owner.call("PUT", f"/servers/{server}/members/{member.id}/roles/{created['id']}")
        update = await event(gw, "MEMBER_UPDATE")
        assert (update["user"]["id"], update["roles"]) == (member.id, [created["id"]])
        members = await owner.call("GET", f"/servers/{server}/members")
        assert next(m for m in members if m["user"]["id"] == member.id)["roles"] == [created["id"]]

        await owner.call("DELETE", f"{path}/{created['id']}")
        assert await event(gw, "ROLE_DELETE") == {"server_id": server, "role_id": created["id"]}
        members = await owner.call("GET", f"/servers/{server}/members")
        assert next(m for m in members if m["user"]["id"] == member.id)["roles"] == []
    for method, bad in [
        ("PATCH", f"{path}/123"),
        ("DELETE", f"{path}/123"),
        ("PUT", f"/servers/{server}/members/{member.id}/roles/123"),
    ]:
        assert (await owner.error(method, bad, {}))[:2] == (404, "unknown_role"), bad
    assert (await owner.error("PUT", f"/servers/{server}/members/123/roles/{plain['id']}"))[:2] == (
        404,
        "unknown_member",
    )
    assert (await owner.error("PUT", f"/servers/{server}/members/{member.id}/roles/{server}"))[
        :2
    ] == (400, "everyone_role")


async def test_role_bodies_are_validated(people: Callable[[str], Awaitable[Person]]) -> None:
    owner = await people("owner")
    server, _ = await new_server(owner)
    path = f"/servers/{server}/roles"
    for body, field in [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"permissions": 8}, "permissions"),
        ({"permissions": "-1"}, "permissions"),
        ({"permissions": "007"}, "permissions"),
        ({"permissions": str(1 << 40)}, "permissions"),  # not a defined permission
        ({"color": 0x1000000}, "color"),
        ({"position": 0}, "position"),  # @everyone's alone
        ({"managed": True}, "managed"),
    ]:
        status, answer = await owner.status("POST", path, body)
        assert status == 400, body
        assert field in answer["error"]["fields"], (body, answer)
    for moves in ([], [{"id": "x", "position": 2}], [{"id": server}]):
        assert (await owner.status("PATCH", path, moves))[0] == 400, moves


async def test_a_server_has_at_most_max_roles_per_server(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, max_roles_per_server=3))
    async with running.client() as client:
        key = SigningKey.generate()
        await client.register("owner", public_key=bytes(key.verify_key))
        await client.login_with_key("owner", key)
        server = await client.call("POST", "/v1/api/servers", {"name": "Home"})
        path = f"/v1/api/servers/{server['id']}/roles"
        await client.call("POST", path, {})
        await client.call("POST", path, {})  # three with @everyone
        response = await client.request("POST", path, json={})
        assert (response.status_code, response.json()["error"]["code"]) == (422, "too_many_roles")
    await shutdown()


async def test_overwrites_in_channel_objects_and_their_events(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, member = await gather(partial(people, "owner"), partial(people, "member"))
    server, text = await new_server(owner)
    await join(owner, server, member)
    role = await add_role(owner, server, 0, 2)
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(member.token)
        await owner.call(
            "PUT",
            f"/channels/{text}/permissions/{role}",
            {"type": "role", "allow": str(int(P.MANAGE_MESSAGES)), "deny": "0"},
        )
        updated = await event(gw, "CHANNEL_UPDATE")
    assert updated["permission_overwrites"] == [
        {"id": role, "type": "role", "allow": str(int(P.MANAGE_MESSAGES)), "deny": "0"}
    ]
    assert await member.call("GET", f"/channels/{text}") == updated
    # Member overwrites name members; role overwrites name roles of this server.
    put = f"/channels/{text}/permissions"
    assert (await owner.error("PUT", f"{put}/{member.id}", {"type": "role"}))[:2] == (
        404,
        "unknown_role",
    )
    assert (await owner.error("PUT", f"{put}/{role}", {"type": "member"}))[:2] == (
        404,
        "unknown_member",
    )
    assert (await owner.error("PUT", f"{put}/{role}", {"type": "channel"}))[0] == 400
    dm = await owner.call("POST", "/users/@me/channels", {"recipient_id": member.id})
    assert (
        await owner.error(
            "PUT", f"/channels/{dm['id']}/permissions/{member.id}", {"type": "member"}
        )
    )[:2] == (403, "dm_channel")
    # Removing what is not there is fine; removing a departed member's overwrite too.
    await owner.call("DELETE", f"{put}/123")
    await owner.call("PUT", f"{put}/{member.id}", {"type": "member", "deny": VIEW})
    await member.call("DELETE", f"/servers/{server}/members/@me")
    await owner.call("DELETE", f"{put}/{member.id}")
    assert [
        o["id"] for o in (await owner.call("GET", f"/channels/{text}"))["permission_overwrites"]
    ] == [role]


async def test_categories_pass_their_overwrites_to_synced_channels(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, member = await gather(partial(people, "owner"), partial(people, "member"))
    server, _ = await new_server(owner)
    await join(owner, server, member)
    channels = f"/servers/{server}/channels"
    category = await owner.call("POST", channels, {"name": "Group", "type": "category"})
    synced = await owner.call(
        "POST", channels, {"name": "a", "type": "text", "parent_id": category["id"]}
    )
    own = await owner.call(
        "POST",
        channels,
        {"name": "b", "type": "text", "parent_id": category["id"], "permission_overwrites": []},
    )
    assert (synced["permissions_synced"], own["permissions_synced"]) == (True, False)

    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(member.token)
        # Hiding the category hides the synced channel with it, not the other one.
        await owner.call(
            "PUT",
            f"/channels/{category['id']}/permissions/{server}",
            {"type": "role", "deny": VIEW},
        )
        gone = {(await event(gw, "CHANNEL_DELETE"))["id"] for _ in range(2)}
    assert gone == {category["id"], synced["id"]}
    assert (await member.error("GET", f"/channels/{synced['id']}"))[0] == 404
    assert (await member.call("GET", f"/channels/{own['id']}"))["id"] == own["id"]
    seen = await owner.call("GET", f"/channels/{synced['id']}")
    assert seen["permission_overwrites"] == [
        {"id": server, "type": "role", "allow": "0", "deny": VIEW}
    ]

    # Its own overwrite unsyncs it, keeping a copy of the category's.
    await owner.call(
        "PUT",
        f"/channels/{synced['id']}/permissions/{member.id}",
        {"type": "member", "allow": VIEW},
    )
    unsynced = await owner.call("GET", f"/channels/{synced['id']}")
    assert not unsynced["permissions_synced"]
    assert {o["id"] for o in unsynced["permission_overwrites"]} == {server, member.id}
    assert (await member.call("GET", f"/channels/{synced['id']}"))["id"] == synced["id"]
    # Syncing again drops its own and follows the category.
    resynced = await owner.call("PATCH", f"/channels/{synced['id']}", {"permissions_synced": True})
    assert resynced["permissions_synced"]
    assert (await member.error("GET", f"/channels/{synced['id']}"))[0] == 404
    top = await owner.call("POST", channels, {"name": "top", "type": "text"})
    assert (await owner.error("PATCH", f"/channels/{top['id']}", {"permissions_synced": True}))[
        :2
    ] == (400, "invalid_field")


async def test_default_everyone_permissions(people: Callable[[str], Awaitable[Person]]) -> None:
    owner, member = await gather(partial(people, "owner"), partial(people, "member"))
    server, text = await new_server(owner)
    await join(owner, server, member)
    everyone = (await member.call("GET", f"/servers/{server}/roles"))[0]
    assert (everyone["id"], everyone["name"], everyone["permissions"]) == (
        server,
        "@everyone",
        str(DEFAULT_EVERYONE),
    )
    # What a member may do out of the box: talk, react, invite; not manage anything.
    await member.call("POST", f"/channels/{text}/messages", {"content": "hi"})
    await member.call("POST", f"/servers/{server}/invites")
    assert (
        await member.error("POST", f"/servers/{server}/channels", {"name": "x", "type": "text"})
    )[2] == "MANAGE_CHANNELS"
    await give(owner, server, member, await add_role(owner, server, P.MANAGE_CHANNELS, 1))
    await member.call("POST", f"/servers/{server}/channels", {"name": "x", "type": "text"})
