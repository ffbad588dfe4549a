"""Gateway intents (IDENTIFY's `intents`) end to end: a real server, real clients. A session gets
only the event classes it asked for (READY and RESUMED always), skipped events take no sequence
number, the intents survive a RESUME, bad values close with 4013, and a send's ack (op 13, not
an event) reaches a session that wants no message events.

To show that an event did *not* arrive, a session that does get it (or an event after it in
the same channel) sees it first: one event is queued to every session in one go, so a
heartbeat sent afterwards on the filtered session is answered after anything it was given."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import trio

from relay.client import open_gateway
from relay.gateway.session import Session
from relay.protocol.gateway import ALL_INTENTS, ALWAYS_INTENT, Event, Intent
from tests.gateway.conftest import join, new_member
from tests.gateway.test_gateway import expect_close, post, setup_pair, text_channel
from tests.gateway.test_send import next_ack, send

if TYPE_CHECKING:
    from relay.client import Gateway
    from tests.conftest import RunningServer
    from tests.gateway.conftest import Member

SERVERS = int(Intent.SERVERS)
MEMBERS = int(Intent.SERVER_MEMBERS)
MESSAGES = int(Intent.SERVER_MESSAGES)
TYPING = int(Intent.MESSAGE_TYPING)
PRESENCES = int(Intent.PRESENCES)
DMS = int(Intent.DIRECT_MESSAGES)


class Seen:
    """Every dispatch one connection got, in order, with its seq."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.frames: list[dict[str, Any]] = []

    @property
    def names(self) -> list[str]:
        return [f["t"] for f in self.frames]

    async def until(self, t: str) -> dict[str, Any]:
        """Read up to the next dispatch `t` (kept, like everything before it)."""
        while True:
            frame = await self.gw.receive()
            if frame["op"] == 0:
                self.frames.append(frame)
                if frame["t"] == t:
                    return frame

    async def fence(self) -> None:
        """Read everything the session was given before now (up to its heartbeat's ack)."""
        await self.gw.heartbeat()
        while (frame := await self.gw.receive())["op"] != 11:
            if frame["op"] == 0:
                self.frames.append(frame)

    def assert_numbered_without_gaps(self, first: int) -> None:
        assert [f["s"] for f in self.frames] == list(range(first, first + len(self.frames)))


async def sees_presence_of(gw: Gateway, user_id: str) -> None:
    while (await gw.dispatch("PRESENCE_UPDATE"))["d"]["user_id"] != user_id:
        pass


async def typing(member: Member, channel_id: str) -> None:
    await member.client.call("POST", f"/v1/api/channels/{channel_id}/typing")


async def open_dm(member: Member, other: Member) -> str:
    dm = await member.client.call(
        "POST", "/v1/api/users/@me/channels", {"recipient_id": other.user_id}
    )
    return str(dm["id"])


async def test_without_the_messages_intent_no_message_events(gateway_server: RunningServer) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as b,
            open_gateway(gateway_server.ws_url) as a,
        ):
            await b.identify(bob.token, ALL_INTENTS & ~MESSAGES)
            seen = Seen(b)
            await a.identify(alice.token)
            await seen.until("PRESENCE_UPDATE")  # Alice came online: presences still arrive
            carol = await new_member(gateway_server, "carol")
            await join(alice, [carol], guild["id"])
            assert (await seen.until("MEMBER_ADD"))["d"]["user"]["id"] == carol.user_id
            message = await post(alice, channel, "not for bob's session")
            path = f"/v1/api/channels/{channel}/messages/{message['id']}"
            await alice.client.call("PATCH", path, {"content": "edited"})
            await alice.client.call("PUT", f"{path}/reactions/%F0%9F%91%8D/@me")
            await alice.client.call("PUT", f"/v1/api/channels/{channel}/pins/{message['id']}")
            await alice.client.call("DELETE", path)
            await typing(alice, channel)  # after the message events, in the channel's order
            assert (await seen.until("TYPING_START"))["d"]["user_id"] == alice.user_id
            assert not any(
                t.startswith("MESSAGE_") or t == "CHANNEL_PINS_UPDATE" for t in seen.names
            )
            # Skipped events took no sequence numbers: READY was 1.
            seen.assert_numbered_without_gaps(2)
            assert (await a.dispatch("MESSAGE_CREATE"))["d"]["id"] == message["id"]


async def test_only_the_messages_intent_no_presence_or_typing(
    gateway_server: RunningServer,
) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as b,
            open_gateway(gateway_server.ws_url) as a,
        ):
            await b.identify(bob.token, MESSAGES)
            seen = Seen(b)
            await a.identify(alice.token)
            await sees_presence_of(a, alice.user_id)  # so Bob's session was offered it too
            carol = await new_member(gateway_server, "carol")
            await join(alice, [carol], guild["id"])
            await a.dispatch("MEMBER_ADD")
            await typing(alice, channel)
            message = await post(alice, channel, "for bob")
            assert (await seen.until("MESSAGE_CREATE"))["d"]["id"] == message["id"]
            await seen.fence()
            assert seen.names == ["MESSAGE_CREATE"]
            assert seen.frames[0]["s"] == 2


async def test_direct_messages_intent(gateway_server: RunningServer) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as a,
            open_gateway(gateway_server.ws_url) as dms,
            open_gateway(gateway_server.ws_url) as servers,
        ):
            await a.identify(alice.token, MESSAGES | DMS)
            await dms.identify(bob.token, DMS)
            await servers.identify(bob.token, SERVERS | MESSAGES | TYPING)
            dm_seen, server_seen = Seen(dms), Seen(servers)
            dm = await open_dm(alice, bob)
            in_server = await post(alice, channel, "in the server")
            in_dm = await post(alice, dm, "in the DM")
            await typing(alice, dm)
            await a.dispatch("MESSAGE_CREATE")
            await a.dispatch("MESSAGE_CREATE")  # both: each session was offered both
            created = await dm_seen.until("CHANNEL_CREATE")
            assert created["d"]["id"] == dm
            assert (await dm_seen.until("MESSAGE_CREATE"))["d"]["id"] == in_dm["id"]
            await dm_seen.fence()
            assert dm_seen.names == ["CHANNEL_CREATE", "MESSAGE_CREATE"]  # no DM typing either
            assert (await server_seen.until("MESSAGE_CREATE"))["d"]["id"] == in_server["id"]
            assert (await server_seen.until("TYPING_START"))["d"]["channel_id"] == dm
            await server_seen.fence()
            assert server_seen.names == ["MESSAGE_CREATE", "TYPING_START"]  # typing: any channel


@pytest.mark.parametrize("intents", [None, ALL_INTENTS])
async def test_absent_intents_mean_every_event(
    gateway_server: RunningServer, intents: int | None
) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as b,
            open_gateway(gateway_server.ws_url) as a,
        ):
            await b.identify(bob.token, intents)
            seen = Seen(b)
            await a.identify(alice.token)
            await seen.until("PRESENCE_UPDATE")
            carol = await new_member(gateway_server, "carol")
            await join(alice, [carol], guild["id"])
            await seen.until("MEMBER_ADD")
            await post(alice, channel, "hello")
            await typing(alice, channel)
            await seen.until("TYPING_START")
            dm = await open_dm(alice, bob)
            await post(alice, dm, "psst")
            await seen.until("CHANNEL_CREATE")
            await seen.until("MESSAGE_CREATE")
            assert seen.names.count("MESSAGE_CREATE") == 2
            seen.assert_numbered_without_gaps(2)


@pytest.mark.parametrize(
    "intents", [-1, ALL_INTENTS + 1, 1 << 7, 1 << 40, 2**70, "1", 1.0, True, [1]]
)
async def test_bad_intents_close_4013(gateway_server: RunningServer, intents: Any) -> None:
    alice, _, _ = await setup_pair(gateway_server)
    async with open_gateway(gateway_server.ws_url) as gw:
        # Python's json writes 2**70 as the integer it is (msgspec would refuse to encode it).
        await gw.ws.send_message(
            json.dumps({"op": 2, "d": {"token": alice.token, "intents": intents}})
        )
        assert await expect_close(gw) == 4013


async def test_bad_intents_close_4013_in_msgpack(gateway_server: RunningServer) -> None:
    alice, _, _ = await setup_pair(gateway_server)
    async with open_gateway(gateway_server.ws_url, encoding="msgpack") as gw:
        frame = {"op": 2, "d": {"token": alice.token, "intents": 2**64 - 1}}
        await gw.ws.send_message(msgspec.msgpack.encode(frame))
        assert await expect_close(gw) == 4013


async def test_null_intents_mean_every_event(gateway_server: RunningServer) -> None:
    alice, _, _ = await setup_pair(gateway_server)
    with trio.fail_after(10):
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.send(2, {"token": alice.token, "intents": None})
            await gw.dispatch("READY")
            assert (await gw.dispatch("PRESENCE_UPDATE"))["d"]["user_id"] == alice.user_id


async def test_intents_are_kept_across_resume(gateway_server: RunningServer) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as a:
            await a.identify(alice.token)
            async with open_gateway(gateway_server.ws_url) as b:
                await b.identify(bob.token, TYPING)
                session_id, seq = b.session_id, b.seq
            assert session_id is not None
            assert seq == 1  # READY; nothing else was for this session
            await post(alice, channel, "missed, and not wanted")
            await typing(alice, channel)
            await a.dispatch("TYPING_START")
            async with open_gateway(gateway_server.ws_url) as b2:
                await b2.resume(bob.token, session_id, seq)  # RESUME has no intents of its own
                seen = Seen(b2)
                resumed = await seen.until("RESUMED")
                assert seen.names == ["TYPING_START", "RESUMED"]
                assert resumed["d"] == {"replayed": 1}
                seen.assert_numbered_without_gaps(2)
                live = await post(alice, channel, "live, and not wanted")
                assert (await a.dispatch("MESSAGE_CREATE"))["d"]["id"] == live["id"]
                await seen.fence()
                assert seen.names == ["TYPING_START", "RESUMED"]


async def test_a_send_is_acked_without_the_messages_intent(gateway_server: RunningServer) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as a,
            open_gateway(gateway_server.ws_url) as b,
        ):
            await a.identify(alice.token)
            ready = await b.identify(bob.token, 0)  # nothing but READY, RESUMED and acks
            assert ready["user"]["id"] == bob.user_id
            seen = Seen(b)
            await send(b, channel, "sent over the gateway", "n-1")
            ack = await next_ack(b)
            assert ack["nonce"] == "n-1"
            assert ack["channel_id"] == channel
            created = (await a.dispatch("MESSAGE_CREATE"))["d"]
            assert (created["id"], created["nonce"]) == (ack["id"], "n-1")
            await seen.fence()
            assert seen.frames == []
            assert b.seq == 1


class FrameList:
    """A sink that takes every frame."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frame(self, frame: bytes, write_now: bool = False, /) -> bool:
        self.frames.append(frame)
        return True

    def slow_consumer(self) -> None:
        raise AssertionError("never full")

    def close(self, code: int, reason: str) -> None:
        raise AssertionError("never closed")


@pytest.mark.parametrize("intents", [0, PRESENCES])
def test_a_skipped_event_takes_no_seq_and_is_not_kept(intents: int) -> None:
    session = Session(1, 1, "json", replay_size=10, replay_age_s=60.0, intents=intents)
    sink = FrameList()
    session.attach(sink)
    session.deliver(Event("READY", {}, ALWAYS_INTENT), 0.0, replay=False)
    session.deliver(Event("MESSAGE_CREATE", {}, int(Intent.SERVER_MESSAGES)), 0.0)
    session.deliver(Event("MESSAGE_CREATE", {}, int(Intent.DIRECT_MESSAGES)), 0.0)
    assert (session.seq, session.missed_since(1), len(sink.frames)) == (1, [], 1)
    session.deliver(Event("PRESENCE_UPDATE", {}, int(Intent.PRESENCES)), 0.0)
    session.deliver(Event("RESUMED", {}, ALWAYS_INTENT), 0.0)
    wanted = 2 if intents else 1
    assert session.seq == 1 + wanted
    assert session.missed_since(1) == sink.frames[1:]
    assert [json.loads(f[2:])["t"] for f in sink.frames][1:] == (
        ["PRESENCE_UPDATE", "RESUMED"] if intents else ["RESUMED"]
    )
