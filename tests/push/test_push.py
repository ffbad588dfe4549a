"""Web Push end to end: a real server pushes to a local push service (tests/push/pushservice.py)
that checks each VAPID JWT and decrypts each payload with the subscription's private key.

One server for the whole story (set-up is most of the cost): who gets which push (mentions,
DMs, `all`), nothing from a hidden channel, nothing for an online user until idle, mutes and
hidden text respected, coalescing of a busy channel, retries after 503 with Retry-After, 410
pruning the subscription, logout dropping the login's subscriptions; and hostile endpoints
and keys refused."""

from __future__ import annotations

import stat
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
import trio

from relay.chat.push import check_endpoint
from relay.client import ApiError, open_gateway
from relay.errors import BadRequest
from relay.netfetch import FetchPolicy
from relay.permissions import P
from relay.storage import push as push_store
from relay.webpush import b64url
from tests.conftest import settings_for, start_server
from tests.push.pushservice import PushService
from tests.rest.test_messages import Member, add_channel, join, messages_path, new_member
from tests.test_metrics import TOKEN, scrape, value

if TYPE_CHECKING:
    from pathlib import Path

    from sqlite_utils import Database

    from tests.push.pushservice import UserAgent

VIEW = str(int(P.VIEW_CHANNEL))


def stored_subscriptions(db: Database, user_id: int) -> int:
    """Rows, whatever their login's state (subscriptions_of leaves ended logins out)."""
    sql = "SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ?"
    return int(db.execute(sql, (user_id,)).fetchone()[0])


async def refused(member: Member, body: dict[str, Any], method: str = "POST") -> tuple[int, str]:
    with pytest.raises(ApiError) as caught:
        await member.client.call(method, "/v1/api/push/subscriptions", body)
    return caught.value.status, caught.value.code


async def test_push_end_to_end(nursery: trio.Nursery, tmp_path: Path) -> None:
    service = PushService(tmp_path)
    await service.start(nursery)
    settings = settings_for(
        tmp_path,
        fetch_allow_test_loopback=True,
        fetch_ports=[service.origin.port],
        push_ca_file=str(service.ca_file),
        push_workers=1,  # deliveries in order: a later push proves an earlier one was skipped
        push_coalesce_s=1.0,
        push_idle_after_s=0.3,
        push_ttl_s=600,
        metrics_token=TOKEN,
    )
    running, shutdown = await start_server(nursery, settings)
    vapid_file = tmp_path / "data" / "vapid.pem"
    assert stat.S_IMODE(vapid_file.stat().st_mode) == 0o600
    async with AsyncExitStack() as stack:
        names = ("alice", "bob", "carol", "dave", "erin", "frank")
        alice, bob, carol, dave, erin, frank = [
            await new_member(stack, running, name) for name in names
        ]
        server = await alice.client.call("POST", "/v1/api/servers", {"name": "Home"})
        sid = server["id"]
        await join(alice, sid, bob, carol, dave, erin, frank)
        general = next(c["id"] for c in server["channels"] if c["type"] == "text")
        hidden = await add_channel(alice, sid, "text", "hidden")
        busy = await add_channel(alice, sid, "text", "busy")
        await alice.client.call(
            "PUT",
            f"/v1/api/channels/{hidden}/permissions/{dave.id}",
            {"type": "member", "deny": VIEW},
        )
        dm = await alice.client.call("POST", "/v1/api/users/@me/channels", {"recipient_id": bob.id})

        key = await bob.client.call("GET", "/v1/api/push/vapid-key")
        service.vapid_key = key["public_key"]
        agents: dict[str, UserAgent] = {}
        for name in ("bob", "carol", "dave"):
            agents[name] = service.agent(name)
        agents["erin"] = service.agent("erin", [(503, {"Retry_After": "1"}), (201, {})])
        agents["frank"] = service.agent("frank", [(410, {})])
        for member, name in zip((bob, carol, dave, erin, frank), list(agents), strict=True):
            await member.client.call(
                "POST", "/v1/api/push/subscriptions", service.subscription(agents[name])
            )
        bob_a, carol_a, dave_a, erin_a, frank_a = agents.values()

        # Hostile endpoints and keys (bob's login, which has one subscription so far).
        good = service.subscription(service.agent("spare"))
        for endpoint in (
            f"http://127.0.0.1:{service.origin.port}/push/spare",  # not https
            "https://10.0.0.1/push",  # private
            "https://[::ffff:192.168.1.1]/push",  # private, in IPv6 clothing
            f"https://127.0.0.2:{service.origin.port}/push",  # loopback beyond the test one
            "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
            "https://127.0.0.1:1/push",  # a port the fetcher may not reach
            "https://user:pw@127.0.0.1/push",
            "not a url at all",
        ):
            assert await refused(bob, {**good, "endpoint": endpoint}) == (
                400,
                "invalid_push_endpoint",
            ), endpoint
        assert await refused(bob, {**good, "endpoint": "https://x/" + "a" * 3000}) == (
            400,
            "invalid_field",
        )
        point = good["keys"]["p256dh"]
        for keys, code in (
            ({"p256dh": "A" * 300, "auth": good["keys"]["auth"]}, "invalid_field"),  # oversize
            ({"p256dh": point, "auth": "A" * 100}, "invalid_field"),
            ({"p256dh": point[:-4], "auth": good["keys"]["auth"]}, "invalid_push_keys"),
            (
                {"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": good["keys"]["auth"]},
                "invalid_push_keys",
            ),
            ({"p256dh": point, "auth": b64url(b"x" * 15)}, "invalid_push_keys"),
            ({"p256dh": point + "!", "auth": good["keys"]["auth"]}, "invalid_push_keys"),
        ):
            assert await refused(bob, {**good, "keys": keys}) == (400, code)
        assert await refused(bob, {"endpoint": good["endpoint"]}) == (400, "invalid_field")
        for n in range(4):  # five per login (push_subscriptions_per_session)
            await bob.client.call(
                "POST", "/v1/api/push/subscriptions", service.subscription(service.agent(f"b{n}"))
            )
        assert await refused(bob, good) == (422, "too_many_push_subscriptions")
        for n in range(4):
            unsubscribe = {
                "endpoint": service.subscription(service.agents[f"/push/b{n}"])["endpoint"]
            }
            await bob.client.call("DELETE", "/v1/api/push/subscriptions", unsubscribe)
        assert await refused(bob, unsubscribe, "DELETE") == (404, "unknown_push_subscription")

        # Settings: dave wants every message of the server; bad targets are refused.
        settings_path = "/v1/api/users/@me/notification-settings"
        got = await dave.client.call("PATCH", settings_path, {"servers": {sid: {"level": "all"}}})
        assert got == {
            "hide_content": False,
            "servers": {sid: {"level": "all", "muted_until": None}},
            "channels": {},
        }
        for change, status, code in (
            ({"channels": {hidden: {"level": "all"}}}, 404, "unknown_channel"),  # cannot see it
            ({"servers": {"12345": {"level": "all"}}}, 404, "unknown_server"),
            ({"servers": {sid: {"level": "loud"}}}, 400, "invalid_field"),
            ({"servers": {"abc": {"level": "all"}}}, 400, "invalid_field"),
        ):
            with pytest.raises(ApiError) as caught:
                await dave.client.call("PATCH", settings_path, change)
            assert (caught.value.status, caught.value.code) == (status, code), change
        assert await dave.client.call("GET", settings_path) == got

        gw = await stack.enter_async_context(open_gateway(running.ws_url))
        await gw.identify(carol.token)  # carol is online: no pushes for her

        async def post(channel: str, content: str) -> str:
            message = await alice.client.call("POST", messages_path(channel), {"content": content})
            message_id: str = message["id"]
            return message_id

        # A mention: bob (away) is pushed, with the text; dave too (level all); carol is online.
        first = await post(general, f"hey <@{bob.id}> and <@{carol.id}>")
        await service.wait_for(bob_a, 1)
        await service.wait_for(dave_a, 1)
        (pushed,) = [r.payload for r in bob_a.received]
        assert pushed == {
            "type": "message",
            "reason": "mention",
            "server_id": sid,
            "channel_id": general,
            "message_id": first,
            "author_id": alice.id,
            "author_name": "alice",
            "count": 1,
            "content": f"hey <@{bob.id}> and <@{carol.id}>",
        }
        assert bob_a.received[0].headers["urgency"] == "high"
        assert bob_a.received[0].headers["ttl"] == "600"
        assert dave_a.received[0].payload["reason"] == "message"
        assert dave_a.received[0].headers["urgency"] == "normal"

        # Nothing of a channel dave cannot see; then a busy channel: one push at once, the
        # next nineteen as one when the window ends.
        await post(hidden, f"secret for <@{dave.id}>")
        busy_ids = [await post(busy, f"busy {n}") for n in range(20)]
        with trio.fail_after(5):
            while sum(r.payload["count"] for r in dave_a.received[1:]) < len(busy_ids):
                await service.changed.wait()
        pushed_busy = [r.payload for r in dave_a.received[1:]]
        assert [p["channel_id"] for p in pushed_busy] == [busy] * len(pushed_busy)
        assert (pushed_busy[0]["message_id"], pushed_busy[0]["count"]) == (busy_ids[0], 1)
        assert pushed_busy[-1]["message_id"] == busy_ids[-1]
        # One window (1 s) is usually enough to post the twenty; two if the machine is slow.
        assert len(pushed_busy) <= 3, [p["count"] for p in pushed_busy]
        assert "secret" not in str([r.payload for r in dave_a.received])
        # A message deleted before its push goes (here: gathered in the window) is not pushed.
        gone = await post(busy, "regretted")
        await alice.client.call("DELETE", messages_path(busy, gone))

        # Bob mutes the channel: a mention there is silent; a DM still comes (it proves the
        # mention was skipped: deliveries are in order). Then he hides message text.
        muted = int(time.time() * 1000) + 3_600_000
        await bob.client.call(
            "PATCH", settings_path, {"channels": {general: {"muted_until": muted}}}
        )
        await post(general, f"<@{bob.id}> are you there")
        dm_id = await post(dm["id"], "psst")
        await service.wait_for(bob_a, 2)
        assert bob_a.received[1].payload["message_id"] == dm_id
        assert bob_a.received[1].payload["reason"] == "dm"
        await bob.client.call("PATCH", settings_path, {"hide_content": True})
        await post(dm["id"], "private words")
        await service.wait_for(bob_a, 3)  # at the end of the DM's window
        assert "content" not in bob_a.received[2].payload
        assert bob_a.received[2].payload["count"] == 1

        # Carol goes idle: after push_idle_after_s she counts as away.
        await gw.send(3, {"status": "idle"})
        with trio.fail_after(5):
            while (await gw.dispatch("PRESENCE_UPDATE"))["d"]["user_id"] != carol.id:
                pass
        await trio.sleep(0.35)
        wake = await post(general, f"<@{carol.id}> wake up")
        await service.wait_for(carol_a, 1)
        # Only that: nothing from before, while she was online.
        assert [r.payload["message_id"] for r in carol_a.received] == [wake]

        # 503 with Retry-After: 1, then accepted; 410 deletes the subscription.
        last = await post(general, f"<@{erin.id}> and <@{frank.id}> and <@{dave.id}>")
        await service.wait_for(erin_a, 1)
        with trio.fail_after(5):  # dave (level all) hears of it, maybe coalesced with others
            while last not in (ids := [r.payload["message_id"] for r in dave_a.received]):
                await service.changed.wait()
        assert gone not in ids  # its window ended long before
        assert len(erin_a.attempts) == 2
        assert erin_a.attempts[1] - erin_a.attempts[0] >= 0.9
        store = running.runtime.store
        now = int(time.time() * 1000)
        with trio.fail_after(5):
            while await store.read(push_store.subscriptions_of, int(frank.id), now):  # noqa: ASYNC110
                await trio.sleep(0.02)
        frank_sub = {"endpoint": service.subscription(frank_a)["endpoint"]}
        assert await refused(frank, frank_sub, "DELETE") == (404, "unknown_push_subscription")
        assert len(frank_a.attempts) >= 1
        assert not frank_a.received

        # @here is for who is online, so it pushes nobody away; @everyone and a mentionable
        # role do (carol: level mentions, idle).
        await post(hidden, "@here lunch")
        everyone = await post(hidden, "@everyone meeting")
        await service.wait_for(carol_a, 2)
        assert [r.payload["message_id"] for r in carol_a.received] == [wake, everyone]
        assert carol_a.received[1].payload["reason"] == "everyone"
        role = await alice.client.call(
            "POST", f"/v1/api/servers/{sid}/roles", {"name": "ops", "mentionable": True}
        )
        await alice.client.call(
            "PUT", f"/v1/api/servers/{sid}/members/{carol.id}/roles/{role['id']}"
        )
        ops = await post(busy, f"<@&{role['id']}> deploy")
        await service.wait_for(carol_a, 3)
        assert (
            carol_a.received[2].payload["message_id"],
            carol_a.received[2].payload["reason"],
        ) == (
            ops,
            "role",
        )

        # Logging out drops the login's subscriptions.
        assert await store.read(push_store.subscriptions_of, int(bob.id), now)
        await bob.client.logout()
        with trio.fail_after(5):
            while await store.read(stored_subscriptions, int(bob.id)):  # noqa: ASYNC110
                await trio.sleep(0.02)
        samples = await scrape(f"{running.url}/metrics", TOKEN)
        outcomes = {
            outcome: value(samples, "relay_push_deliveries_total", outcome=outcome)
            for outcome in ("sent", "failed", "pruned", "dropped")
        }
        sent = sum(len(a.received) for a in service.agents.values())
        assert outcomes == {"sent": sent, "failed": 0, "pruned": 1, "dropped": 0}
        assert not any(a.errors for a in service.agents.values()), [
            a.errors for a in service.agents.values()
        ]
    await shutdown()


async def test_loopback_is_refused_unless_the_test_setting_allows_it() -> None:
    strict = FetchPolicy(ports=frozenset({443, 8443}))
    for url in ("https://127.0.0.1/push", "https://[::1]/push", "https://0.0.0.0/x"):
        with pytest.raises(BadRequest, match="not a public address") as caught:
            await check_endpoint(url, strict)
        assert caught.value.code == "invalid_push_endpoint"
    allowed = FetchPolicy(ports=frozenset({443}), allow_test_loopback=True)
    assert await check_endpoint("https://127.0.0.1/push", allowed) == "https://127.0.0.1/push"

    async def internal(host: str) -> list[str]:
        return ["93.184.215.14", "10.1.2.3"]  # one bad address among good ones refuses

    named = FetchPolicy(resolver=internal)
    with pytest.raises(BadRequest, match=r"10\.1\.2\.3"):
        await check_endpoint("https://push.example/x", named)
