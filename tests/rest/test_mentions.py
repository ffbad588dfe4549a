"""Mentions beyond users through the real server: @everyone and @here (MENTION_EVERYONE, online
members), role mentions (mentionable roles), allowed_mentions, read-state counts and the
mentions inbox, with what a member may no longer see left out."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from relay.client import open_gateway
from tests.rest.conftest import add_role, gather, give, join, new_server

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tests.rest.conftest import Person, SharedServer


async def send(person: Person, channel: str, content: str, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = await person.call(
        "POST", f"/channels/{channel}/messages", {"content": content, **extra}
    )
    return message


async def inbox(person: Person, query: str = "") -> list[str]:
    return [m["id"] for m in await person.call("GET", f"/users/@me/mentions{query}")]


async def mention_counts(shared_server: SharedServer, person: Person) -> dict[str, int]:
    async with open_gateway(shared_server.ws_url) as gw:
        with trio.fail_after(10):
            ready = await gw.identify(person.token)
    return {s["channel_id"]: s["mention_count"] for s in ready["read_states"]}


async def test_everyone_here_roles_inbox_and_counts(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, online, offline = await gather(
        partial(people, "owner"), partial(people, "online"), partial(people, "offline")
    )
    server, general = await new_server(owner)
    await join(owner, server, online, offline)
    role = await add_role(owner, server, 0)
    await give(owner, server, offline, role)

    # Without MENTION_EVERYONE, @everyone is text; the owner has every permission.
    plain = await send(online, general, "@everyone hello")
    assert plain["mention_everyone"] is False
    loud = await send(owner, general, "@everyone look")
    assert loud["mention_everyone"] is True
    # @here reaches who is online (a gateway session), not the others.
    async with open_gateway(shared_server.ws_url) as gw:
        with trio.fail_after(10):
            await gw.identify(online.token)
        here = await send(owner, general, "@here now")
    assert here["mention_everyone"] is True
    # A role that is not mentionable: only MENTION_EVERYONE makes its mention count.
    quiet = await send(online, general, f"<@&{role}> ping")
    assert quiet["mention_roles"] == []
    forced = await send(owner, general, f"<@&{role}> ping")
    assert forced["mention_roles"] == [role]
    await owner.call("PATCH", f"/servers/{server}/roles/{role}", {"mentionable": True})
    by_role = await send(online, general, f"<@&{role}> <@&{server}> <@&1> again")
    assert by_role["mention_roles"] == [role]  # not @everyone's id, nor an unknown role
    direct = await send(online, general, f"<@{offline.id}> and <@&{role}>")

    assert await inbox(offline) == [direct["id"], by_role["id"], forced["id"], loud["id"]]
    assert await inbox(online) == [here["id"], loud["id"]]
    assert await inbox(owner) == []  # one's own messages are not in one's inbox
    assert await inbox(offline, f"?limit=2&before={by_role['id']}") == [forced["id"], loud["id"]]
    assert await inbox(offline, f"?server_id={server}") == await inbox(offline)
    assert await inbox(offline, "?server_id=123") == []
    # Each message counts once, however many ways it mentions the user.
    assert (await mention_counts(shared_server, offline))[general] == 4
    # Posting marks the channel read up to one's own message: older mentions are read.
    assert (await mention_counts(shared_server, online))[general] == 0

    # Someone who joins later is not mentioned by the @everyone of before.
    newcomer = await people("newcomer")
    await join(owner, server, newcomer)
    assert await inbox(newcomer) == []
    assert (await mention_counts(shared_server, newcomer))[general] == 0
    later = await send(owner, general, "@everyone welcome")
    assert await inbox(newcomer) == [later["id"]]

    # Channels the member can no longer read drop out of the inbox and of the counts.
    deny = {"type": "member", "allow": "0", "deny": str(1 << 2)}  # READ_MESSAGE_HISTORY
    await owner.call("PUT", f"/channels/{general}/permissions/{offline.id}", deny)
    assert await inbox(offline) == []


async def test_allowed_mentions(people: Callable[[str], Awaitable[Person]]) -> None:
    owner, ann, ben = await gather(
        partial(people, "owner"), partial(people, "ann"), partial(people, "ben")
    )
    server, general = await new_server(owner)
    await join(owner, server, ann, ben)
    role = await add_role(owner, server, 0)
    text = f"@everyone <@{ann.id}> <@{ben.id}> <@&{role}>"

    nothing = await send(owner, general, text, allowed_mentions={"parse": []})
    assert (nothing["mentions"], nothing["mention_roles"], nothing["mention_everyone"]) == (
        [],
        [],
        False,
    )
    some = await send(
        owner, general, text, allowed_mentions={"users": [ann.id], "parse": ["roles"]}
    )
    assert (some["mentions"], some["mention_roles"], some["mention_everyone"]) == (
        [ann.id],
        [role],
        False,
    )
    everything = await send(
        owner, general, text, allowed_mentions={"parse": ["users", "roles", "everyone"]}
    )
    assert everything["mention_everyone"] is True
    assert sorted(everything["mentions"]) == sorted([ann.id, ben.id])
    # replied_user mentions the author of the message replied to.
    original = await send(ann, general, "a question")
    reply = await send(
        ben,
        general,
        "an answer",
        reply_to=original["id"],
        allowed_mentions={"replied_user": True},
    )
    assert reply["mentions"] == [ann.id]
    assert (await send(ben, general, "again", reply_to=original["id"]))["mentions"] == []

    bad = [
        {"parse": ["users"], "users": [ann.id]},
        {"parse": ["roles"], "roles": [role]},
        {"users": ["not-an-id"]},
        {"parse": ["all"]},
        {"parse": "users"},
        {"users": [ann.id] * 101},
        {"unknown": True},
    ]
    for allowed in bad:
        status, payload = await owner.status(
            "POST", f"/channels/{general}/messages", {"content": text, "allowed_mentions": allowed}
        )
        assert status == 400, (allowed, payload)
    for query in ("?limit=0", "?limit=101", "?limit=x", "?before=abc", "?server_id=-1"):
        status, payload = await owner.status("GET", f"/users/@me/mentions{query}")
        assert (status, payload["error"]["code"]) == (400, "invalid_field"), query


async def test_allowed_mentions_on_gateway_sends(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, ann = await gather(partial(people, "owner"), partial(people, "ann"))
    server, general = await new_server(owner)
    await join(owner, server, ann)
    async with open_gateway(shared_server.ws_url) as gw:
        with trio.fail_after(10):
            await gw.identify(owner.token)
            for nonce, allowed in (("quiet", {"parse": []}), ("loud", None)):
                d: dict[str, Any] = {
                    "channel_id": general,
                    "content": f"@everyone <@{ann.id}>",
                    "nonce": nonce,
                }
                if allowed is not None:
                    d["allowed_mentions"] = allowed
                await gw.send(12, d)
                frame = await gw.receive()
                while frame.get("op") != 13:
                    frame = await gw.receive()
                path = f"/channels/{general}/messages/{frame['d']['id']}"
                message = await owner.call("GET", path)
                expected = ([], False) if nonce == "quiet" else ([ann.id], True)
                assert (message["mentions"], message["mention_everyone"]) == expected
