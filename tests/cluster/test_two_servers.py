"""Two real Relay servers on one real Redis: events cross between them exactly once, budgets
and online members are shared, worker ids are distinct.

The second server runs on a copy of the first one's database (made while it was stopped), so
both know the same users, server and tokens without a shared database (PostgreSQL storage is
another branch's); what is posted after the copy is stored on one side only, which is fine: the
broker carries the events themselves.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import coredis
import pytest
import trio

from relay.client import ApiError, GatewayClosed, RelayClient, open_gateway
from relay.cluster.envelope import server_topic, user_topic
from relay.cluster.fanout import BrokerFanout
from relay.errors import first_of
from relay.server import StartupFailed
from tests.conftest import settings_for, start_server
from tests.gateway.test_gateway import expect_close, setup_pair, text_channel
from tests.test_metrics import TOKEN, scrape, value

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import Gateway
    from tests.conftest import RunningServer
    from tests.realservers import RedisServer


def fanout_of(server: RunningServer) -> BrokerFanout:
    fanout = server.runtime.chat.fanout
    assert isinstance(fanout, BrokerFanout)
    return fanout


def client_for(server: RunningServer, token: str) -> RelayClient:
    client = server.client()
    client.access_token = token
    return client


async def eventually(check: Any) -> None:
    """Wait (at most 5 s) until `check()` (sync or async) is true: subscriptions and online
    sets follow the sessions within a round trip to Redis, not at once."""
    with trio.fail_after(5):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(0.01)


async def created(gw: Gateway) -> str:
    frame = await gw.dispatch("MESSAGE_CREATE")
    return str(frame["d"]["content"])


async def test_two_servers_share_events_budgets_and_online_members(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    common = {"broker": redis.url, "message_rate": 7, "presence_grace_s": 0.2}
    first, stop_first = await start_server(nursery, settings_for(tmp_path / "a", **common))
    alice, bob, guild = await setup_pair(first)
    await stop_first()
    shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "data")
    one, stop_one = await start_server(nursery, settings_for(tmp_path / "a", **common))
    two, stop_two = await start_server(nursery, settings_for(tmp_path / "b", **common))
    server_id, channel = int(guild["id"]), text_channel(guild)
    path = f"/v1/api/channels/{channel}/messages"
    alice_one, alice_two = client_for(one, alice.token), client_for(two, alice.token)
    bob_two = client_for(two, bob.token)
    # Each process leased its own worker id (the first server's lease was released at stop).
    workers = one.runtime.store.ids.worker, two.runtime.store.ids.worker
    assert workers[0] != workers[1]
    redis_client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    async with redis_client:
        for server, worker in zip((one, two), workers, strict=True):
            holder = await redis_client.get(f"relay:worker:{worker}")
            assert holder == fanout_of(server).node_id.encode()

        async def subscribers(topic: str) -> int:
            return int((await redis_client.pubsub_numsub(topic))[topic.encode()])

        # /readyz shows the node's broker figures (and a broker check).
        ready = await client_for(one, alice.token).call("GET", "/readyz")
        assert ready["checks"]["broker"] == "ok"
        assert ready["broker"]["worker_id"] == workers[0]
        assert ready["broker"]["node_id"] == fanout_of(one).node_id

        with trio.fail_after(20):
            async with open_gateway(one.ws_url) as ga, open_gateway(two.ws_url) as gb:
                await ga.identify(alice.token)
                await eventually(lambda: subscribers(server_topic(server_id)))
                await gb.identify(bob.token)
                # One subscription per node that has a member online, whatever their number.
                await eventually(lambda: _equals(subscribers(server_topic(server_id)), 2))
                assert await subscribers(user_topic(int(alice.user_id))) == 1
                # Bob came online on the other node: Alice hears it, and both nodes count
                # both as online members of the server.
                seen = await ga.dispatch("PRESENCE_UPDATE")
                while seen["d"]["user_id"] != bob.user_id:  # Alice's own first
                    seen = await ga.dispatch("PRESENCE_UPDATE")
                assert seen["d"] == {"user_id": bob.user_id, "status": "online", "activity": None}
                both = {int(alice.user_id), int(bob.user_id)}
                await eventually(lambda: set(fanout_of(one).online(server_id)) == both)
                await eventually(lambda: set(fanout_of(two).online(server_id)) == both)

                # Bob also connects to one, then leaves it: still connected to two, he is not
                # shown offline (presence_grace_s is 0.2 s here).
                async with open_gateway(one.ws_url) as gc:
                    await gc.identify(bob.token)
                with trio.move_on_after(0.6):
                    while True:
                        seen = await ga.dispatch("PRESENCE_UPDATE")
                        if seen["d"] == {"user_id": bob.user_id, "status": "offline",
                                         "activity": None}:  # fmt: skip
                            pytest.fail("Bob shown offline while connected to two")

                # Messages cross both ways, each delivered once on each side.
                await alice_one.call("POST", path, {"content": "from one"})
                assert await created(gb) == "from one"
                await bob_two.call("POST", path, {"content": "from two"})
                await alice_one.call("POST", path, {"content": "end"})
                assert [await created(ga) for _ in range(3)] == ["from one", "from two", "end"]
                assert [await created(gb) for _ in range(2)] == ["from two", "end"]
                with trio.move_on_after(0.3):
                    extra = await created(ga)
                    pytest.fail(f"delivered twice: {extra}")

                # A DM's events travel on its recipients' topics: Alice opens one on one (its
                # CHANNEL_CREATE goes to both users) and writes in it; Bob, on two, gets both.
                dm = await alice_one.call(
                    "POST", "/v1/api/users/@me/channels", {"recipient_id": bob.user_id}
                )
                assert (await gb.dispatch("CHANNEL_CREATE"))["d"]["id"] == dm["id"]
                dm_path = f"/v1/api/channels/{dm['id']}/messages"
                await alice_one.call("POST", dm_path, {"content": "a dm"})
                assert await created(gb) == "a dm"
                assert await created(ga) == "a dm"

                # A kick on one is announced to two: Bob is no longer an online member of the
                # server there (its view of the server reloaded), so nothing of it reaches him.
                views_two = two.runtime.chat.views
                changes = views_two.changes
                await alice_one.call("DELETE", f"/v1/api/servers/{server_id}/members/{bob.user_id}")
                hub_two = two.runtime.hub
                await eventually(
                    lambda: int(bob.user_id) not in hub_two.online_members.get(server_id, ())
                )
                assert views_two.changes > changes
                await alice_one.call("POST", path, {"content": "after the kick"})
                assert await created(ga) == "after the kick"
                with trio.move_on_after(0.3):
                    extra = await created(gb)
                    pytest.fail(f"a kicked member got {extra}")

                # Alice's budget (7 per window) is one budget across both nodes: 4 spent on
                # one, 3 more on two, and the eighth is refused wherever it is sent.
                for n in range(3):
                    await alice_two.call("POST", path, {"content": f"two {n}"})
                for client in (alice_one, alice_two):
                    with pytest.raises(ApiError) as refused:
                        await client.call("POST", path, {"content": "over"})
                    assert refused.value.status == 429
                    assert refused.value.code == "rate_limited"

            # A configured worker id another process holds is refused at start-up.
            taken = settings_for(tmp_path / "c", broker=redis.url, worker_id=workers[0])
            with pytest.raises(BaseExceptionGroup) as failed:
                await start_server(nursery, taken)
            reason = first_of(failed.value)
            assert isinstance(reason, StartupFailed)
            assert f"worker_id {workers[0]} (RELAY_WORKER_ID) is held" in reason.reason

            # A node that stops releases its worker id, unsubscribes and leaves the online sets
            # (Alice's session on one waits for a RESUME: she is still online there).
            await stop_two()
            assert await redis_client.get(f"relay:worker:{workers[1]}") is None
            await eventually(lambda: _equals(subscribers(server_topic(server_id)), 1))
            await eventually(lambda: set(fanout_of(one).online(server_id)) == {int(alice.user_id)})
    await stop_one()


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_connection_caps_count_every_node(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    caps = {"max_sessions_per_user": 2, "max_connections_per_ip": 3}
    first, stop_first = await start_server(nursery, settings_for(tmp_path / "a", **caps))
    alice, _, _ = await setup_pair(first)
    await stop_first()
    shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "data")
    common = {"broker": redis.url, "metrics_token": TOKEN, **caps}
    one, stop_one = await start_server(nursery, settings_for(tmp_path / "a", **common))
    two, stop_two = await start_server(nursery, settings_for(tmp_path / "b", **common))
    with trio.fail_after(20):
        async with open_gateway(one.ws_url) as ga, open_gateway(two.ws_url) as gb:
            await ga.identify(alice.token)
            await gb.identify(alice.token)
            # A third session of Alice's: one node has only one, but two are connected in all.
            async with open_gateway(one.ws_url) as gc:
                await gc.send(2, {"token": alice.token})
                assert await expect_close(gc) == 4011
            # The address's gateway connections: 3 across both nodes, whichever gets the 4th.
            async with open_gateway(two.ws_url) as gd:
                with pytest.raises(BaseExceptionGroup) as refused:  # closed before HELLO
                    async with open_gateway(one.ws_url):
                        pass
                closed = first_of(refused.value)
                assert isinstance(closed, GatewayClosed)
                assert closed.code == 1013
                await gd.heartbeat()
                assert (await gd.receive())["op"] == 11
        # Every place was given back: the address may connect again, Alice may identify.
        async with open_gateway(two.ws_url) as gf:
            await gf.identify(alice.token)
            # The node's broker figures on /metrics.
            samples = await scrape(f"{two.url}/metrics", TOKEN)
            assert value(samples, "relay_broker_connected") == 1
            assert value(samples, "relay_broker_subscriptions") >= 3  # probe, 2 global, user
            assert value(samples, "relay_broker_published_total") > 0
            assert value(samples, "relay_broker_resyncs_total") == 0
    await stop_two()
    await stop_one()
