"""A representative part of the API on a real Relay server storing on PostgreSQL (RELAY_DATABASE=
postgresql://...): accounts, servers, invites, channels, messages with history, edits, deletes,
reactions, pins, search, DMs and file metadata. The storage tests run every query module on both
databases (tests/storage); these check the whole path through the PostgreSQL store."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import coredis
import trio

from relay.client import open_gateway
from relay.cluster.envelope import server_topic
from relay.permissions import P
from tests.cluster.test_two_servers import eventually
from tests.conftest import settings_for, start_server
from tests.gateway.test_gateway import setup_pair, text_channel
from tests.rest.test_messages import (
    error_of,
    history,
    make_world,
    messages_path,
    post,
    reactions_path,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.realservers import PostgresServer, RedisServer


async def test_the_api_on_postgresql(
    nursery: trio.Nursery, tmp_path: Path, postgres: PostgresServer
) -> None:
    settings = settings_for(tmp_path, database=postgres.new_database())
    running, shutdown = await start_server(nursery, settings)
    async with AsyncExitStack() as stack:
        w = await make_world(stack, running)
        alice, bob, eve = w.alice, w.bob, w.eve
        # Accounts: a taken username (any case) is a conflict, as on SQLite.
        async with running.client() as other:
            response = await other.request(
                "POST", "/v1/api/auth/register", json={"username": "ALICE", "password": "x" * 12}
            )
            assert response.status_code == 409, response.text
        # Messages, history in id order, edits and deletes.
        sent = [await post(alice, w.text, f"message {i} about deploys") for i in range(5)]
        got = await history(bob, w.text, "?limit=3")
        assert [m["id"] for m in got] == [m["id"] for m in sent[-3:]]
        before = await history(bob, w.text, f"?before={sent[2]['id']}")
        assert [m["id"] for m in before] == [m["id"] for m in sent[:2]]
        edited = await alice.client.call(
            "PATCH", messages_path(w.text, sent[0]["id"]), {"content": "the release notes"}
        )
        assert edited["content"] == "the release notes"
        assert edited["edited_at"]
        assert await error_of(bob, "PATCH", messages_path(w.text, sent[0]["id"]),
                              json={"content": "mine now"}) == (403, "not_author")  # fmt: skip
        await alice.client.call("DELETE", messages_path(w.text, sent[4]["id"]))
        assert len(await history(bob, w.text)) == 4
        # A repeated nonce gives the first message back.
        first = await post(bob, w.text, "once", nonce="n-1")
        assert (await post(bob, w.text, "once", nonce="n-1"))["id"] == first["id"]
        # Reactions.
        await bob.client.call("PUT", reactions_path(w.text, sent[1]["id"], "👍"))
        await alice.client.call("PUT", reactions_path(w.text, sent[1]["id"], "👍"))
        (message,) = [m for m in await history(alice, w.text) if m["id"] == sent[1]["id"]]
        assert message["reactions"] == [{"emoji": "👍", "count": 2, "me": True}]
        # Pins.
        await alice.client.call("PUT", f"/v1/api/channels/{w.text}/pins/{sent[1]['id']}")
        pins = await bob.client.call("GET", f"/v1/api/channels/{w.text}/pins")
        assert [m["id"] for m in pins] == [sent[1]["id"]]
        # Search: words, phrases, prefixes, exclusions; only what the searcher may see.
        base = f"/v1/api/servers/{w.server_id}/messages/search?"

        async def search(who: object, **params: str) -> list[str]:
            found = await who.client.call("GET", base + urlencode(params))  # type: ignore[attr-defined]
            return [m["id"] for m in found["messages"]]

        assert await search(bob, content="deploys") == [m["id"] for m in sent[1:4]][::-1]
        assert await search(bob, content="deploy*", sort="oldest") == [m["id"] for m in sent[1:4]]
        assert await search(bob, content='"release notes"') == [sent[0]["id"]]
        assert await search(bob, content="deploys -2") == [sent[3]["id"], sent[1]["id"]]
        assert await search(bob, content="nothing-like-this") == []
        status, _ = await error_of(bob, "GET", base + urlencode({"content": '-"only excluded"'}))
        assert status == 400
        assert (await error_of(eve, "GET", base + "content=deploys"))[0] == 404
        # DMs.
        dm = await post(bob, w.dm, "hello in private")
        assert [m["id"] for m in await history(alice, w.dm)] == [dm["id"]]
        assert (await error_of(eve, "GET", messages_path(w.dm)))[0] == 404
        # File metadata: an upload claimed by a message.
        upload = await alice.client.request(
            "POST", f"/v1/api/channels/{w.text}/attachments?filename=data.bin", content=b"x" * 100
        )
        assert upload.status_code == 201, upload.text
        with_file = await alice.client.call(
            "POST", messages_path(w.text), {"attachments": [{"id": upload.json()["upload_id"]}]}
        )
        (attachment,) = with_file["attachments"]
        assert (attachment["filename"], attachment["size"]) == ("data.bin", 100)
        # Leaving the server ends Bob's access.
        await bob.client.call("DELETE", f"/v1/api/servers/{w.server_id}/members/@me")
        assert (await error_of(bob, "GET", messages_path(w.text)))[0] in (403, 404)
    await shutdown()


async def subscribers(redis: RedisServer, topic: str) -> bool:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    async with client:
        return int((await client.pubsub_numsub(topic))[topic.encode()]) > 0


async def test_two_servers_share_one_postgresql_database(
    nursery: trio.Nursery, tmp_path: Path, postgres: PostgresServer, redis: RedisServer
) -> None:
    """What PostgreSQL storage is for: two processes on one database (and one broker). Made on
    one node, users and servers exist on the other; a message posted on one is in the other's
    history at once and reaches a session there; the ids of both nodes never collide."""
    common = {"database": postgres.new_database(), "broker": redis.url}
    one, stop_one = await start_server(nursery, settings_for(tmp_path / "a", **common))
    two, stop_two = await start_server(nursery, settings_for(tmp_path / "b", **common))
    alice, bob, guild = await setup_pair(one)
    channel = text_channel(guild)
    path = f"/v1/api/channels/{channel}/messages"
    bob_two = two.client()
    bob_two.access_token = bob.token  # a login made on one node holds on the other
    with trio.fail_after(20):
        async with open_gateway(two.ws_url) as gw:
            await gw.identify(bob.token)
            # Node two subscribes to the server's topic within a round trip to Redis.
            await eventually(lambda: subscribers(redis, server_topic(int(guild["id"]))))
            sent = await alice.client.call("POST", path, {"content": "from node one"})
            frame = await gw.dispatch("MESSAGE_CREATE")
            assert frame["d"]["id"] == sent["id"]
        assert [m["id"] for m in await bob_two.call("GET", path)] == [sent["id"]]
        replies = [await bob_two.call("POST", path, {"content": f"two {i}"}) for i in range(3)]
        mine = [await alice.client.call("POST", path, {"content": f"one {i}"}) for i in range(3)]
        ids = [m["id"] for m in [sent, *replies, *mine]]
        assert len(set(ids)) == len(ids)  # distinct worker ids: no collision across nodes
        history = await alice.client.call("GET", path + "?limit=100")
        assert [m["id"] for m in history] == sorted(ids, key=int)
    await bob_two.aclose()
    await stop_two()
    await stop_one()


async def test_a_permission_one_writer_cached_is_dropped_when_another_server_changes_it(
    nursery: trio.Nursery, tmp_path: Path, postgres: PostgresServer
) -> None:
    """Two Relay servers on one database and no broker, so that nothing but the database tells
    one about the other's changes (its fail-fast memo of who may post keeps saying yes): Bob
    posts through server one, whose writer caches his permission; Alice denies it through
    server two; Bob's next post through server one is refused by its writer's check, which
    found the cache stale (relay.storage.postgres.writecache)."""
    database = postgres.new_database()
    one, stop_one = await start_server(
        nursery, settings_for(tmp_path / "a", database=database, worker_id=1)
    )
    two, stop_two = await start_server(
        nursery, settings_for(tmp_path / "b", database=database, worker_id=2)
    )
    alice, bob, guild = await setup_pair(one)
    channel = text_channel(guild)
    path = f"/v1/api/channels/{channel}/messages"
    with trio.fail_after(20):
        await bob.client.call("POST", path, {"content": "first"})
        kept = await bob.client.call("POST", path, {"content": "answered from the cache"})
        alice_two = two.client()
        alice_two.access_token = alice.token
        deny = {"type": "member", "deny": str(int(P.SEND_MESSAGES))}
        await alice_two.call("PUT", f"/v1/api/channels/{channel}/permissions/{bob.user_id}", deny)
        refused = await bob.client.request("POST", path, json={"content": "after the deny"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "missing_permission"
        # Taken back through server two: server one's writer lets Bob post again.
        await alice_two.call("DELETE", f"/v1/api/channels/{channel}/permissions/{bob.user_id}")
        again = await bob.client.call("POST", path, {"content": "allowed again"})
        stored = await alice.client.call("GET", path)
        assert [m["id"] for m in stored][-2:] == [kept["id"], again["id"]]
    await alice_two.aclose()
    await stop_two()
    await stop_one()
