"""MESSAGE_SEND (op 12) and MESSAGE_SEND_ACK (op 13) end to end: a real server, real
trio-websocket clients, the results checked through REST history and other members' sessions."""

from __future__ import annotations

import threading
import time
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

from relay.chat import messages as chat_messages
from relay.client import open_gateway
from relay.gateway import endpoint
from tests.gateway.conftest import join, new_member
from tests.gateway.test_gateway import expect_close, post, setup_pair, text_channel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from relay.client import Gateway
    from relay.storage.sqlite.db import Store
    from tests.conftest import RunningServer
    from tests.gateway.conftest import Member

MESSAGE_SEND = 12
MESSAGE_SEND_ACK = 13


async def send(
    gw: Gateway, channel_id: str, content: str, nonce: str, reply_to: str | None = None
) -> None:
    d: dict[str, Any] = {"channel_id": channel_id, "content": content, "nonce": nonce}
    if reply_to is not None:
        d["reply_to"] = reply_to
    await gw.send(MESSAGE_SEND, d)


async def next_ack(gw: Gateway) -> dict[str, Any]:
    """The `d` of the next MESSAGE_SEND_ACK (other frames skipped)."""
    while True:
        frame = await gw.receive()
        if frame["op"] == MESSAGE_SEND_ACK:
            assert frame["s"] is None
            assert frame["t"] is None
            d: dict[str, Any] = frame["d"]
            return d


async def send_and_ack(
    gw: Gateway, channel_id: str, content: str, nonce: str, reply_to: str | None = None
) -> dict[str, Any]:
    await send(gw, channel_id, content, nonce, reply_to)
    ack = await next_ack(gw)
    assert ack["nonce"] == nonce
    return ack


async def history(member: Member, channel_id: str) -> list[dict[str, Any]]:
    """Every message of the channel, oldest first."""
    found: list[dict[str, Any]] = []
    after = "1"
    while page := await member.client.call(
        "GET", f"/v1/api/channels/{channel_id}/messages?after={after}&limit=100"
    ):
        found.extend(page)
        after = page[-1]["id"]
    return found


def iso_in(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


class Stall:
    """A write that holds the store's writer until released; `entered` once it runs."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, _db: object) -> None:
        self.entered.set()
        self.release.wait(20)

    async def running(self) -> None:
        assert await trio.to_thread.run_sync(self.entered.wait, 10)


@asynccontextmanager
async def writer_stalled(server: RunningServer) -> AsyncIterator[None]:
    """Hold the store's writer thread: nothing commits until the block ends."""
    stall = Stall()
    pending = await server.runtime.store.submit(stall)
    try:
        yield
    finally:
        stall.release.set()
        with trio.fail_after(20):
            await pending.wait()


async def test_send_is_acknowledged_after_commit_and_dispatched(
    gateway_server: RunningServer,
) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as a,
            open_gateway(gateway_server.ws_url) as b,
        ):
            await a.identify(alice.token)
            await b.identify(bob.token)
            ack = await send_and_ack(a, channel, f"hi <@{bob.user_id}>", "nonce-1")
            assert set(ack) == {"nonce", "id", "channel_id"}
            assert ack["channel_id"] == channel
            # Acknowledged means committed: REST history has it already.
            stored = await history(alice, channel)
            assert [(m["id"], m["content"], m["nonce"]) for m in stored] == [
                (ack["id"], f"hi <@{bob.user_id}>", "nonce-1")
            ]
            assert stored[0]["author"]["id"] == alice.user_id
            created = (await b.dispatch("MESSAGE_CREATE"))["d"]
            assert created == stored[0]  # the same object as REST answers
            assert created["mentions"] == [bob.user_id]
            # The sender's own sessions get the dispatch too, as for a REST post.
            assert (await a.dispatch("MESSAGE_CREATE"))["d"]["id"] == ack["id"]

            # A reply to that message.
            reply = await send_and_ack(b, channel, "and hi to you", "nonce-2", ack["id"])
            assert "error" not in reply
            assert (await a.dispatch("MESSAGE_CREATE"))["d"]["reply_to"] == ack["id"]


async def test_repeated_nonce_answers_the_first_message(gateway_server: RunningServer) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url, encoding="msgpack") as a,
            open_gateway(gateway_server.ws_url) as b,
        ):
            await a.identify(alice.token)
            await b.identify(bob.token)
            first = await send_and_ack(a, channel, "once", "same")
            again = await send_and_ack(a, channel, "once more?", "same")
            assert again == first
            # The nonce is shared with REST: a REST post with it answers the same message.
            response = await alice.client.request(
                "POST",
                f"/v1/api/channels/{channel}/messages",
                json={"content": "third try", "nonce": "same"},
            )
            assert (response.status_code, response.json()["id"]) == (200, first["id"])
            stored = await history(alice, channel)
            assert [(m["id"], m["content"]) for m in stored] == [(first["id"], "once")]
            # Bob saw it once: the next MESSAGE_CREATE he gets is a new message.
            assert (await b.dispatch("MESSAGE_CREATE"))["d"]["id"] == first["id"]
            later = await post(alice, channel, "new")
            assert (await b.dispatch("MESSAGE_CREATE"))["d"]["id"] == later["id"]


@pytest.mark.settings(message_rate=1000)
async def test_send_errors_are_acknowledged_and_keep_the_socket(
    gateway_server: RunningServer,
) -> None:
    owner, member, guild = await setup_pair(gateway_server)
    sid = guild["id"]
    channel = text_channel(guild)
    voice = next(c["id"] for c in guild["channels"] if c["type"] == "voice")
    api = owner.client.call
    hidden = await api(
        "POST",
        f"/v1/api/servers/{sid}/channels",
        {
            "name": "staff",
            "type": "text",
            "permission_overwrites": [{"id": sid, "type": "role", "deny": "1"}],
        },
    )
    muted = await api(
        "POST", f"/v1/api/servers/{sid}/channels", {"name": "read-only", "type": "text"}
    )
    await api(
        "PUT", f"/v1/api/channels/{muted['id']}/permissions/{sid}", {"type": "role", "deny": "2"}
    )
    slow = await api(
        "POST",
        f"/v1/api/servers/{sid}/channels",
        {"name": "slow", "type": "text", "rate_limit_per_user": 30},
    )
    other = await api("POST", f"/v1/api/servers/{sid}/channels", {"name": "other", "type": "text"})
    elsewhere = await post(owner, other["id"], "in another channel")

    cases: list[tuple[str, str, str, str | None, str]] = [
        # (channel, content, nonce, reply_to, code)
        ("123456789", "hi", "a", None, "unknown_channel"),
        ("not-an-id", "hi", "b", None, "unknown_channel"),
        (hidden["id"], "hi", "c", None, "unknown_channel"),
        (voice, "hi", "d", None, "not_a_text_channel"),
        (muted["id"], "hi", "e", None, "missing_permission"),
        (channel, "", "f", None, "invalid_field"),
        (channel, " \n\t ", "g", None, "invalid_field"),
        (channel, "x" * 4001, "h", None, "invalid_field"),
        (channel, "hi", "i", "xyz", "invalid_field"),
        (channel, "hi", "j", elsewhere["id"], "invalid_field"),
    ]
    with trio.fail_after(20):
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(member.token)
            for target, content, nonce, reply_to, code in cases:
                ack = await send_and_ack(gw, target, content, nonce, reply_to)
                assert set(ack) == {"nonce", "error"}, ack
                assert ack["error"]["code"] == code, (nonce, ack)
                assert ack["error"]["message"]
            missing = (await send_and_ack(gw, muted["id"], "hi", "k"))["error"]
            assert missing["fields"] == {"permission": "SEND_MESSAGES"}
            invalid = (await send_and_ack(gw, channel, "", "l"))["error"]
            assert set(invalid["fields"]) == {"content"}

            # Slowmode: the first message goes through, the second waits (retry_after).
            assert "id" in await send_and_ack(gw, slow["id"], "first", "m")
            refused = (await send_and_ack(gw, slow["id"], "second", "n"))["error"]
            assert refused["code"] == "slowmode"
            assert 0 < refused["retry_after"] <= 30

            # Timed out: may read, may not send.
            await api(
                "PATCH",
                f"/v1/api/servers/{sid}/members/{member.user_id}",
                {"communication_disabled_until": iso_in(60)},
            )
            timed_out = (await send_and_ack(gw, channel, "hi", "o"))["error"]
            assert timed_out["code"] == "timed_out"

            # Nothing of that was stored, and the socket is still open.
            assert [m["content"] for m in await history(owner, channel)] == []
            await gw.heartbeat()
            while (await gw.receive())["op"] != 11:
                pass


async def test_permission_lost_between_sends_is_refused_by_the_write(
    gateway_server: RunningServer,
) -> None:
    owner, member, guild = await setup_pair(gateway_server)
    sid, channel = guild["id"], text_channel(guild)
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(member.token)
            assert "id" in await send_and_ack(gw, channel, "allowed", "a")
            # Right after a send passed the channel check: the write checks again.
            overwrite = {"type": "role", "deny": "2"}
            await owner.client.call(
                "PUT", f"/v1/api/channels/{channel}/permissions/{sid}", overwrite
            )
            refused = (await send_and_ack(gw, channel, "not any more", "b"))["error"]
            assert refused["code"] == "missing_permission"
            assert refused["fields"] == {"permission": "SEND_MESSAGES"}
            hidden = {"type": "role", "deny": "1"}
            await owner.client.call("PUT", f"/v1/api/channels/{channel}/permissions/{sid}", hidden)
            gone = (await send_and_ack(gw, channel, "hidden now", "c"))["error"]
            assert gone["code"] == "unknown_channel"
    assert [m["content"] for m in await history(owner, channel)] == ["allowed"]


@pytest.mark.settings(message_rate=3, message_window_s=60)
async def test_send_rate_limit_is_an_error_ack(gateway_server: RunningServer) -> None:
    alice, _, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(alice.token)
            for i in range(3):
                assert "id" in await send_and_ack(gw, channel, f"m{i}", f"n{i}")
            refused = (await send_and_ack(gw, channel, "one too many", "n3"))["error"]
            assert refused["code"] == "rate_limited"
            assert 15 < refused["retry_after"] <= 20  # 3 per 60 s: one back every 20 s
            # The limit is per user: another connection of hers is refused as well.
            async with open_gateway(gateway_server.ws_url) as gw2:
                await gw2.identify(alice.token)
                refused = (await send_and_ack(gw2, channel, "elsewhere", "n4"))["error"]
                assert refused["code"] == "rate_limited"
            await gw.heartbeat()
            while (await gw.receive())["op"] != 11:
                pass
    assert len(await history(alice, channel)) == 3


@pytest.mark.settings(gateway_rate=5)
async def test_sends_are_exempt_from_the_frame_limit(gateway_server: RunningServer) -> None:
    alice, _, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(alice.token)  # 1 frame of 5
            for i in range(10):  # within the send limit: no frame counted
                assert "id" in await send_and_ack(gw, channel, f"m{i}", f"n{i}")
            await gw.heartbeat()  # 2 of 5: still open
            while (await gw.receive())["op"] != 11:
                pass


@pytest.mark.settings(gateway_rate=5, message_rate=2, message_window_s=60)
async def test_ignoring_retry_after_is_a_flood(gateway_server: RunningServer) -> None:
    alice, _, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(alice.token)  # frame 1 of 5
            for i in range(2):
                assert "id" in await send_and_ack(gw, channel, f"m{i}", f"n{i}")
            for i in range(2, 6):  # refused sends count as frames: 2 to 5 of 5
                ack = await send_and_ack(gw, channel, f"m{i}", f"n{i}")
                assert ack["error"]["code"] == "rate_limited"
            await send(gw, channel, "m6", "n6")  # frame 6: closed
            assert await expect_close(gw) == 4008


@pytest.mark.parametrize(
    "d",
    [
        None,
        {"channel_id": "1", "content": "hi"},  # no nonce
        {"channel_id": "1", "content": "hi", "nonce": ""},
        {"channel_id": "1", "content": "hi", "nonce": "n" * 26},
        {"channel_id": "1", "content": "hi", "nonce": 5},
        {"channel_id": 1, "content": "hi", "nonce": "n"},
        {"channel_id": "1" * 21, "content": "hi", "nonce": "n"},
        {"content": "hi", "nonce": "n"},
        {"channel_id": "1", "nonce": "n"},
        {"channel_id": "1", "content": None, "nonce": "n"},
        {"channel_id": "1", "content": "hi", "nonce": "n", "reply_to": ""},
        {"channel_id": "1", "content": "hi", "nonce": "n", "embeds": []},
    ],
)
async def test_malformed_send_closes_with_decode_error(
    gateway_server: RunningServer, d: Any
) -> None:
    alice, _, _ = await setup_pair(gateway_server)
    async with open_gateway(gateway_server.ws_url) as gw:
        await gw.identify(alice.token)
        await gw.send(MESSAGE_SEND, d)
        assert await expect_close(gw) == 4002


async def test_send_before_identify_is_4003(gateway_server: RunningServer) -> None:
    async with open_gateway(gateway_server.ws_url) as gw:
        await send(gw, "1", "hi", "n")
        assert await expect_close(gw) == 4003


async def test_ack_is_a_server_op(gateway_server: RunningServer) -> None:
    alice, _, _ = await setup_pair(gateway_server)
    async with open_gateway(gateway_server.ws_url) as gw:
        await gw.identify(alice.token)
        await gw.send(MESSAGE_SEND_ACK, {"nonce": "n"})
        assert await expect_close(gw) == 4001


@pytest.mark.settings(message_rate=1000)
async def test_50_pipelined_sends_are_acked_and_stored_in_send_order(
    gateway_server: RunningServer,
) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    second = await alice.client.call(
        "POST", f"/v1/api/servers/{guild['id']}/channels", {"name": "second", "type": "text"}
    )
    with trio.fail_after(30):
        async with (
            open_gateway(gateway_server.ws_url) as a,
            open_gateway(gateway_server.ws_url) as b,
        ):
            await a.identify(alice.token)
            await b.identify(bob.token)
            # 50 sends without waiting, over two channels; a few fail on the way.
            sent: list[tuple[str, str]] = []
            for i in range(50):
                target = channel if i % 3 else second["id"]
                content = "" if i % 17 == 5 else f"message {i}"
                await send(a, target, content, f"n{i}")
                sent.append((target, content))
            acks = [await next_ack(a) for _ in range(50)]
            assert [ack["nonce"] for ack in acks] == [f"n{i}" for i in range(50)]
            failed = [i for i, ack in enumerate(acks) if "error" in ack]
            assert failed == [i for i in range(50) if i % 17 == 5]
            for target in (channel, second["id"]):
                expected = [
                    (acks[i]["id"], f"n{i}")
                    for i, (t, _) in enumerate(sent)
                    if t == target and i not in failed
                ]
                stored = [(m["id"], m["nonce"]) for m in await history(alice, target)]
                assert stored == expected
                assert [i for i, _ in stored] == sorted(i for i, _ in stored)
            # Bob gets each channel's messages in that channel's order.
            events = [(await b.dispatch("MESSAGE_CREATE"))["d"] for _ in range(47)]
            for target in (channel, second["id"]):
                seen = [e["nonce"] for e in events if e["channel_id"] == target]
                assert seen == [
                    f"n{i}" for i, (t, _) in enumerate(sent) if t == target and i not in failed
                ]


@pytest.mark.parametrize(
    "bound",
    [
        pytest.param(3, marks=pytest.mark.settings(gateway_max_inflight_sends=3)),
        pytest.param(16, marks=pytest.mark.settings(gateway_max_inflight_sends=16)),
    ],
)
async def test_inflight_bound_makes_the_reader_wait(
    gateway_server: RunningServer, bound: int
) -> None:
    alice, _, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(30):
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(alice.token)
            frames: list[dict[str, Any]] = []
            async with writer_stalled(gateway_server):
                for i in range(6):
                    await send(gw, channel, f"m{i}", f"n{i}")
                await gw.heartbeat()
                with trio.move_on_after(0.5):
                    while True:
                        frames.append(await gw.receive())
                ops = [f["op"] for f in frames]
                assert MESSAGE_SEND_ACK not in ops  # nothing committed yet
                # Six sends over a bound of 3: the reader waits, the heartbeat is not read.
                assert (11 in ops) == (bound > 6)
            while [f["op"] for f in frames].count(MESSAGE_SEND_ACK) < 6 or 11 not in [
                f["op"] for f in frames
            ]:
                frames.append(await gw.receive())
            acks = [f["d"] for f in frames if f["op"] == MESSAGE_SEND_ACK]
            assert [a["nonce"] for a in acks] == [f"n{i}" for i in range(6)]
    assert [m["nonce"] for m in await history(alice, channel)] == [f"n{i}" for i in range(6)]


async def test_sends_of_a_vanished_connection_commit_and_nothing_leaks(
    gateway_server: RunningServer,
) -> None:
    alice, _, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    hub = gateway_server.runtime.hub
    with trio.fail_after(30):
        async with writer_stalled(gateway_server):
            async with open_gateway(gateway_server.ws_url) as gw:
                await gw.identify(alice.token)
                for i in range(3):
                    await send(gw, channel, f"m{i}", f"n{i}")
                # Wait until the server queued all three (they wait for the stalled writer).
                while len(_asks_of(gateway_server, channel)) < 3:  # noqa: ASYNC110 (no event)
                    await trio.sleep(0.01)
            # The connection is gone: its sends had SEND_DRAIN_S, then were cancelled, and
            # nobody waits for their answers any more.
            assert _asks_of(gateway_server, channel) == set()
            assert all(s.sink is None for s in hub.sessions.values())
        # The writer went on: all three are stored, in order.
        await gateway_server.runtime.store.write(_nothing)  # commits after them
        stored = [m["nonce"] for m in await history(alice, channel)]
        assert stored == ["n0", "n1", "n2"]
        # A retry with the same nonce, on a new connection, gets the stored message's id.
        ids = {m["nonce"]: m["id"] for m in await history(alice, channel)}
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(alice.token)
            ack = await send_and_ack(gw, channel, "m1", "n1")
            assert ack["id"] == ids["n1"]
        assert len(await history(alice, channel)) == 3


@pytest.mark.settings(send_timeout_s=0.3)
async def test_a_send_not_committed_in_time_is_channel_busy_and_still_stored(
    gateway_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint, "ACK_CHECK_S", 0.05)
    alice, _, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(30):
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(alice.token)
            async with writer_stalled(gateway_server):
                await send(gw, channel, "late", "n-late")
                await send(gw, channel, "later", "n-later")
                first, second = await next_ack(gw), await next_ack(gw)  # in send order
                assert (first["nonce"], second["nonce"]) == ("n-late", "n-later")
                assert first["error"]["code"] == second["error"]["code"] == "channel_busy"
            # The writer went on: both are stored, and a retry gets the stored message.
            while len(stored := await history(alice, channel)) < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
            ids = {m["nonce"]: m["id"] for m in stored}
            assert list(ids) == ["n-late", "n-later"]
            ack = await send_and_ack(gw, channel, "late", "n-late")
            assert ack["id"] == ids["n-late"]
            assert _asks_of(gateway_server, channel) == set()


def _nothing(_db: object) -> None:
    pass


def _asks_of(server: RunningServer, channel_id: str) -> set[Any]:
    """The reply channels the channel's actor keeps for askers still waiting."""
    slot = server.runtime.hub.channels._slots.get(f"channel:{channel_id}")
    if slot is None or slot.actor is None:
        return set()
    return set(slot.actor._asks)


async def test_members_posting_over_gateway_and_rest_share_the_order(
    gateway_server: RunningServer,
) -> None:
    owner = await new_member(gateway_server, "owner")
    guild = await owner.client.call("POST", "/v1/api/servers", {"name": "Mixed"})
    others = [await new_member(gateway_server, f"m{i}") for i in range(3)]
    await join(owner, others, guild["id"])
    channel = text_channel(guild)
    with trio.fail_after(30):
        async with open_gateway(gateway_server.ws_url) as listener:
            await listener.identify(owner.token)

            async def over_gateway(member: Member) -> None:
                async with open_gateway(gateway_server.ws_url) as gw:
                    await gw.identify(member.token)
                    for i in range(10):
                        await send(gw, channel, f"gw {i}", f"{member.user_id}-{i}")
                    for _ in range(10):
                        assert "id" in await next_ack(gw)

            async def over_rest(member: Member) -> None:
                for i in range(10):
                    await post(member, channel, f"rest {i}")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(over_gateway, others[0])
                nursery.start_soon(over_gateway, others[1])
                nursery.start_soon(over_rest, others[2])
            seen = [(await listener.dispatch("MESSAGE_CREATE"))["d"]["id"] for _ in range(30)]
    assert seen == [m["id"] for m in await history(owner, channel)]


@pytest.mark.settings(message_rate=3, message_window_s=60)
async def test_rest_posts_and_gateway_sends_share_one_message_limit(
    gateway_server: RunningServer,
) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        for i in range(2):
            await post(alice, channel, f"rest {i}")
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(alice.token)
            assert "id" in await send_and_ack(gw, channel, "third", "n3")
            refused = (await send_and_ack(gw, channel, "fourth", "n4"))["error"]
            assert refused["code"] == "rate_limited"
        response = await alice.client.request(
            "POST", f"/v1/api/channels/{channel}/messages", json={"content": "fifth"}
        )
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert 15 <= int(response.headers["Retry-After"]) <= 21  # 3 per 60 s
        await post(bob, channel, "bob has his own budget")
    assert [m["content"] for m in await history(alice, channel)] == [
        "rest 0",
        "rest 1",
        "third",
        "bob has his own budget",
    ]


async def queued(store: Store, writes: int) -> None:
    """Wait until `writes` writes wait for the store's writer (a count with no event to wait
    on: polled)."""
    while store.queued < writes:  # noqa: ASYNC110
        await trio.sleep(0.005)


async def test_a_session_identified_while_a_post_commits_gets_it(
    gateway_server: RunningServer,
) -> None:
    """The channel's publisher reuses the last event's audience only while it has not
    yielded. Here it publishes `one`, then must wait for the commit of `two`; a session that
    identifies during that wait gets `two` (reusing the audience of `one` would skip it)."""
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    store = gateway_server.runtime.store
    stalls = first, second, third = Stall(), Stall(), Stall()
    with trio.fail_after(20):
        async with open_gateway(gateway_server.ws_url) as a:
            await a.identify(alice.token)
            try:
                await store.submit(first)
                await first.running()
                await send(a, channel, "one", "n1")
                await queued(store, 1)  # `one` waits behind `first`
                await store.submit(second)  # commits together with `one`
                first.release.set()
                await second.running()
                await store.submit(third)
                await send(a, channel, "two", "n2")
                await queued(store, 2)  # `two` waits behind `third`
                second.release.set()  # `one` commits and is published; `two` waits
                await third.running()
                assert (await a.dispatch("MESSAGE_CREATE"))["d"]["content"] == "one"
                async with open_gateway(gateway_server.ws_url) as b:
                    await b.identify(bob.token)
                    third.release.set()
                    assert (await b.dispatch("MESSAGE_CREATE"))["d"]["content"] == "two"
            finally:
                for stall in stalls:
                    stall.release.set()


async def test_sends_that_commit_keep_the_channel_check_fresh(
    gateway_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every committed send has just passed the write's own permission check, so the
    connection's pre-check of a channel counts from the last send that committed there, not
    only from the check. Here every reader is held when a send comes 1.4 s after the check
    (SENDABLE_TTL_S is 1 s) but 0.8 s after the last committed send: it is acked all the
    same, with no read."""
    monkeypatch.setattr(chat_messages, "SENDABLE_TTL_S", 1.0)
    alice, _bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    store = gateway_server.runtime.store
    readers = gateway_server.settings.db_readers
    hold = threading.Event()
    held = trio.Semaphore(0)
    token = trio.lowlevel.current_trio_token()

    def occupy(_db: object) -> None:
        trio.from_thread.run_sync(held.release, trio_token=token)
        hold.wait(10)

    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as gw, trio.open_nursery() as nursery:
            await gw.identify(alice.token)
            checked = trio.current_time()
            for i in range(3):  # the check, then two sends that need none
                assert "id" in await send_and_ack(gw, channel, f"m{i}", f"n{i}")
                await trio.sleep(0.3)
            try:
                for _ in range(readers):
                    nursery.start_soon(partial(store.read, occupy))
                for _ in range(readers):
                    await held.acquire()
                await trio.sleep_until(checked + 1.4)
                ack: dict[str, Any] = {}  # stays empty if the send waits for a reader
                with trio.move_on_after(2):
                    ack = await send_and_ack(gw, channel, "no read needed", "last")
            finally:
                hold.set()
            assert "id" in ack
