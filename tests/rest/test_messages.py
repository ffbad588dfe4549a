"""Messages end to end through the real server: posting (nonce dedup, replies, mentions),
history windows, edit, delete, reactions, read acks and typing; the bad input each refuses; and
the events they produce, watched on real gateway connections."""

from __future__ import annotations

import threading
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import trio
from nacl.signing import SigningKey

from relay.client import open_gateway
from relay.ids import timestamp_ms
from tests.conftest import settings_for, start_server
from tests.gateway.test_send import writer_stalled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from relay.client import Gateway, RelayClient
    from tests.conftest import RunningServer


@dataclass
class Member:
    client: RelayClient
    id: str
    token: str


@dataclass
class World:
    """Alice owns a server (text, other_text, voice, category) with Bob in it; Alice and Bob
    share a DM; Eve is in none of it."""

    running: RunningServer
    alice: Member
    bob: Member
    eve: Member
    server_id: str
    text: str
    other_text: str
    voice: str
    category: str
    dm: str


async def new_member(stack: AsyncExitStack, running: RunningServer, name: str) -> Member:
    """A registered, logged-in user (key login: no argon2, so set-up stays fast)."""
    key = SigningKey.generate()
    client = await stack.enter_async_context(running.client())
    user = await client.register(name, public_key=bytes(key.verify_key))
    await client.login_with_key(name, key)
    assert client.access_token is not None
    return Member(client, user["id"], client.access_token)


async def join(owner: Member, server_id: str, *others: Member) -> None:
    invite = await owner.client.call("POST", f"/v1/api/servers/{server_id}/invites", {})
    for member in others:
        await member.client.call("POST", f"/v1/api/invites/{invite['code']}")


async def add_channel(owner: Member, server_id: str, kind: str, name: str) -> str:
    channel = await owner.client.call(
        "POST", f"/v1/api/servers/{server_id}/channels", {"name": name, "type": kind}
    )
    channel_id: str = channel["id"]
    return channel_id


async def make_world(stack: AsyncExitStack, running: RunningServer) -> World:
    alice = await new_member(stack, running, "alice")
    bob = await new_member(stack, running, "bob")
    eve = await new_member(stack, running, "eve")
    server = await alice.client.call("POST", "/v1/api/servers", {"name": "Home"})
    await join(alice, server["id"], bob)
    dm = await alice.client.call("POST", "/v1/api/users/@me/channels", {"recipient_id": bob.id})
    return World(
        running,
        alice,
        bob,
        eve,
        server["id"],
        text=await add_channel(alice, server["id"], "text", "chat"),
        other_text=await add_channel(alice, server["id"], "text", "other"),
        voice=await add_channel(alice, server["id"], "voice", "talk"),
        category=await add_channel(alice, server["id"], "category", "group"),
        dm=dm["id"],
    )


@pytest.fixture
async def world(relay_server: RunningServer) -> AsyncIterator[World]:
    async with AsyncExitStack() as stack:
        yield await make_world(stack, relay_server)


def messages_path(channel_id: str, message_id: str | None = None) -> str:
    path = f"/v1/api/channels/{channel_id}/messages"
    return path if message_id is None else f"{path}/{message_id}"


def reactions_path(channel_id: str, message_id: str, emoji: str, me: bool = True) -> str:
    path = f"{messages_path(channel_id, message_id)}/reactions/{quote(emoji, safe='')}"
    return f"{path}/@me" if me else path


async def post(
    member: Member, channel_id: str, content: str = "hello", **extra: Any
) -> dict[str, Any]:
    message: dict[str, Any] = await member.client.call(
        "POST", messages_path(channel_id), {"content": content, **extra}
    )
    return message


async def history(member: Member, channel_id: str, query: str = "") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await member.client.call("GET", messages_path(channel_id) + query)
    return found


async def error_of(member: Member, method: str, path: str, **kw: Any) -> tuple[int, str]:
    response = await member.client.request(method, path, **kw)
    body = response.json()
    assert set(body) == {"error"}, body
    return response.status_code, body["error"]["code"]


async def field_error(member: Member, method: str, path: str, **kw: Any) -> str:
    """The one field a 400 invalid_field names."""
    response = await member.client.request(method, path, **kw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_field"
    (field,) = error["fields"]
    name: str = field
    return name


async def gateway(stack: AsyncExitStack, member: Member, running: RunningServer) -> Gateway:
    gw = await stack.enter_async_context(open_gateway(running.ws_url))
    await gw.identify(member.token)
    return gw


# -- posting and reading -------------------------------------------------------------------------


async def test_post_and_read_a_message(world: World) -> None:
    alice, bob = world.alice, world.bob
    response = await alice.client.request(
        "POST", messages_path(world.text), json={"content": "hi <@" + bob.id + ">", "nonce": "n1"}
    )
    assert response.status_code == 201
    message = response.json()
    assert set(message) == {
        "id",
        "channel_id",
        "server_id",
        "author",
        "content",
        "nonce",
        "reply_to",
        "mentions",
        "reactions",
        "pinned",
        "edited_at",
        "created_at",
        "embeds",
        "flags",
        "webhook_id",
    }
    assert (message["embeds"], message["flags"], message["webhook_id"]) == ([], 0, None)
    assert message["channel_id"] == world.text
    assert message["server_id"] == world.server_id
    assert message["author"] == {"id": alice.id, "username": "alice", "display_name": None}
    assert (message["content"], message["nonce"], message["reply_to"]) == (
        "hi <@" + bob.id + ">",
        "n1",
        None,
    )
    assert message["mentions"] == [bob.id]
    assert message["reactions"] == []
    assert message["pinned"] is False
    assert message["edited_at"] is None
    assert message["created_at"].endswith("Z")
    assert timestamp_ms(int(message["id"])) > 0

    assert await bob.client.call("GET", messages_path(world.text, message["id"])) == message
    assert await history(bob, world.text) == [message]
    channel = await bob.client.call("GET", f"/v1/api/channels/{world.text}")
    assert channel["last_message_id"] == message["id"]


async def test_a_post_not_committed_in_time_is_503_channel_busy_and_still_stored(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    relay_server, shutdown = await start_server(nursery, settings_for(tmp_path, send_timeout_s=0.3))
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            world = await make_world(stack, relay_server)
            alice = world.alice
            async with writer_stalled(relay_server):
                late = {"content": "late", "nonce": "n-late"}
                busy = await error_of(alice, "POST", messages_path(world.text), json=late)
                assert busy == (503, "channel_busy")
            while not (stored := await history(alice, world.text)):  # noqa: ASYNC110 (no event)
                await trio.sleep(0.01)  # the writer goes on: the post commits after the stall
            assert [m["nonce"] for m in stored] == ["n-late"]
            again = await post(alice, world.text, "late", nonce="n-late")  # the retry finds it
            assert again["id"] == stored[0]["id"]
    await shutdown()


async def test_content_limits_count_characters(world: World) -> None:
    longest = await post(world.alice, world.text, "😀" * 4000)  # 4000 characters, 16000 bytes
    assert len(longest["content"]) == 4000
    padded = await post(world.alice, world.text, "  x\n", nonce="n" * 64)  # kept as sent
    assert (padded["content"], padded["nonce"]) == ("  x\n", "n" * 64)


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"content": ""}, "content"),
    ({"content": " \n\t\u3000"}, "content"),
    ({"content": "x" * 4001}, "content"),
    ({"content": 5}, "content"),
    ({}, "content"),
    ({"content": "hi", "nonce": ""}, "nonce"),
    ({"content": "hi", "nonce": "n" * 65}, "nonce"),
    ({"content": "hi", "nonce": 7}, "nonce"),
    ({"content": "hi", "reply_to": "abc"}, "reply_to"),
    ({"content": "hi", "reply_to": "0"}, "reply_to"),
    ({"content": "hi", "reply_to": "123"}, "reply_to"),  # no such message
    ({"content": "hi", "author_id": "1"}, "author_id"),
]


async def test_post_refuses_bad_bodies(world: World) -> None:
    path = messages_path(world.text)
    for bad, field in BAD_BODIES:
        assert await field_error(world.alice, "POST", path, json=bad) == field, bad
    json_header = {"Content-Type": "application/json"}
    for raw, code in ((b"", "missing_body"), (b"{content", "malformed_json")):
        got = await error_of(world.alice, "POST", path, content=raw, headers=json_header)
        assert got == (400, code)
    assert await history(world.alice, world.text) == []


async def test_reply_to_a_message_of_the_same_channel(world: World) -> None:
    first = await post(world.alice, world.text, "question")
    elsewhere = await post(world.alice, world.other_text, "elsewhere")

    reply = await post(world.bob, world.text, "answer", reply_to=first["id"])
    assert reply["reply_to"] == first["id"]
    path = messages_path(world.text)
    body = {"content": "x", "reply_to": elsewhere["id"]}
    assert await field_error(world.bob, "POST", path, json=body) == "reply_to"
    assert [m["id"] for m in await history(world.alice, world.text)] == [first["id"], reply["id"]]


async def test_mentions_only_those_who_can_see_the_channel(world: World) -> None:
    alice, bob, eve = world.alice, world.bob, world.eve
    content = f"<@{eve.id}> <@{bob.id}> <@{bob.id}> <@{alice.id}> <@1> <@0{bob.id}>"
    message = await post(alice, world.text, content)
    assert message["mentions"] == sorted([alice.id, bob.id], key=int)
    assert message["content"] == content


async def test_dm_messages(world: World) -> None:
    message = await post(world.alice, world.dm, f"psst <@{world.bob.id}>")
    assert message["server_id"] is None
    assert message["mentions"] == [world.bob.id]
    assert await history(world.bob, world.dm) == [message]
    assert await error_of(world.eve, "GET", messages_path(world.dm)) == (404, "unknown_channel")


def every_route(channel_id: str, message_id: str) -> list[tuple[str, str]]:
    """(method, path) of every message route, in one channel, about one message."""
    one = messages_path(channel_id, message_id)
    return [
        ("POST", messages_path(channel_id)),
        ("GET", messages_path(channel_id)),
        ("GET", one),
        ("PATCH", one),
        ("DELETE", one),
        ("PUT", reactions_path(channel_id, message_id, "👍")),
        ("DELETE", reactions_path(channel_id, message_id, "👍")),
        ("GET", reactions_path(channel_id, message_id, "👍", me=False)),
        ("POST", f"{one}/ack"),
        ("POST", f"/v1/api/channels/{channel_id}/typing"),
    ]


async def test_channels_one_cannot_see_are_unknown(world: World) -> None:
    message = await post(world.alice, world.text)
    body = {"content": "x"}
    for channel_id in (world.text, world.dm, "123", "abc", "0", "01"):
        for method, path in every_route(channel_id, message["id"]):
            status_code = await error_of(world.eve, method, path, json=body)
            assert status_code == (404, "unknown_channel"), (method, path)
    assert [m["content"] for m in await history(world.alice, world.text)] == ["hello"]


async def test_voice_and_category_channels_take_no_messages(world: World) -> None:
    for channel_id in (world.voice, world.category):
        for method, path in every_route(channel_id, "123"):
            status_code = await error_of(world.alice, method, path, json={"content": "x"})
            assert status_code == (400, "not_a_text_channel"), (method, path)


async def test_every_route_needs_a_token(world: World) -> None:
    message = await post(world.alice, world.text)
    for method, path in every_route(world.text, message["id"]):
        response = await world.alice.client.request(method, path, json={"content": "x"}, token="")
        assert response.status_code == 401, (method, path)


async def test_unknown_messages(world: World) -> None:
    elsewhere = await post(world.alice, world.other_text)
    for message_id in ("123", "abc", "-1", "0", elsewhere["id"]):
        one = messages_path(world.text, message_id)
        for method, path in [
            ("GET", one),
            ("PATCH", one),
            ("DELETE", one),
            ("PUT", reactions_path(world.text, message_id, "👍")),
            ("DELETE", reactions_path(world.text, message_id, "👍")),
            ("GET", reactions_path(world.text, message_id, "👍", me=False)),
            ("POST", f"{one}/ack"),
        ]:
            status_code = await error_of(world.alice, method, path, json={"content": "x"})
            assert status_code == (404, "unknown_message"), (method, path)


# -- history -------------------------------------------------------------------------------------


async def test_history_windows_are_oldest_first(world: World) -> None:
    made = [(await post(world.alice, world.text, str(i)))["id"] for i in range(7)]

    async def ids(query: str) -> list[str]:
        return [m["id"] for m in await history(world.bob, world.text, query)]

    assert await ids("") == made
    assert await ids("?limit=3") == made[4:]
    assert await ids(f"?before={made[3]}") == made[:3]
    assert await ids(f"?before={made[3]}&limit=2") == made[1:3]
    assert await ids(f"?after={made[3]}") == made[4:]
    assert await ids(f"?after={made[3]}&limit=2") == made[4:6]
    assert await ids(f"?around={made[3]}&limit=3") == made[2:5]
    assert await ids(f"?around={made[3]}&limit=100") == made
    assert await ids(f"?after={made[6]}") == []
    assert await ids("?limit=1") == made[6:]
    assert await ids("?limit=100") == made


BAD_QUERIES: list[tuple[str, set[str]]] = [
    ("?limit=0", {"limit"}),
    ("?limit=101", {"limit"}),
    ("?limit=-1", {"limit"}),
    ("?limit=ten", {"limit"}),
    ("?limit=", {"limit"}),
    ("?limit=" + "9" * 5000, {"limit"}),
    ("?before=abc", {"before"}),
    ("?after=0", {"after"}),
    ("?around=", {"around"}),
    ("?before=1&after=2", {"before", "after"}),
    ("?after=1&around=2", {"after", "around"}),
    ("?before=1&after=2&around=3", {"before", "after", "around"}),
]


async def test_history_refuses_bad_queries(world: World) -> None:
    for query, fields in BAD_QUERIES:
        response = await world.alice.client.request("GET", messages_path(world.text) + query)
        assert response.status_code == 400, (query, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_field"
        assert set(error["fields"]) == fields, query


# -- edit and delete -----------------------------------------------------------------------------


async def test_edit_message(world: World) -> None:
    alice, bob = world.alice, world.bob
    message = await post(alice, world.text, f"hi <@{bob.id}>")
    path = messages_path(world.text, message["id"])

    assert await error_of(bob, "PATCH", path, json={"content": "mine"}) == (403, "not_author")
    for bad in ({"content": ""}, {"content": "   "}, {"content": "x" * 4001}, {}):
        assert await field_error(alice, "PATCH", path, json=bad) == "content"
    assert await field_error(alice, "PATCH", path, json={"content": "x", "nonce": "y"}) == "nonce"
    edited = await alice.client.call("PATCH", path, {"content": f"hi <@{alice.id}>"})

    assert edited["content"] == f"hi <@{alice.id}>"
    assert edited["mentions"] == [alice.id]
    assert edited["edited_at"] is not None
    assert edited["created_at"] == message["created_at"]
    assert edited["id"] == message["id"]
    assert await bob.client.call("GET", path) == edited


async def test_delete_message(world: World) -> None:
    alice, bob = world.alice, world.bob
    first = await post(alice, world.text, "first")
    second = await post(alice, world.text, "second")
    path = messages_path(world.text, second["id"])

    # Someone else's message: only with MANAGE_MESSAGES (tests/rest/test_moderation.py).
    assert await error_of(bob, "DELETE", path) == (403, "missing_permission")
    response = await alice.client.request("DELETE", path)
    assert (response.status_code, response.content) == (204, b"")
    assert await error_of(alice, "DELETE", path) == (404, "unknown_message")
    assert await error_of(bob, "GET", path) == (404, "unknown_message")
    assert await history(bob, world.text) == [first]
    channel = await bob.client.call("GET", f"/v1/api/channels/{world.text}")
    assert channel["last_message_id"] == first["id"]


# -- nonce dedup ---------------------------------------------------------------------------------


async def test_repeated_nonce_returns_the_first_message(world: World) -> None:
    alice, bob = world.alice, world.bob
    path = messages_path(world.text)
    first = await alice.client.request("POST", path, json={"content": "once", "nonce": "abc"})
    again = await alice.client.request("POST", path, json={"content": "twice", "nonce": "abc"})
    other_author = await bob.client.request("POST", path, json={"content": "b", "nonce": "abc"})
    other_channel = await alice.client.request(
        "POST", messages_path(world.other_text), json={"content": "o", "nonce": "abc"}
    )

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert (other_author.status_code, other_channel.status_code) == (201, 201)
    assert [m["content"] for m in await history(alice, world.text)] == ["once", "b"]


async def test_concurrent_posts_with_one_nonce_make_one_message(world: World) -> None:
    statuses: list[int] = []
    bodies: list[dict[str, Any]] = []

    async def send(n: int) -> None:
        response = await world.alice.client.request(
            "POST", messages_path(world.text), json={"content": f"try {n}", "nonce": "same"}
        )
        statuses.append(response.status_code)
        bodies.append(response.json())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for n in range(12):
                nursery.start_soon(send, n)

    assert sorted(statuses) == [200] * 11 + [201]
    assert len({b["id"] for b in bodies}) == 1
    assert len(await history(world.alice, world.text)) == 1


# -- reactions -----------------------------------------------------------------------------------


async def test_reactions(world: World) -> None:
    alice, bob = world.alice, world.bob
    message = await post(alice, world.text)
    mid = message["id"]

    for _ in range(2):  # idempotent
        response = await alice.client.request("PUT", reactions_path(world.text, mid, "👍"))
        assert (response.status_code, response.content) == (204, b"")
    await bob.client.call("PUT", reactions_path(world.text, mid, "👍"))
    await bob.client.call("PUT", reactions_path(world.text, mid, "❤️"))

    seen_by_alice = await alice.client.call("GET", messages_path(world.text, mid))
    seen_by_bob = (await history(bob, world.text))[0]
    assert seen_by_alice["reactions"] == [
        {"emoji": "👍", "count": 2, "me": True},
        {"emoji": "❤️", "count": 1, "me": False},
    ]
    assert seen_by_bob["reactions"] == [
        {"emoji": "👍", "count": 2, "me": True},
        {"emoji": "❤️", "count": 1, "me": True},
    ]
    users = await alice.client.call("GET", reactions_path(world.text, mid, "👍", me=False))
    assert [u["id"] for u in users] == sorted([alice.id, bob.id], key=int)
    assert set(users[0]) == {"id", "username", "display_name"}
    first_id = users[0]["id"]
    page = await alice.client.call(
        "GET", reactions_path(world.text, mid, "👍", me=False) + f"?after={first_id}&limit=1"
    )
    assert page == users[1:]
    for query in ("?limit=0", "?limit=101", "?after=x"):
        path = reactions_path(world.text, mid, "👍", me=False) + query
        assert await error_of(alice, "GET", path) == (400, "invalid_field")

    for _ in range(2):
        response = await bob.client.request("DELETE", reactions_path(world.text, mid, "❤️"))
        assert response.status_code == 204
    after = await alice.client.call("GET", messages_path(world.text, mid))
    assert after["reactions"] == [{"emoji": "👍", "count": 2, "me": True}]
    assert await alice.client.call("GET", reactions_path(world.text, mid, "❤️", me=False)) == []


async def test_invalid_emoji(world: World) -> None:
    message = await post(world.alice, world.text)
    for emoji in ["a", "👍👍", " ", "👍 ", ":thumbsup:", "1", "x" * 40, "<>"]:
        for method, me in (("PUT", True), ("DELETE", True), ("GET", False)):
            path = reactions_path(world.text, message["id"], emoji, me=me)
            status_code = await error_of(world.alice, method, path)
            assert status_code == (400, "invalid_emoji"), (method, emoji)
    assert (await history(world.alice, world.text))[0]["reactions"] == []


async def test_at_most_20_distinct_reactions(world: World) -> None:
    message = await post(world.alice, world.text)
    faces = [chr(0x1F600 + i) for i in range(21)]
    for face in faces[:20]:
        await world.alice.client.call("PUT", reactions_path(world.text, message["id"], face))

    path = reactions_path(world.text, message["id"], faces[20])
    assert await error_of(world.bob, "PUT", path) == (422, "too_many_reactions")
    await world.bob.client.call("PUT", reactions_path(world.text, message["id"], faces[0]))
    reactions = (await history(world.bob, world.text))[0]["reactions"]
    assert [r["emoji"] for r in reactions] == faces[:20]
    assert reactions[0] == {"emoji": faces[0], "count": 2, "me": True}


# -- typing --------------------------------------------------------------------------------------


async def test_typing_is_announced_at_most_every_few_seconds(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, typing_interval_s=1.5))
    with trio.fail_after(10):
        async with AsyncExitStack() as stack:
            w = await make_world(stack, running)
            watcher = await gateway(stack, w.bob, running)
            typing = f"/v1/api/channels/{w.text}/typing"
            for _ in range(3):
                response = await w.alice.client.request("POST", typing)
                assert (response.status_code, response.content) == (204, b"")
            await w.alice.client.call("POST", f"/v1/api/channels/{w.other_text}/typing")
            event = (await watcher.dispatch("TYPING_START"))["d"]
            assert set(event) == {"channel_id", "user_id", "timestamp"}
            assert (event["channel_id"], event["user_id"]) == (w.text, w.alice.id)
            # The two repeats were not announced: the next one is the other channel's.
            assert (await watcher.dispatch("TYPING_START"))["d"]["channel_id"] == w.other_text
            await trio.sleep(1.6)
            await w.alice.client.call("POST", typing)
            assert (await watcher.dispatch("TYPING_START"))["d"]["channel_id"] == w.text
    await shutdown()


# -- events --------------------------------------------------------------------------------------


async def test_message_events(world: World) -> None:
    alice, bob = world.alice, world.bob
    with trio.fail_after(10):
        async with AsyncExitStack() as stack:
            watcher = await gateway(stack, bob, world.running)
            message = await post(alice, world.text, "hi", nonce="x")
            await post(alice, world.text, "hi again", nonce="x")  # repeated: no event
            created = (await watcher.dispatch("MESSAGE_CREATE"))["d"]
            assert created == message
            later = await post(alice, world.text, "later")
            assert (await watcher.dispatch("MESSAGE_CREATE"))["d"]["id"] == later["id"]

            mid = message["id"]
            await alice.client.call("PUT", reactions_path(world.text, mid, "👍"))
            await alice.client.call("PUT", reactions_path(world.text, mid, "👍"))  # no change
            await alice.client.call("PUT", reactions_path(world.text, mid, "🎉"))
            added = [(await watcher.dispatch("MESSAGE_REACTION_ADD"))["d"] for _ in range(2)]
            assert added == [
                {"message_id": mid, "channel_id": world.text, "user_id": alice.id, "emoji": e}
                for e in ("👍", "🎉")
            ]
            await alice.client.call("DELETE", reactions_path(world.text, mid, "🎉"))
            await alice.client.call("DELETE", reactions_path(world.text, mid, "🎉"))  # none
            await alice.client.call("DELETE", reactions_path(world.text, mid, "👍"))
            removed = [(await watcher.dispatch("MESSAGE_REACTION_REMOVE"))["d"] for _ in range(2)]
            assert [r["emoji"] for r in removed] == ["🎉", "👍"]

            await bob.client.call("PUT", reactions_path(world.text, mid, "👍"))
            edited = await alice.client.call(
                "PATCH", messages_path(world.text, mid), {"content": "e"}
            )
            update = (await watcher.dispatch("MESSAGE_UPDATE"))["d"]
            # One payload for everyone: `me` is false even for Bob, who reacted.
            assert update == edited
            assert update["reactions"] == [{"emoji": "👍", "count": 1, "me": False}]

            await alice.client.call("DELETE", messages_path(world.text, mid))
            deleted = (await watcher.dispatch("MESSAGE_DELETE"))["d"]
            assert deleted == {"id": mid, "channel_id": world.text}


async def ready_states(running: RunningServer, member: Member) -> dict[str, dict[str, Any]]:
    """The read states of a fresh gateway session's READY, by channel id."""
    async with open_gateway(running.ws_url) as gw:
        with trio.fail_after(10):
            ready = await gw.identify(member.token)
    return {s["channel_id"]: s for s in ready["read_states"]}


async def test_acks_move_forward_and_reach_only_the_acker(world: World) -> None:
    alice, bob = world.alice, world.bob
    made = [await post(alice, world.text, f"<@{bob.id}> {i}") for i in range(4)]

    def ack(channel_id: str, message: dict[str, Any]) -> str:
        return messages_path(channel_id, message["id"]) + "/ack"

    with trio.fail_after(10):
        async with AsyncExitStack() as stack:
            bob_gw = await gateway(stack, bob, world.running)
            alice_gw = await gateway(stack, alice, world.running)

            response = await bob.client.request("POST", ack(world.text, made[2]))
            assert (response.status_code, response.content) == (204, b"")
            await bob.client.call("POST", ack(world.text, made[1]))  # backwards: no event
            await bob.client.call("POST", ack(world.text, made[2]))  # no move: no event
            await bob.client.call("POST", ack(world.text, made[3]))
            await bob.client.call("POST", ack(world.text, made[0]))
            to_bob = await post(alice, world.dm, "to bob")
            await bob.client.call("POST", ack(world.dm, to_bob))
            acks = [(await bob_gw.dispatch("MESSAGE_ACK"))["d"] for _ in range(3)]
            assert acks == [
                {"channel_id": world.text, "message_id": made[2]["id"]},
                {"channel_id": world.text, "message_id": made[3]["id"]},
                {"channel_id": world.dm, "message_id": to_bob["id"]},
            ]

            # Alice's sessions heard none of Bob's acks: her first MESSAGE_ACK is her own.
            to_alice = await post(bob, world.dm, "to alice")
            await alice.client.call("POST", ack(world.dm, to_alice))
            event = (await alice_gw.dispatch("MESSAGE_ACK"))["d"]
            assert event == {"channel_id": world.dm, "message_id": to_alice["id"]}

    later = await post(alice, world.text, f"<@{bob.id}> unread")
    assert (await ready_states(world.running, bob))[world.text] == {
        "channel_id": world.text,
        "last_read_id": made[3]["id"],
        "last_message_id": later["id"],
        "mention_count": 1,
    }


# -- read states ---------------------------------------------------------------------------------


async def test_read_states_in_ready(world: World) -> None:
    alice, bob = world.alice, world.bob
    read = await post(alice, world.text, f"<@{bob.id}> read")
    await bob.client.call("POST", messages_path(world.text, read["id"]) + "/ack")
    await post(alice, world.text, f"<@{bob.id}> one")
    last = await post(alice, world.text, f"<@{bob.id}> <@{bob.id}> two")
    dm = await post(alice, world.dm, f"<@{bob.id}>")

    states = await ready_states(world.running, bob)
    assert states[world.text] == {
        "channel_id": world.text,
        "last_read_id": read["id"],
        "last_message_id": last["id"],
        "mention_count": 2,
    }
    assert states[world.other_text] == {
        "channel_id": world.other_text,
        "last_read_id": None,
        "last_message_id": None,
        "mention_count": 0,
    }
    assert states[world.dm] == {
        "channel_id": world.dm,
        "last_read_id": None,
        "last_message_id": dm["id"],
        "mention_count": 1,
    }
    assert world.voice not in states
    assert world.category not in states
    assert await ready_states(world.running, world.eve) == {}
    # The author's own messages count as read.
    mine = (await ready_states(world.running, alice))[world.text]
    assert (mine["last_read_id"], mine["mention_count"]) == (last["id"], 0)


# -- order under load ----------------------------------------------------------------------------


async def test_concurrent_posters_share_one_order(world: World) -> None:
    posters, each = 10, 20
    async with AsyncExitStack() as stack:
        members = [await new_member(stack, world.running, f"poster{n}") for n in range(posters)]
        await join(world.alice, world.server_id, *members)
        watcher = await gateway(stack, world.bob, world.running)
        answered: dict[int, list[str]] = {}

        async def run_poster(n: int) -> None:
            answered[n] = []
            for i in range(each):
                message = await post(members[n], world.text, f"{n}:{i}")
                answered[n].append(message["id"])

        delivered: list[str] = []

        async def watch() -> None:  # reads while they post: a full outbox would cut it off
            for _ in range(posters * each):
                delivered.append((await watcher.dispatch("MESSAGE_CREATE"))["d"]["id"])

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                for n in range(posters):
                    nursery.start_soon(run_poster, n)

    newest = await history(world.bob, world.text, "?limit=100")
    oldest = await history(world.bob, world.text, f"?limit=100&before={newest[0]['id']}")
    assert await history(world.bob, world.text, f"?before={oldest[0]['id']}") == []
    stored = [m["id"] for m in oldest + newest]
    assert len(stored) == len(set(stored)) == posters * each
    assert stored == sorted(stored, key=int)
    assert delivered == stored  # delivery order is history order
    for n in range(posters):  # each poster's messages, in the order they were sent
        mine = [m for m in oldest + newest if m["author"]["id"] == members[n].id]
        assert [m["content"] for m in mine] == [f"{n}:{i}" for i in range(each)]
        assert [m["id"] for m in mine] == answered[n]


async def test_edits_reactions_and_dm_opens_have_their_own_rate_limit(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, action_rate=4, message_window_s=60)
    running, shutdown = await start_server(nursery, settings)
    async with AsyncExitStack() as stack:
        w = await make_world(stack, running)  # Alice opened her DM with Bob: one of four
        message = await post(w.alice, w.text)
        edit = messages_path(w.text, message["id"])
        thumbs = reactions_path(w.text, message["id"], "👍")
        await w.alice.client.call("PATCH", edit, {"content": "edited"})
        assert (await w.alice.client.request("PUT", thumbs)).status_code == 204
        assert (await w.alice.client.request("DELETE", thumbs)).status_code == 204
        response = await w.alice.client.request("PUT", thumbs)
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
        assert await error_of(w.alice, "PATCH", edit, json={"content": "again"}) == (
            429,
            "rate_limited",
        )
        dm = {"recipient_id": w.bob.id}
        assert await error_of(w.alice, "POST", "/v1/api/users/@me/channels", json=dm) == (
            429,
            "rate_limited",
        )
        # Nothing refused was applied; Bob's budget is his own, and posting is another one.
        assert (await w.bob.client.request("PUT", thumbs)).status_code == 204
        got = await w.alice.client.call("GET", edit)
        assert got["content"] == "edited"
        assert [(r["emoji"], r["count"]) for r in got["reactions"]] == [("👍", 1)]
        await post(w.alice, w.text, "still allowed")
    await shutdown()


async def test_a_post_after_a_checked_one_needs_no_read(world: World) -> None:
    """A channel the poster was just let into is not read again before the next post (the
    write checks again in its transaction): a post goes through while every reader is busy.
    A permission change anywhere makes the next post read again."""
    store = world.running.runtime.store
    hold = threading.Event()
    held = trio.Semaphore(0)
    token = trio.lowlevel.current_trio_token()

    def occupy(_db: object) -> None:
        trio.from_thread.run_sync(held.release, trio_token=token)
        hold.wait(10)

    posted_without_read = False
    with trio.fail_after(15):
        await post(world.alice, world.text, "checked")
        async with trio.open_nursery() as nursery:
            try:
                for _ in range(world.running.settings.db_readers):
                    nursery.start_soon(partial(store.read, occupy))
                    await held.acquire()
                with trio.move_on_after(2):
                    assert (await post(world.alice, world.text, "no read"))["content"] == "no read"
                    posted_without_read = True
            finally:
                hold.set()
        assert posted_without_read
        before = world.running.runtime.chat.views.changes
        role = {"name": "r", "permissions": "0"}
        await world.alice.client.call("POST", f"/v1/api/servers/{world.server_id}/roles", role)
        assert world.running.runtime.chat.views.changes > before
        assert (
            world.running.runtime.chat.sendable.get(
                int(world.alice.id), world.text, trio.current_time()
            )
            is None
        )
