"""A RESUME on another node after the session's node shut down gets exactly what was published
while no node served it, from the topic logs (relay.cluster.topiclog): a server channel's
messages and DMs, in order, once each, then live ones; a log trimmed past the session's mark
answers INVALID_SESSION."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from relay.client import open_gateway
from relay.cluster.envelope import server_topic, user_topic
from tests.cluster.test_two_servers import client_for, eventually, fanout_of
from tests.conftest import settings_for, start_server
from tests.gateway.conftest import join, new_member
from tests.gateway.test_gateway import setup_pair, text_channel

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import Gateway
    from tests.realservers import PostgresServer, RedisServer


async def until_resumed(gw: Gateway) -> list[dict[str, Any]]:
    """Every frame up to RESUMED (included)."""
    frames = [await gw.receive()]
    while frames[-1].get("t") != "RESUMED" and frames[-1]["op"] != 9:
        frames.append(await gw.receive())
    return frames


async def test_a_resume_elsewhere_gets_what_was_published_while_no_node_served_it(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer, postgres: PostgresServer
) -> None:
    common = {
        "broker": redis.url,
        "database": postgres.new_database(),
        "message_rate": 1000,
        "lease_ttl_s": 1.0,
        "broker_topic_log": 12,
    }
    await _scenario(nursery, tmp_path, common)


async def _scenario(nursery: trio.Nursery, tmp_path: Path, common: dict[str, Any]) -> None:
    async with trio.open_nursery() as first:
        one, _ = await start_server(first, settings_for(tmp_path / "a", **common))
        two, _ = await start_server(nursery, settings_for(tmp_path / "b", **common))
        alice, bob, guild = await setup_pair(one)
        carol = await new_member(one, "carol")
        await join(alice, [carol], guild["id"])
        server_id, channel = int(guild["id"]), text_channel(guild)
        path = f"/v1/api/channels/{channel}/messages"
        bob_two = client_for(two, bob.token)
        with trio.fail_after(20):
            await bob_two.call("POST", path, {"content": "owner"})  # two owns the channel
            async with open_gateway(one.ws_url) as ga, open_gateway(one.ws_url) as gc:
                await ga.identify(alice.token)
                await gc.identify(carol.token)
                topics = [server_topic(server_id), user_topic(int(alice.user_id))]
                topics.append(user_topic(int(carol.user_id)))
                # One counts the topics (synced), and the sessions' states carry their marks.
                tracker = fanout_of(one).tracker
                await eventually(lambda: all(t in tracker.marks for t in topics))
                await bob_two.call("POST", path, {"content": "seen"})
                await ga.dispatch("MESSAGE_CREATE")
                await gc.dispatch("MESSAGE_CREATE")
                resumes = [(m.token, gw.session_id, gw.seq) for m, gw in ((alice, ga), (carol, gc))]
                # Unread by the clients: a channel made on one, and messages one commits and
                # publishes itself (its own publications, delivered here before their offsets
                # are known), right before it shuts down: none may come twice, none be lost.
                alice_one = client_for(one, alice.token)
                side = await alice_one.call(
                    "POST",
                    f"/v1/api/servers/{server_id}/channels",
                    {"name": "side", "type": "text"},
                )
                side_path = f"/v1/api/channels/{side['id']}/messages"
                sides = [
                    (await alice_one.call("POST", side_path, {"content": f"side {n}"}))["id"]
                    for n in range(5)
                ]
                # One shuts down with both connected: their leases are released at once.
                first.cancel_scope.cancel()
    with trio.fail_after(20):
        # Published on two while no node serves the sessions: three channel messages, then a
        # new DM with Alice and two messages in it; and sixteen publications on Carol's topic,
        # more than its log keeps (broker_topic_log).
        missed = [
            (await bob_two.call("POST", path, {"content": f"missed {n}"}))["id"] for n in range(3)
        ]
        dm = await bob_two.call(
            "POST", "/v1/api/users/@me/channels", {"recipient_id": alice.user_id}
        )
        dm_path = f"/v1/api/channels/{dm['id']}/messages"
        missed_dm = [
            (await bob_two.call("POST", dm_path, {"content": f"dm {n}"}))["id"] for n in range(2)
        ]
        to_carol = await bob_two.call(
            "POST", "/v1/api/users/@me/channels", {"recipient_id": carol.user_id}
        )
        for n in range(15):
            await bob_two.call(
                "POST", f"/v1/api/channels/{to_carol['id']}/messages", {"content": f"{n}"}
            )
        (alice_token, alice_session, alice_seq), (carol_token, carol_session, carol_seq) = resumes
        assert alice_session is not None
        assert carol_session is not None
        # Carol missed more than her topic's log keeps: INVALID_SESSION, not a silent gap.
        async with open_gateway(two.ws_url) as gc:
            await gc.resume(carol_token, carol_session, carol_seq)
            assert (await gc.receive())["op"] == 9
        assert fanout_of(two).catch_ups_refused == 1
        async with open_gateway(two.ws_url) as ga:
            await ga.resume(alice_token, alice_session, alice_seq)
            frames = await until_resumed(ga)
            assert frames[-1]["t"] == "RESUMED", frames
            # Exactly what was missed, each once, numbered on from the client's seq.
            assert [f["s"] for f in frames] == list(
                range(alice_seq + 1, alice_seq + 1 + len(frames))
            )
            created = [f["d"] for f in frames if f["t"] == "MESSAGE_CREATE"]
            assert [m["id"] for m in created if m["channel_id"] == channel] == missed
            assert [m["id"] for m in created if m["channel_id"] == dm["id"]] == missed_dm
            assert [m["id"] for m in created if m["channel_id"] == side["id"]] == sides
            assert len(created) == 10
            made = [f["d"]["id"] for f in frames if f["t"] == "CHANNEL_CREATE"]
            assert sorted(made) == sorted([side["id"], dm["id"]])
            assert frames[-1]["d"] == {"replayed": len(frames) - 1}
            assert fanout_of(two).caught_up >= 6  # the DM's three events and missed's
            # Then live: a channel message and a DM, once each.
            await bob_two.call("POST", path, {"content": "after"})
            await bob_two.call("POST", dm_path, {"content": "dm after"})
            live = [await ga.dispatch("MESSAGE_CREATE") for _ in range(2)]
            assert sorted(m["d"]["content"] for m in live) == ["after", "dm after"]
            # Nothing more of what was missed follows (no duplicate), whatever else does.
            await bob_two.call("POST", path, {"content": "last"})
            assert (await ga.dispatch("MESSAGE_CREATE"))["d"]["content"] == "last"
