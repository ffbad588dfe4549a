"""Escalation attempts: every way a member might try to get more than they were given, through
the real server. All of them must fail, and leave nothing changed."""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import quote

from relay.permissions import ALL, DEFAULT_EVERYONE, P
from tests.rest.conftest import add_role, gather, give, join, new_server, post

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tests.rest.conftest import Person

MOD = (
    P.MANAGE_ROLES
    | P.KICK_MEMBERS
    | P.BAN_MEMBERS
    | P.MODERATE_MEMBERS
    | P.MANAGE_CHANNELS
    | P.MANAGE_NICKNAMES
)


async def staff(people: Callable[[str], Awaitable[Person]]) -> tuple[Person, Person, str, str, str]:
    """An owner and a moderator (role at position 5, MOD permissions) in a server; returns
    them, the server, the moderator's role and a role just above it (position 6)."""
    owner, mod = await gather(partial(people, "owner"), partial(people, "mod"))
    server, _ = await new_server(owner)
    await join(owner, server, mod)
    mod_role = await add_role(owner, server, MOD | DEFAULT_EVERYONE, 5)
    above = await add_role(owner, server, ALL & ~P.ADMINISTRATOR, 6)
    await give(owner, server, mod, mod_role)
    return owner, mod, server, mod_role, above


async def roles_of(person: Person, server: str) -> dict[str, dict[str, object]]:
    return {r["id"]: r for r in await person.call("GET", f"/servers/{server}/roles")}


async def test_granting_oneself_a_role_fails(people: Callable[[str], Awaitable[Person]]) -> None:
    owner, mod, server, mod_role, above = await staff(people)
    below = await add_role(owner, server, P.MANAGE_MESSAGES, 2)

    for role in (above, mod_role, below):  # higher, the same, and even a lower one: not to oneself
        path = f"/servers/{server}/members/{mod.id}/roles/{role}"
        assert (await mod.error("PUT", path))[:2] == (403, "role_hierarchy"), role
    members = await owner.call("GET", f"/servers/{server}/members")
    assert next(m for m in members if m["user"]["id"] == mod.id)["roles"] == [mod_role]


async def test_editing_ones_own_or_a_higher_role_fails(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, mod, server, mod_role, above = await staff(people)
    admin = {"permissions": str(int(P.ADMINISTRATOR))}
    for role in (mod_role, above):
        path = f"/servers/{server}/roles/{role}"
        assert (await mod.error("PATCH", path, admin))[:2] == (403, "role_hierarchy")
        assert (await mod.error("DELETE", path))[:2] == (403, "role_hierarchy")
    # A role one may edit still cannot be given what one lacks.
    below = await add_role(owner, server, 0, 2)
    refused = await mod.error("PATCH", f"/servers/{server}/roles/{below}", admin)
    assert refused == (403, "missing_permission", "ADMINISTRATOR")
    created = await mod.error(
        "POST", f"/servers/{server}/roles", {"name": "x", "permissions": admin["permissions"]}
    )
    assert created == (403, "missing_permission", "ADMINISTRATOR")
    at_my_level = await mod.error("POST", f"/servers/{server}/roles", {"position": 5})
    assert at_my_level[:2] == (403, "role_hierarchy")
    assert (await roles_of(owner, server))[below]["permissions"] == "0"


async def test_making_everyone_an_administrator_fails(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, mod, server, _, _ = await staff(people)
    member = await people("member")
    await join(owner, server, member)
    path = f"/servers/{server}/roles/{server}"
    admin = {"permissions": str(DEFAULT_EVERYONE | P.ADMINISTRATOR)}

    assert await member.error("PATCH", path, admin) == (403, "missing_permission", "MANAGE_ROLES")
    assert await mod.error("PATCH", path, admin) == (403, "missing_permission", "ADMINISTRATOR")
    assert (await roles_of(owner, server))[server]["permissions"] == str(DEFAULT_EVERYONE)
    # What the moderator has, they may hand to @everyone (it is below everybody).
    kick = {"permissions": str(DEFAULT_EVERYONE | P.KICK_MEMBERS)}
    assert (await mod.status("PATCH", path, kick))[0] == 200
    assert (await mod.error("PATCH", path, {"name": "all"}))[:2] == (400, "everyone_role")
    assert (await mod.error("DELETE", path))[:2] == (400, "everyone_role")


async def test_moving_a_role_above_ones_own_fails(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, mod, server, mod_role, _ = await staff(people)
    below = await add_role(owner, server, 0, 2)
    path = f"/servers/{server}/roles"
    for moves in (
        [{"id": below, "position": 5}],  # level with mine
        [{"id": below, "position": 7}],  # above mine
        [{"id": mod_role, "position": 9}],  # mine, higher
        [{"id": below, "position": 3}, {"id": server, "position": 4}],  # @everyone never moves
    ):
        assert (await mod.error("PATCH", path, moves))[0] in (400, 403), moves
    roles = await roles_of(owner, server)
    assert (roles[below]["position"], roles[mod_role]["position"]) == (2, 5)
    moved = await mod.call("PATCH", path, [{"id": below, "position": 4}])
    assert {r["id"]: r["position"] for r in moved}[below] == 4


async def test_nobody_touches_the_owner(people: Callable[[str], Awaitable[Person]]) -> None:
    owner, mod, server, _, above = await staff(people)
    boss = await people("boss")
    await join(owner, server, boss)
    await give(owner, server, boss, above)
    base = f"/servers/{server}"
    for target in (owner, boss):  # the owner, and a member whose role is above the moderator's
        for method, path, body in [
            ("DELETE", f"{base}/members/{target.id}", None),
            ("PUT", f"{base}/bans/{target.id}", {}),
            ("PATCH", f"{base}/members/{target.id}", {"nickname": "x"}),
            (
                "PATCH",
                f"{base}/members/{target.id}",
                {"communication_disabled_until": "2099-01-01T00:00:00Z"},
            ),
        ]:
            refused = await mod.error(method, path, body)
            assert refused[:2] == (403, "role_hierarchy"), (target.name, method, body)
    # Not even someone with every permission but ownership can touch the owner.
    admin = await people("admin")
    await join(owner, server, admin)
    await give(owner, server, admin, await add_role(owner, server, P.ADMINISTRATOR, 9))
    assert (await admin.error("DELETE", f"{base}/members/{owner.id}"))[:2] == (
        403,
        "role_hierarchy",
    )
    assert (await admin.error("PUT", f"{base}/bans/{owner.id}", {}))[:2] == (403, "role_hierarchy")
    members = {m["user"]["id"] for m in await owner.call("GET", f"{base}/members")}
    assert {owner.id, boss.id, admin.id} <= members


async def test_a_banned_user_cannot_rejoin(people: Callable[[str], Awaitable[Person]]) -> None:
    owner, mod, server, _, _ = await staff(people)
    pest = await people("pest")
    await join(owner, server, pest)
    old = await owner.call("POST", f"/servers/{server}/invites", {"max_uses": 5})

    await mod.call("PUT", f"/servers/{server}/bans/{pest.id}", {"reason": "spam"})

    assert (await pest.error("GET", f"/servers/{server}"))[:2] == (404, "unknown_server")
    fresh = await owner.call("POST", f"/servers/{server}/invites", {"max_uses": 1})
    for code in (old["code"], fresh["code"]):
        assert (await pest.error("POST", f"/invites/{code}"))[:2] == (403, "banned")
    await owner.call("PATCH", f"/servers/{server}", {"public": True})
    assert (await pest.error("POST", f"/servers/{server}/join"))[:2] == (403, "banned")
    invites = {i["code"]: i["uses"] for i in await owner.call("GET", f"/servers/{server}/invites")}
    assert invites[fresh["code"]] == 0  # a refused join spends nothing
    # Unbanned, they may come back.
    await mod.call("DELETE", f"/servers/{server}/bans/{pest.id}")
    assert (await pest.status("POST", f"/invites/{fresh['code']}"))[0] == 201


async def test_a_timed_out_member_can_read_but_not_send_or_react(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, mod, server, _, _ = await staff(people)
    member = await people("member")
    await join(owner, server, member)
    text = (await owner.call("GET", f"/servers/{server}/channels"))[0]["id"]
    message = await post(owner, text, "before")
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))

    updated = await mod.call(
        "PATCH", f"/servers/{server}/members/{member.id}", {"communication_disabled_until": until}
    )

    assert updated["communication_disabled_until"].startswith(until[:19])
    thumbs = quote("👍", safe="")
    for method, path, body, permission in [
        ("POST", f"/channels/{text}/messages", {"content": "hi"}, "SEND_MESSAGES"),
        ("POST", f"/channels/{text}/typing", None, "SEND_MESSAGES"),
        (
            "PUT",
            f"/channels/{text}/messages/{message}/reactions/{thumbs}/@me",
            None,
            "ADD_REACTIONS",
        ),
        ("POST", f"/servers/{server}/invites", {}, "CREATE_INVITE"),
    ]:
        assert await member.error(method, path, body) == (403, "timed_out", permission), path
    assert len(await member.call("GET", f"/channels/{text}/messages")) == 1  # reading still works
    # Ending the timeout gives everything back.
    await mod.call(
        "PATCH", f"/servers/{server}/members/{member.id}", {"communication_disabled_until": None}
    )
    await post(member, text, "after")


async def test_overwrites_cannot_grant_what_one_lacks(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, mod, server, _, above = await staff(people)
    text = (await owner.call("GET", f"/servers/{server}/channels"))[0]["id"]
    path = f"/channels/{text}/permissions"
    for target, body, expected in [
        # A permission the moderator lacks (MANAGE_SERVER), for @everyone.
        (server, {"type": "role", "allow": str(int(P.MANAGE_SERVER))}, "missing_permission"),
        # Oneself: members at one's own level are out of reach.
        (mod.id, {"type": "member", "allow": str(int(P.SEND_MESSAGES))}, "role_hierarchy"),
        # A role above one's own.
        (above, {"type": "role", "deny": str(int(P.VIEW_CHANNEL))}, "role_hierarchy"),
        # The owner.
        (owner.id, {"type": "member", "deny": str(int(P.VIEW_CHANNEL))}, "role_hierarchy"),
    ]:
        refused = await mod.error("PUT", f"{path}/{target}", body)
        assert refused[:2] == (403, expected), (target, body)
    admin = {"type": "role", "allow": str(int(P.ADMINISTRATOR))}
    assert (await owner.error("PUT", f"{path}/{server}", admin))[:2] == (400, "invalid_field")
    unknown = str(1 << 40)  # a bit no permission has
    assert (await owner.error("PUT", f"{path}/{server}", {"type": "role", "allow": unknown}))[
        :2
    ] == (400, "invalid_field")
    channel = await owner.call("GET", f"/channels/{text}")
    assert channel["permission_overwrites"] == []


async def test_channel_managers_cannot_reveal_or_overwrite_by_the_back_door(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, member, manager = await gather(
        partial(people, "owner"), partial(people, "member"), partial(people, "manager")
    )
    server, _ = await new_server(owner)
    await join(owner, server, member, manager)
    await give(
        owner,
        server,
        manager,
        await add_role(owner, server, DEFAULT_EVERYONE | P.MANAGE_CHANNELS, 3),
    )
    hide = [{"id": server, "type": "role", "deny": str(int(P.VIEW_CHANNEL))}]
    # Creating a channel with overwrites needs MANAGE_ROLES too.
    body = {"name": "x", "type": "text", "permission_overwrites": hide}
    assert await manager.error("POST", f"/servers/{server}/channels", body) == (
        403,
        "missing_permission",
        "MANAGE_ROLES",
    )
    # A private category with a channel that follows it: the manager can see neither... so it
    # is the owner's; the manager can neither move nor resync what it cannot see.
    private = await owner.call(
        "POST",
        f"/servers/{server}/channels",
        {"name": "staff", "type": "category", "permission_overwrites": hide},
    )
    inner = await owner.call(
        "POST",
        f"/servers/{server}/channels",
        {"name": "s", "type": "text", "parent_id": private["id"]},
    )
    assert inner["permissions_synced"]
    for who in (member, manager):
        assert (await who.error("GET", f"/channels/{inner['id']}"))[:2] == (404, "unknown_channel")
        assert (await who.error("PATCH", f"/channels/{inner['id']}", {"parent_id": None}))[0] == 404
    # Moving the channel out, or deleting its category, keeps it hidden.
    await owner.call("PATCH", f"/channels/{inner['id']}", {"parent_id": None})
    assert (await member.error("GET", f"/channels/{inner['id']}"))[0] == 404
    await owner.call("PATCH", f"/channels/{inner['id']}", {"parent_id": private["id"]})
    assert (await member.error("GET", f"/channels/{inner['id']}"))[0] == 404
    await owner.call("DELETE", f"/channels/{private['id']}")
    orphan = await owner.call("GET", f"/channels/{inner['id']}")
    assert (orphan["parent_id"], orphan["permissions_synced"]) == (None, False)
    assert orphan["permission_overwrites"] == [
        {"id": server, "type": "role", "allow": "0", "deny": str(int(P.VIEW_CHANNEL))}
    ]
    assert (await member.error("GET", f"/channels/{inner['id']}"))[0] == 404
    # Resyncing (which can change who sees it) needs MANAGE_ROLES.
    public = await owner.call(
        "POST", f"/servers/{server}/channels", {"name": "c", "type": "category"}
    )
    shown = await owner.call(
        "POST",
        f"/servers/{server}/channels",
        {"name": "t", "type": "text", "parent_id": public["id"]},
    )
    assert await manager.error(
        "PATCH", f"/channels/{shown['id']}", {"permissions_synced": False}
    ) == (
        403,
        "missing_permission",
        "MANAGE_ROLES",
    )


async def test_without_view_channel_nothing_else_counts(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, member = await gather(partial(people, "owner"), partial(people, "member"))
    server, text = await new_server(owner)
    await join(owner, server, member)
    await give(owner, server, member, await add_role(owner, server, ALL & ~P.ADMINISTRATOR, 3))
    await owner.call(
        "PUT",
        f"/channels/{text}/permissions/{member.id}",
        {"type": "member", "deny": str(int(P.VIEW_CHANNEL))},
    )
    # Every permission but VIEW_CHANNEL in that channel: it does not exist for them.
    for method, path, body in [
        ("GET", f"/channels/{text}", None),
        ("PATCH", f"/channels/{text}", {"name": "mine"}),
        ("DELETE", f"/channels/{text}", None),
        ("PUT", f"/channels/{text}/permissions/{member.id}", {"type": "member"}),
        ("POST", f"/channels/{text}/messages", {"content": "x"}),
    ]:
        assert (await member.error(method, path, body))[:2] == (404, "unknown_channel"), path
