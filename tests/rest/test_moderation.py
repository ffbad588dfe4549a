"""Moderation through the real server: kicks, bans (with message deletion), timeouts,
nicknames, moderator deletes, bulk delete, pins, slowmode, ownership transfer, the audit log
and server discovery; with the gateway events they produce."""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from relay.client import open_gateway
from relay.permissions import DEFAULT_EVERYONE, P
from tests.rest.conftest import add_role, gather, give, join, new_server, post

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from relay.client import Gateway
    from tests.rest.conftest import Person, SharedServer


def iso_in(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


async def trio_of(
    people: Callable[[str], Awaitable[Person]], mod_perms: int
) -> tuple[Person, Person, Person, str, str]:
    """Owner, a moderator with `mod_perms` (on top of the defaults), a member; the server and
    its text channel."""
    owner, mod, member = await gather(
        partial(people, "owner"), partial(people, "mod"), partial(people, "member")
    )
    server, text = await new_server(owner)
    await join(owner, server, mod, member)
    await give(owner, server, mod, await add_role(owner, server, DEFAULT_EVERYONE | mod_perms, 5))
    return owner, mod, member, server, text


async def next_event(gateway: Gateway, *names: str) -> dict[str, Any]:
    """The next dispatch among `names` (others, like presence, are skipped)."""
    with trio.fail_after(5):
        while True:
            frame = await gateway.dispatch()
            if frame["t"] in names:
                return frame


async def test_kick_removes_the_member_from_everything(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, mod, member, server, text = await trio_of(people, P.KICK_MEMBERS)
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(member.token)
        await mod.call("DELETE", f"/servers/{server}/members/{member.id}", reason="rude")
        removed = await next_event(gw, "MEMBER_REMOVE")
        assert removed["d"]["user"]["id"] == member.id
        assert (await next_event(gw, "SERVER_DELETE"))["d"] == {"id": server}
        await post(owner, text, "after the kick")
        await owner.call("POST", f"/channels/{text}/typing")
        with trio.move_on_after(0.3):  # nothing more of that server reaches them
            frame = await gw.dispatch()
            assert frame["t"] == "PRESENCE_UPDATE", frame
    assert (await member.error("GET", f"/servers/{server}"))[:2] == (404, "unknown_server")
    assert (await mod.error("DELETE", f"/servers/{server}/members/{member.id}"))[:2] == (
        404,
        "unknown_member",
    )
    assert (await mod.error("DELETE", f"/servers/{server}/members/{mod.id}"))[:2] == (
        422,
        "cannot_kick_self",
    )
    # A kick is not a ban: an invite brings them back.
    await join(owner, server, member)
    entry = (await owner.call("GET", f"/servers/{server}/audit-log?action=member_kick"))[0]
    assert (entry["user_id"], entry["target_id"], entry["reason"]) == (mod.id, member.id, "rude")


async def test_ban_deletes_recent_messages_and_lists(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, mod, member, server, text = await trio_of(people, P.BAN_MEMBERS)
    spam = [await post(member, text, f"spam {n}") for n in range(3)]
    kept = await post(owner, text, "mine")
    outsider = await people("outsider")
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(owner.token)
        await mod.call(
            "PUT",
            f"/servers/{server}/bans/{member.id}",
            {"delete_message_days": 1, "reason": "spam"},
        )
        bulk = await next_event(gw, "MESSAGE_DELETE_BULK")
        assert bulk["d"] == {"ids": spam, "channel_id": text}
    history = await owner.call("GET", f"/channels/{text}/messages")
    assert [m["id"] for m in history] == [kept]
    # Pre-banning someone who never joined works too.
    await mod.call("PUT", f"/servers/{server}/bans/{outsider.id}")
    bans = await mod.call("GET", f"/servers/{server}/bans")
    assert [(b["user"]["id"], b["reason"]) for b in bans] == sorted(
        [(member.id, "spam"), (outsider.id, None)], key=lambda b: int(b[0])
    )
    assert (await mod.call("GET", f"/servers/{server}/bans/{member.id}"))["reason"] == "spam"
    await mod.call("DELETE", f"/servers/{server}/bans/{member.id}")
    assert (await mod.error("GET", f"/servers/{server}/bans/{member.id}"))[:2] == (
        404,
        "unknown_ban",
    )
    assert (await mod.error("DELETE", f"/servers/{server}/bans/{member.id}"))[:2] == (
        404,
        "unknown_ban",
    )
    assert (await mod.error("PUT", f"/servers/{server}/bans/123", {}))[:2] == (404, "unknown_user")
    assert (await mod.error("PUT", f"/servers/{server}/bans/{mod.id}", {}))[:2] == (
        422,
        "cannot_ban_self",
    )
    for body in ({"delete_message_days": 8}, {"delete_message_days": -1}, {"why": "x"}):
        assert (await mod.error("PUT", f"/servers/{server}/bans/{outsider.id}", body))[0] == 400
    actions = [e["action"] for e in await owner.call("GET", f"/servers/{server}/audit-log")]
    assert actions[:3] == ["member_ban_remove", "member_ban_add", "member_ban_add"]


async def test_timeouts_and_nicknames(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, mod, member, server, _ = await trio_of(people, P.MODERATE_MEMBERS | P.MANAGE_NICKNAMES)
    path = f"/servers/{server}/members/{member.id}"
    for bad in ("soon", "2030-01-01T00:00:00", iso_in(-60), iso_in(29 * 86_400)):
        refused = await mod.error("PATCH", path, {"communication_disabled_until": bad})
        assert refused[:2] == (400, "invalid_field"), bad
    admin = await people("admin")
    await join(owner, server, admin)
    await give(owner, server, admin, await add_role(owner, server, P.ADMINISTRATOR, 2))
    refused = await owner.error(
        "PATCH",
        f"/servers/{server}/members/{admin.id}",
        {"communication_disabled_until": iso_in(60)},
    )
    assert refused[:2] == (422, "cannot_time_out")

    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(owner.token)
        updated = await mod.call(
            "PATCH", path, {"nickname": "Quiet", "communication_disabled_until": iso_in(60)}
        )
        event = (await next_event(gw, "MEMBER_UPDATE"))["d"]
    assert event["nickname"] == updated["nickname"] == "Quiet"
    assert event["communication_disabled_until"] == updated["communication_disabled_until"]
    # One's own nickname needs CHANGE_NICKNAME only, which a timeout suspends.
    assert await member.error("PATCH", f"/servers/{server}/members/@me", {"nickname": "Me"}) == (
        403,
        "timed_out",
        "CHANGE_NICKNAME",
    )
    cleared = await mod.call(
        "PATCH", path, {"nickname": None, "communication_disabled_until": None}
    )
    assert (cleared["nickname"], cleared["communication_disabled_until"]) == (None, None)
    assert (await member.call("PATCH", f"/servers/{server}/members/@me", {"nickname": "Me"}))[
        "nickname"
    ] == "Me"
    changes = await owner.call("GET", f"/servers/{server}/audit-log?action=member_update")
    assert {c["key"] for e in changes for c in e["changes"]} == {
        "nickname",
        "communication_disabled_until",
    }


async def test_moderators_delete_others_messages_in_bulk_and_alone(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, mod, member, server, text = await trio_of(people, P.MANAGE_MESSAGES)
    ids = [await post(member, text, f"m{n}") for n in range(4)]
    path = f"/channels/{text}/messages"
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(owner.token)
        await mod.call("DELETE", f"{path}/{ids[0]}", reason="off topic")
        assert (await next_event(gw, "MESSAGE_DELETE"))["d"]["id"] == ids[0]
        await mod.call("POST", f"{path}/bulk-delete", {"messages": [ids[1], ids[2], "123"]})
        bulk = (await next_event(gw, "MESSAGE_DELETE_BULK"))["d"]
        assert bulk == {"ids": [ids[1], ids[2]], "channel_id": text}
    assert [m["id"] for m in await owner.call("GET", path)] == [ids[3]]
    for body in (
        {"messages": [ids[3]]},
        {"messages": [ids[3], ids[3]]},
        {"messages": [str(n + 1) for n in range(101)]},
        {"messages": [ids[3], "x"]},
    ):
        assert (await mod.error("POST", f"{path}/bulk-delete", body))[:2] == (400, "invalid_field")
    log = await owner.call("GET", f"/servers/{server}/audit-log?user_id={mod.id}")
    assert [e["action"] for e in log] == ["message_bulk_delete", "message_delete"]
    assert log[1]["reason"] == "off topic"
    assert {c["key"]: c["new"] for c in log[0]["changes"]} == {"channel_id": text, "count": 2}


async def test_pins(
    shared_server: SharedServer,
    people: Callable[[str], Awaitable[Person]],
) -> None:
    _, mod, member, _, text = await trio_of(people, P.MANAGE_MESSAGES)
    first, second = await post(member, text, "first"), await post(member, text, "second")
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(member.token)
        await mod.call("PUT", f"/channels/{text}/pins/{first}")
        event = (await next_event(gw, "CHANNEL_PINS_UPDATE"))["d"]
        assert event == {"channel_id": text, "message_id": first, "pinned": True}
    await mod.call("PUT", f"/channels/{text}/pins/{first}")  # again: nothing changes
    await mod.call("PUT", f"/channels/{text}/pins/{second}")
    pins = await member.call("GET", f"/channels/{text}/pins")
    assert [(m["id"], m["pinned"]) for m in pins] == [(second, True), (first, True)]
    assert (await member.call("GET", f"/channels/{text}/messages/{first}"))["pinned"]
    await mod.call("DELETE", f"/channels/{text}/pins/{second}")
    assert [m["id"] for m in await member.call("GET", f"/channels/{text}/pins")] == [first]
    assert (await mod.error("PUT", f"/channels/{text}/pins/123"))[:2] == (404, "unknown_message")
    await mod.call("PUT", f"/channels/{text}/pins/{second}")  # the shared server's max_pins: 2
    third = await post(member, text, "third")
    assert (await mod.error("PUT", f"/channels/{text}/pins/{third}"))[:2] == (
        422,
        "too_many_pins",
    )
    await member.call("DELETE", f"/channels/{text}/messages/{first}")  # its pin goes with it
    assert [m["id"] for m in await member.call("GET", f"/channels/{text}/pins")] == [second]


async def test_slowmode(people: Callable[[str], Awaitable[Person]]) -> None:
    owner, mod, member, server, text = await trio_of(people, P.BYPASS_SLOWMODE)
    channel = await owner.call("PATCH", f"/channels/{text}", {"rate_limit_per_user": 30})
    assert channel["rate_limit_per_user"] == 30
    await post(member, text, "one")
    response = await member.client.request(
        "POST", f"/v1/api/channels/{text}/messages", json={"content": "two"}
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "slowmode"
    assert 1 <= int(response.headers["Retry-After"]) <= 31
    # A repeated nonce is not a new message: it answers even in slowmode.
    again = await member.client.request(
        "POST", f"/v1/api/channels/{text}/messages", json={"content": "x", "nonce": "n"}
    )
    assert again.status_code == 429
    for _ in range(3):  # BYPASS_SLOWMODE (and the owner, who has everything) are exempt
        await post(mod, text, "fast")
        await post(owner, text, "fast")
    await owner.call("PATCH", f"/channels/{text}", {"rate_limit_per_user": 0})
    await post(member, text, "two")
    for body in ({"rate_limit_per_user": 21_601}, {"rate_limit_per_user": -1}):
        assert (await owner.error("PATCH", f"/channels/{text}", body))[:2] == (400, "invalid_field")
    voice = next(
        c["id"]
        for c in await owner.call("GET", f"/servers/{server}/channels")
        if c["type"] == "voice"
    )
    assert (await owner.error("PATCH", f"/channels/{voice}", {"rate_limit_per_user": 5}))[0] == 400


async def test_ownership_transfer(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, mod, member, server, _ = await trio_of(people, P.KICK_MEMBERS)
    outsider = await people("outsider")
    path = f"/servers/{server}/owner"
    assert (await owner.error("PUT", path, {"owner_id": outsider.id}))[:2] == (
        404,
        "unknown_member",
    )
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(member.token)
        moved = await owner.call("PUT", path, {"owner_id": member.id}, reason="handing over")
        assert (await next_event(gw, "SERVER_UPDATE"))["d"]["owner_id"] == member.id
    assert moved["owner_id"] == member.id
    # The new owner is untouchable; the old one is a member like any other.
    assert (await mod.error("DELETE", f"/servers/{server}/members/{member.id}"))[:2] == (
        403,
        "role_hierarchy",
    )
    assert (await owner.error("DELETE", f"/servers/{server}"))[:2] == (403, "not_owner")
    await mod.call("DELETE", f"/servers/{server}/members/{owner.id}")
    entry = (await member.call("GET", f"/servers/{server}/audit-log?action=owner_transfer"))[0]
    assert entry["changes"] == [{"key": "owner_id", "old": owner.id, "new": member.id}]
    assert entry["reason"] == "handing over"


async def test_audit_log_records_every_kind_of_change(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, mod, member, server, text = await trio_of(people, P.VIEW_AUDIT_LOG)
    reason = "cleaning up: 100% needed ✓"
    encoded = "cleaning%20up%3A%20100%25%20needed%20%E2%9C%93"
    await owner.call("PATCH", f"/servers/{server}", {"name": "Renamed"}, reason=encoded)
    category = await owner.call(
        "POST", f"/servers/{server}/channels", {"name": "c", "type": "category"}
    )
    await owner.call("PATCH", f"/channels/{text}", {"topic": "t"})
    role = await add_role(owner, server, P.SEND_MESSAGES, 2)
    await owner.call("PATCH", f"/servers/{server}/roles/{role}", {"permissions": "0"})
    await give(owner, server, member, role)
    await owner.call("DELETE", f"/servers/{server}/members/{member.id}/roles/{role}")
    await owner.call("PUT", f"/channels/{text}/permissions/{role}", {"type": "role", "allow": "2"})
    await owner.call("PUT", f"/channels/{text}/permissions/{role}", {"type": "role", "deny": "2"})
    await owner.call("DELETE", f"/channels/{text}/permissions/{role}")
    await owner.call("DELETE", f"/servers/{server}/roles/{role}")
    invite = await owner.call("POST", f"/servers/{server}/invites")
    await owner.call("DELETE", f"/invites/{invite['code']}")
    await owner.call("DELETE", f"/channels/{category['id']}")
    # A refused change leaves no entry: the entry is written in the change's transaction.
    assert (await member.error("PATCH", f"/servers/{server}", {"name": "x"}))[0] == 403

    log = await mod.call("GET", f"/servers/{server}/audit-log?limit=100")
    assert [e["action"] for e in log][::-1] == [
        "invite_create",  # trio_of's join
        "role_create",
        "member_role_add",
        "server_update",
        "channel_create",
        "channel_update",
        "role_create",
        "role_update",
        "member_role_add",
        "member_role_remove",
        "overwrite_create",
        "overwrite_update",
        "overwrite_delete",
        "role_delete",
        "invite_create",
        "invite_delete",
        "channel_delete",
    ]
    assert all(e["user_id"] == owner.id for e in log)
    renamed = next(e for e in log if e["action"] == "server_update")
    assert renamed["reason"] == reason
    assert renamed["changes"] == [{"key": "name", "old": "Home", "new": "Renamed"}]
    updated = next(e for e in log if e["action"] == "role_update")
    assert updated["changes"] == [{"key": "permissions", "old": "2", "new": "0"}]
    overwrite = next(e for e in log if e["action"] == "overwrite_update")
    assert overwrite["target_id"] == role
    assert {c["key"]: (c["old"], c["new"]) for c in overwrite["changes"]} == {
        "channel_id": (None, text),
        "allow": ("2", "0"),
        "deny": ("0", "2"),
    }
    # Filters and paging.
    roles_only = await mod.call("GET", f"/servers/{server}/audit-log?action=role_create")
    assert len(roles_only) == 2
    page = await mod.call("GET", f"/servers/{server}/audit-log?limit=2")
    older = await mod.call("GET", f"/servers/{server}/audit-log?limit=2&before={page[-1]['id']}")
    assert page + older == log[:4]
    assert await mod.call("GET", f"/servers/{server}/audit-log?user_id={member.id}") == []
    for query in ("action=nope", "limit=0", "limit=101", "before=x", "user_id=-1"):
        assert (await mod.error("GET", f"/servers/{server}/audit-log?{query}"))[:2] == (
            400,
            "invalid_field",
        ), query
    too_long = await owner.client.request(
        "PATCH",
        f"/v1/api/servers/{server}",
        json={"name": "y"},
        headers={"X-Audit-Log-Reason": "x" * 513},
    )
    assert too_long.status_code == 400


async def test_discovery(people: Callable[[str], Awaitable[Person]]) -> None:
    owner, visitor = await gather(partial(people, "owner"), partial(people, "visitor"))
    marker = f"Zebra{owner.id[-6:]}"
    public, _ = await new_server(owner, f"{marker} public")
    private, _ = await new_server(owner, f"{marker} private")
    described = await owner.call(
        "PATCH", f"/servers/{public}", {"public": True, "description": "all welcome"}
    )
    assert (described["public"], described["description"]) == (True, "all welcome")

    found = await visitor.call("GET", f"/servers/discover?q={marker.lower()}")
    assert found == [
        {"id": public, "name": f"{marker} public", "description": "all welcome", "member_count": 1}
    ]
    assert await visitor.call("GET", "/servers/discover?q=%25") is not None  # % is literal
    assert (await visitor.status("POST", f"/servers/{public}/join"))[0] == 201
    assert (await visitor.status("POST", f"/servers/{public}/join"))[0] == 200
    assert (await visitor.error("POST", f"/servers/{private}/join"))[:2] == (404, "unknown_server")
    await owner.call("PATCH", f"/servers/{public}", {"public": False})
    assert await visitor.call("GET", f"/servers/discover?q={marker}") == []
    assert (await visitor.error("GET", f"/servers/discover?q={'x' * 101}"))[0] == 400
