"""Group DMs end to end: making one (2 to 9 others who share a server with the maker), its
name, the owner adding and removing recipients, leaving (ownership passes on, the last one out
deletes it), its messages, reactions, acks and typing, the events each recipient hears (and
that a removed one stops hearing it at once), and every bad input. Runs with the in-process
fan-out and the msgpack one (`gateway_server`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio

from relay.client import open_gateway
from tests.gateway.conftest import join, new_member

if TYPE_CHECKING:
    from relay.client import Gateway
    from tests.conftest import RunningServer
    from tests.gateway.conftest import Member

THUMBS = "%F0%9F%91%8D"


async def api(member: Member, method: str, path: str, body: Any = None) -> Any:
    return await member.client.call(method, f"/v1/api{path}", body)


async def error(member: Member, method: str, path: str, body: Any = None) -> tuple[int, str]:
    response = await member.client.request(method, f"/v1/api{path}", json=body)
    assert not response.is_success, (method, path, response.text)
    return response.status_code, response.json()["error"]["code"]


async def until(gateway: Gateway, t: str, channel_id: str) -> dict[str, Any]:
    """The next `t` about `channel_id` (by its `id` or `channel_id`)."""
    with trio.fail_after(5):
        while True:
            frame = await gateway.dispatch()
            d = frame["d"]
            if frame["t"] == t and channel_id in (d.get("id"), d.get("channel_id")):
                return dict(d)


async def quiet_about(gateway: Gateway, channel_id: str) -> None:
    """Nothing about `channel_id` reaches `gateway` for a while."""
    with trio.move_on_after(0.3):
        while True:
            d = (await gateway.dispatch())["d"]
            assert channel_id not in (d.get("id"), d.get("channel_id")), d


async def people(server: RunningServer, n: int) -> tuple[list[Member], str]:
    """`n` users who share a server (the first owns it)."""
    members = [await new_member(server, f"u{i}") for i in range(n)]
    created = await api(members[0], "POST", "/servers", {"name": "home"})
    await join(members[0], members[1:], created["id"])
    return members, created["id"]


async def test_a_group_dm_and_its_events(gateway_server: RunningServer) -> None:
    (owner, bob, carol, dave), _ = await people(gateway_server, 4)
    async with (
        open_gateway(gateway_server.ws_url) as bob_gw,
        open_gateway(gateway_server.ws_url) as carol_gw,
        open_gateway(gateway_server.ws_url) as dave_gw,
    ):
        for member, gw in ((bob, bob_gw), (carol, carol_gw), (dave, dave_gw)):
            await gw.identify(member.token)
        group = await api(
            owner,
            "POST",
            "/users/@me/channels",
            {"recipients": [bob.user_id, carol.user_id], "name": "trio"},
        )
        gid = group["id"]
        assert group["type"] == "group_dm"
        assert group["name"] == "trio"
        assert group["owner_id"] == owner.user_id
        assert sorted(u["id"] for u in group["recipients"]) == sorted(
            [owner.user_id, bob.user_id, carol.user_id]
        )
        for gw in (bob_gw, carol_gw):
            assert (await until(gw, "CHANNEL_CREATE", gid))["name"] == "trio"
        # Messages, reactions, acks and typing, as in a 1:1 DM.
        message = await api(bob, "POST", f"/channels/{gid}/messages", {"content": "hi"})
        await until(carol_gw, "MESSAGE_CREATE", gid)
        await api(carol, "PUT", f"/channels/{gid}/messages/{message['id']}/reactions/{THUMBS}/@me")
        await until(bob_gw, "MESSAGE_REACTION_ADD", gid)
        await api(carol, "POST", f"/channels/{gid}/messages/{message['id']}/ack")
        await api(carol, "POST", f"/channels/{gid}/typing")
        await until(bob_gw, "TYPING_START", gid)
        # Any recipient renames it.
        await api(carol, "PATCH", f"/channels/{gid}", {"name": "renamed"})
        assert (await until(bob_gw, "CHANNEL_UPDATE", gid))["name"] == "renamed"
        # The owner adds Dave: he gets the channel, everyone the recipient event, and its
        # messages from now on.
        await api(owner, "PUT", f"/channels/{gid}/recipients/{dave.user_id}")
        assert (await until(dave_gw, "CHANNEL_CREATE", gid))["name"] == "renamed"
        added = await until(bob_gw, "CHANNEL_RECIPIENT_ADD", gid)
        assert added["user"]["id"] == dave.user_id
        await api(owner, "POST", f"/channels/{gid}/messages", {"content": "welcome"})
        await until(dave_gw, "MESSAGE_CREATE", gid)
        # The owner removes Carol: she hears CHANNEL_DELETE and nothing more of it.
        await api(owner, "DELETE", f"/channels/{gid}/recipients/{carol.user_id}")
        await until(carol_gw, "CHANNEL_DELETE", gid)
        removed = await until(bob_gw, "CHANNEL_RECIPIENT_REMOVE", gid)
        assert removed["user"]["id"] == carol.user_id
        await api(owner, "POST", f"/channels/{gid}/messages", {"content": "after"})
        await until(dave_gw, "MESSAGE_CREATE", gid)
        await quiet_about(carol_gw, gid)
        assert (await error(carol, "GET", f"/channels/{gid}/messages")) == (404, "unknown_channel")
        # The owner leaves: ownership passes to the lowest id left, who hears CHANNEL_UPDATE.
        await api(owner, "DELETE", f"/channels/{gid}")
        heir = min((bob, dave), key=lambda m: int(m.user_id))
        updated = await until(bob_gw, "CHANNEL_UPDATE", gid)
        assert updated["owner_id"] == heir.user_id
        # READY lists it with its owner.
        async with open_gateway(gateway_server.ws_url) as again:
            ready = await again.identify(dave.token)
            listed = {c["id"]: c for c in ready["private_channels"]}
            assert listed[gid]["owner_id"] == heir.user_id
            assert gid in {s["channel_id"] for s in ready["read_states"]}
        # The last ones out delete it.
        await api(bob, "DELETE", f"/channels/{gid}")
        await api(dave, "DELETE", f"/channels/{gid}")
        assert (await error(dave, "GET", f"/channels/{gid}")) == (404, "unknown_channel")


@pytest.mark.settings(max_group_dm_recipients=4)
async def test_group_dm_bad_input(gateway_server: RunningServer) -> None:
    (owner, bob, carol, dave, erin), sid = await people(gateway_server, 5)
    stranger = await new_member(gateway_server, "stranger")
    make = "/users/@me/channels"
    for body, expected in (
        ({"recipients": [bob.user_id]}, (400, "invalid_field")),  # too few
        (
            {"recipients": [bob.user_id, carol.user_id, dave.user_id, erin.user_id]},
            (400, "invalid_field"),
        ),
        ({"recipients": [bob.user_id, bob.user_id]}, (400, "invalid_field")),
        ({"recipients": [bob.user_id, owner.user_id]}, (400, "cannot_dm_self")),
        ({"recipients": [bob.user_id, "nope"]}, (400, "invalid_field")),
        ({"recipients": [bob.user_id, "123"]}, (404, "unknown_user")),
        ({"recipients": [bob.user_id, stranger.user_id]}, (403, "no_shared_server")),
        ({"recipients": "x"}, (400, "invalid_field")),
        (
            {"recipients": [bob.user_id, carol.user_id], "recipient_id": bob.user_id},
            (400, "invalid_field"),
        ),
        ({"recipient_id": bob.user_id, "name": "x"}, (400, "invalid_field")),
        ({"recipients": [bob.user_id, carol.user_id], "name": ""}, (400, "invalid_field")),
        ({}, (400, "invalid_field")),
    ):
        assert await error(owner, "POST", make, body) == expected, body
    gid = (await api(owner, "POST", make, {"recipients": [bob.user_id, carol.user_id]}))["id"]
    one_to_one = (await api(owner, "POST", make, {"recipient_id": bob.user_id}))["id"]
    # Only the owner adds and removes; only people who share a server; at most 4 people.
    assert await error(bob, "PUT", f"/channels/{gid}/recipients/{dave.user_id}") == (
        403,
        "not_group_owner",
    )
    assert await error(owner, "PUT", f"/channels/{gid}/recipients/{stranger.user_id}") == (
        403,
        "no_shared_server",
    )
    assert await error(owner, "PUT", f"/channels/{gid}/recipients/123") == (404, "unknown_user")
    assert await error(owner, "PUT", f"/channels/{gid}/recipients/x") == (404, "unknown_user")
    await api(owner, "PUT", f"/channels/{gid}/recipients/{dave.user_id}")
    await api(owner, "PUT", f"/channels/{gid}/recipients/{dave.user_id}")  # again: nothing
    assert await error(owner, "PUT", f"/channels/{gid}/recipients/{erin.user_id}") == (
        422,
        "too_many_recipients",
    )
    assert await error(bob, "DELETE", f"/channels/{gid}/recipients/{carol.user_id}") == (
        403,
        "not_group_owner",
    )
    assert await error(owner, "DELETE", f"/channels/{gid}/recipients/{erin.user_id}") == (
        404,
        "unknown_recipient",
    )
    assert await error(owner, "DELETE", f"/channels/{gid}/recipients/{owner.user_id}") == (
        400,
        "invalid_field",
    )
    # Outsiders, 1:1 DMs and server channels.
    assert await error(stranger, "PUT", f"/channels/{gid}/recipients/{stranger.user_id}") == (
        404,
        "unknown_channel",
    )
    assert await error(owner, "PUT", f"/channels/{one_to_one}/recipients/{carol.user_id}") == (
        400,
        "not_a_group_dm",
    )
    text = (await api(owner, "GET", f"/servers/{sid}/channels"))[0]["id"]
    assert await error(owner, "PUT", f"/channels/{text}/recipients/{carol.user_id}") == (
        400,
        "not_a_group_dm",
    )
    assert await error(owner, "PATCH", f"/channels/{gid}", {"topic": "x"}) == (
        400,
        "invalid_field",
    )
    assert await error(owner, "PATCH", f"/channels/{gid}", {"name": ""}) == (400, "invalid_field")
    assert await error(owner, "DELETE", f"/channels/{one_to_one}") == (403, "dm_channel")
