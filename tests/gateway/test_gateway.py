"""The chat gateway end to end: real server, real WebSocket clients (trio-websocket), events
produced by real REST calls."""

from __future__ import annotations

import json
import logging
import socket
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio_websocket
from wsproto.events import AcceptConnection, CloseConnection, TextMessage

from relay.client import GatewayClosed, open_gateway, open_websocket
from tests.conftest import settings_for, start_server
from tests.gateway.conftest import GATEWAY_SETTINGS, join, new_member
from tests.realtime.clients import TEXT, RawClient, masked, split_url

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import Gateway
    from tests.conftest import RunningServer
    from tests.gateway.conftest import Member


async def setup_pair(server: RunningServer) -> tuple[Member, Member, dict[str, Any]]:
    alice = await new_member(server, "alice")
    bob = await new_member(server, "bob")
    guild = await alice.client.call("POST", "/v1/api/servers", {"name": "Home"})
    await join(alice, [bob], guild["id"])
    return alice, bob, guild


def text_channel(guild: dict[str, Any]) -> str:
    return str(next(c["id"] for c in guild["channels"] if c["type"] == "text"))


async def post(member: Member, channel_id: str, content: str) -> dict[str, Any]:
    result: dict[str, Any] = await member.client.call(
        "POST", f"/v1/api/channels/{channel_id}/messages", {"content": content}
    )
    return result


async def test_hello_identify_ready(gateway_server: RunningServer) -> None:
    alice, _, guild = await setup_pair(gateway_server)
    with trio.fail_after(10):
        async with open_gateway(gateway_server.ws_url) as gw:
            assert gw.hello["heartbeat_interval"] == 41250
            ready = await gw.identify(alice.token)
            assert gw.seq == 1
            assert ready["user"]["id"] == alice.user_id
            assert [s["id"] for s in ready["servers"]] == [guild["id"]]
            names = {c["name"] for c in ready["servers"][0]["channels"]}
            assert {"general", "General"} <= names
            assert isinstance(ready["session_id"], str)
            assert any(r["channel_id"] == text_channel(guild) for r in ready["read_states"])
            await gw.heartbeat()
            ops: list[int] = []
            while not ops or ops[-1] != 11:
                ops.append((await gw.receive())["op"])
            assert set(ops) <= {0, 11}  # dispatches (e.g. her own PRESENCE_UPDATE), then the ack


async def test_two_clients_see_each_other(gateway_server: RunningServer) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as a,
            open_gateway(gateway_server.ws_url, encoding="msgpack") as b,
        ):
            await a.identify(alice.token)
            await b.identify(bob.token)
            presence = await a.dispatch("PRESENCE_UPDATE")
            while presence["d"]["user_id"] != bob.user_id:
                presence = await a.dispatch("PRESENCE_UPDATE")
            assert presence["d"]["status"] == "online"

            message = await post(alice, channel, "hello <@" + bob.user_id + ">")
            created = (await b.dispatch("MESSAGE_CREATE"))["d"]
            assert created["id"] == message["id"]
            assert created["mentions"] == [bob.user_id]
            assert (await a.dispatch("MESSAGE_CREATE"))["d"]["id"] == message["id"]

            path = f"/v1/api/channels/{channel}/messages/{message['id']}"
            await alice.client.call("PATCH", path, {"content": "edited"})
            assert (await b.dispatch("MESSAGE_UPDATE"))["d"]["content"] == "edited"

            await bob.client.call("PUT", f"{path}/reactions/%F0%9F%91%8D/@me")
            reaction = (await a.dispatch("MESSAGE_REACTION_ADD"))["d"]
            assert (reaction["emoji"], reaction["user_id"]) == ("👍", bob.user_id)

            await bob.client.call("POST", f"/v1/api/channels/{channel}/typing")
            typing = (await a.dispatch("TYPING_START"))["d"]
            assert typing["user_id"] == bob.user_id

            await alice.client.call("DELETE", path)
            assert (await b.dispatch("MESSAGE_DELETE"))["d"]["id"] == message["id"]

            await b.send(3, {"status": "dnd", "activity": "reading"})
            presence = await a.dispatch("PRESENCE_UPDATE")
            assert presence["d"] == {"user_id": bob.user_id, "status": "dnd", "activity": "reading"}
        # Bob's last session is gone: after the grace period Alice's new session sees offline.


async def test_presence_goes_offline_after_last_session(gateway_server: RunningServer) -> None:
    alice, bob, _ = await setup_pair(gateway_server)
    with trio.fail_after(10):
        async with open_gateway(gateway_server.ws_url) as a:
            await a.identify(alice.token)
            async with open_gateway(gateway_server.ws_url) as b:
                await b.identify(bob.token)
                while (await a.dispatch("PRESENCE_UPDATE"))["d"]["user_id"] != bob.user_id:
                    pass
            while True:
                update = (await a.dispatch("PRESENCE_UPDATE"))["d"]
                if update["user_id"] == bob.user_id:
                    break
            assert update["status"] == "offline"


async def test_500_messages_from_10_posters_arrive_once_in_history_order(
    gateway_server: RunningServer,
) -> None:
    owner = await new_member(gateway_server, "owner")
    guild = await owner.client.call("POST", "/v1/api/servers", {"name": "Busy"})
    posters = [await new_member(gateway_server, f"poster{i}") for i in range(10)]
    await join(owner, posters, guild["id"])
    channel = text_channel(guild)
    received: dict[str, list[str]] = {}

    async def listen(name: str, token: str, ready: trio.Event) -> None:
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(token)
            ready.set()
            ids = received.setdefault(name, [])
            while len(ids) < 500:
                ids.append((await gw.dispatch("MESSAGE_CREATE"))["d"]["id"])

    async def send_50(member: Member) -> None:
        for i in range(50):
            await post(member, channel, f"message {i}")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            listeners = [("owner", owner.token)] + [
                (f"p{i}", p.token) for i, p in enumerate(posters[:3])
            ]
            for name, token in listeners:
                ready = trio.Event()
                nursery.start_soon(listen, name, token, ready)
                await ready.wait()
            async with trio.open_nursery() as senders:
                for poster in posters:
                    senders.start_soon(send_50, poster)

    history: list[str] = []
    after = "1"
    while True:
        page = await owner.client.call(
            "GET", f"/v1/api/channels/{channel}/messages?after={after}&limit=100"
        )
        if not page:
            break
        history.extend(m["id"] for m in page)
        after = page[-1]["id"]
    assert len(history) == 500
    assert len(set(history)) == 500
    for name, ids in received.items():
        assert ids == history, name


async def replayed_messages(gateway: Gateway) -> list[str]:
    """The ids of the MESSAGE_CREATEs a RESUME replays, up to RESUMED."""
    ids: list[str] = []
    while True:
        frame = await gateway.dispatch()
        if frame["t"] == "RESUMED":
            return ids
        if frame["t"] == "MESSAGE_CREATE":
            ids.append(frame["d"]["id"])


@pytest.mark.parametrize(
    "outbox",
    [
        "default",
        # The replay waits for room frame by frame, so its last frame can still fill the
        # outbox when RESUMED is delivered; RESUMED must wait for room too, or the client is
        # cut off as a slow consumer (4010) while it reads. One frame makes that certain.
        pytest.param("one frame", marks=pytest.mark.settings(outbox_frames=1)),
    ],
)
async def test_resume_replays_exactly_what_was_missed(
    gateway_server: RunningServer, outbox: str
) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as b:
            await b.identify(bob.token)
            first = await post(alice, channel, "before the drop")
            assert (await b.dispatch("MESSAGE_CREATE"))["d"]["id"] == first["id"]
            session_id, seq = b.session_id, b.seq
        assert session_id is not None
        missed = [(await post(alice, channel, f"missed {i}"))["id"] for i in range(5)]
        async with open_gateway(gateway_server.ws_url) as b2:
            await b2.resume(bob.token, session_id, seq)
            replayed = await replayed_messages(b2)
            assert replayed == missed
            live = await post(alice, channel, "after the resume")
            assert (await b2.dispatch("MESSAGE_CREATE"))["d"]["id"] == live["id"]

        # A session id nobody has, or someone else's: INVALID_SESSION (d = false).
        async with open_gateway(gateway_server.ws_url) as b3:
            await b3.resume(alice.token, session_id, 0)
            frame = await b3.receive()
            assert (frame["op"], frame["d"]) == (9, False)
            await b3.resume(bob.token, "no-such-session", 0)
            frame = await b3.receive()
            assert (frame["op"], frame["d"]) == (9, False)


async def test_ready_is_not_replayed(gateway_server: RunningServer) -> None:
    """Only a client that got READY knows the session id; the replay buffer does not keep it,
    so a resume from before READY (seq 0) is INVALID_SESSION, one from READY replays nothing."""
    _, bob, _ = await setup_pair(gateway_server)
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as b:
            await b.identify(bob.token)
            session_id, seq = b.session_id, b.seq
        assert session_id is not None
        async with open_gateway(gateway_server.ws_url) as b2:
            await b2.resume(bob.token, session_id, 0)
            frame = await b2.receive()
            assert (frame["op"], frame["d"]) == (9, False)
        async with open_gateway(gateway_server.ws_url) as b3:  # the session is gone now
            await b3.resume(bob.token, session_id, seq)
            assert (await b3.receive())["op"] == 9
        async with open_gateway(gateway_server.ws_url) as b4:
            await b4.identify(bob.token)
            session_id, seq = b4.session_id, b4.seq
        assert session_id is not None
        async with open_gateway(gateway_server.ws_url) as b5:
            await b5.resume(bob.token, session_id, seq)
            frame = await b5.dispatch()
            assert frame["t"] == "RESUMED"
            assert frame["d"] == {"replayed": 0}


@pytest.mark.settings(replay_size=3)
async def test_resume_after_the_buffer_overflowed_is_invalid(
    gateway_server: RunningServer,
) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as b:
            await b.identify(bob.token)
            session_id, seq = b.session_id, b.seq
        assert session_id is not None
        for i in range(5):
            await post(alice, channel, f"missed {i}")
        async with open_gateway(gateway_server.ws_url) as b2:
            await b2.resume(bob.token, session_id, seq)
            frame = await b2.receive()
            assert (frame["op"], frame["d"]) == (9, False)
            # The session is gone for good; IDENTIFY starts a new one on the same socket.
            await b2.identify(bob.token)


async def test_channel_actor_crash_is_restarted_and_delivery_goes_on(
    gateway_server: RunningServer,
) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as b:
            await b.identify(bob.token)
            await post(alice, channel, "one")
            await b.dispatch("MESSAGE_CREATE")
            await gateway_server.runtime.hub.inject_fault(int(channel))
            second = await post(alice, channel, "two")
            assert (await b.dispatch("MESSAGE_CREATE"))["d"]["id"] == second["id"]


async def test_non_members_get_nothing(gateway_server: RunningServer) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    eve = await new_member(gateway_server, "eve")
    channel = text_channel(guild)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as e,
            open_gateway(gateway_server.ws_url) as b,
        ):
            ready = await e.identify(eve.token)
            assert ready["servers"] == []
            await b.identify(bob.token)
            response = await eve.client.request("GET", f"/v1/api/servers/{guild['id']}/channels")
            assert response.status_code == 404
            await post(alice, channel, "members only")
            await b.dispatch("MESSAGE_CREATE")
            # Up to her heartbeat's ack Eve got nothing of that server (her own presence only).
            await e.heartbeat()
            seen: list[tuple[int, str | None]] = []
            while not seen or seen[-1] != (11, None):
                frame = await e.receive()
                seen.append((frame["op"], frame.get("t")))
            assert set(seen) <= {(0, "PRESENCE_UPDATE"), (11, None)}, seen


async def expect_close(gw: Gateway) -> int | None:
    with trio.fail_after(5):
        while True:
            try:
                await gw.receive()
            except GatewayClosed as closed:
                return closed.code


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"op": 99, "d": null}', 4001),
        ('{"op": 0, "d": null}', 4001),
        ('{"op": 2}', 4002),
        ("not json", 4002),
        ('{"op": 2, "d": {"token": 5}}', 4002),
        ('{"op": 3, "d": {"status": "online"}}', 4003),
        ('{"op": 2, "d": {"token": "forged"}}', 4004),
    ],
)
async def test_close_codes_for_bad_frames(
    gateway_server: RunningServer, frame: str, code: int
) -> None:
    async with open_gateway(gateway_server.ws_url) as gw:
        await gw.ws.send_message(frame)
        assert await expect_close(gw) == code


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_deeply_nested_frame_is_a_decode_error(
    gateway_server: RunningServer, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Objects nested 1000 deep, 6 KB, before any login: msgspec raises RecursionError for them.
    frame: str | bytes = '{"a":' * 1000 + "1" + "}" * 1000
    if encoding == "msgpack":
        frame = b"\x81\xa1a" * 1000 + b"\x01"  # fixmap {"a": ...}
    async with open_gateway(gateway_server.ws_url, encoding=encoding) as gw:
        await gw.ws.send_message(frame)
        assert await expect_close(gw) == 4002
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_identify_twice_is_4005(gateway_server: RunningServer) -> None:
    alice, _, _ = await setup_pair(gateway_server)
    async with open_gateway(gateway_server.ws_url) as gw:
        await gw.identify(alice.token)
        await gw.send(2, {"token": alice.token})
        assert await expect_close(gw) == 4005


async def test_resume_with_future_seq_is_4007(gateway_server: RunningServer) -> None:
    alice, _, _ = await setup_pair(gateway_server)
    async with open_gateway(gateway_server.ws_url) as gw:
        await gw.identify(alice.token)
        session_id = gw.session_id
    assert session_id is not None
    async with open_gateway(gateway_server.ws_url) as gw:
        await gw.resume(alice.token, session_id, 1000)
        assert await expect_close(gw) == 4007


@pytest.mark.settings(gateway_rate=5)
async def test_rate_limit_is_4008(gateway_server: RunningServer) -> None:
    async with open_gateway(gateway_server.ws_url) as gw:
        for _ in range(6):
            await gw.heartbeat()
        assert await expect_close(gw) == 4008


@pytest.mark.settings(heartbeat_interval_s=0.3, heartbeat_grace_s=0.2)
async def test_missed_heartbeat_is_4009(gateway_server: RunningServer) -> None:
    alice = await new_member(gateway_server, "alice")
    async with open_gateway(gateway_server.ws_url, heartbeat=False) as gw:
        assert gw.hello["heartbeat_interval"] == 300
        await gw.identify(alice.token)
        assert await expect_close(gw) == 4009


@pytest.mark.settings(heartbeat_interval_s=0.3, heartbeat_grace_s=0.2)
async def test_the_bundled_client_heartbeats_on_the_servers_interval(
    gateway_server: RunningServer,
) -> None:
    """open_gateway beats by itself: 1 s is twice the deadline (0.5 s) without one."""
    alice = await new_member(gateway_server, "alice")
    async with open_gateway(gateway_server.ws_url) as gw:
        await gw.identify(alice.token)
        acks = 0
        with trio.move_on_after(1.0):
            while True:
                frame = await gw.receive()  # GatewayClosed (4009) if a beat were missed
                acks += frame["op"] == 11
        assert acks >= 3  # one per 0.225-0.27 s


@pytest.mark.settings(heartbeat_interval_s=0.3, heartbeat_grace_s=0.2)
async def test_heartbeats_do_not_keep_a_connection_that_never_identifies(
    gateway_server: RunningServer,
) -> None:
    async with open_gateway(gateway_server.ws_url, heartbeat=False) as gw:
        code = None
        with trio.fail_after(5):
            try:
                for _ in range(40):  # far past the first deadline (0.5 s), had they moved it
                    await trio.sleep(0.1)
                    await gw.heartbeat()
                    assert (await gw.receive())["op"] == 11
            except trio_websocket.ConnectionClosed:  # the heartbeat met the close
                code = await expect_close(gw)
            except GatewayClosed as closed:  # the close came between a beat and its ack
                code = closed.code
        assert code == 4003


@pytest.mark.settings(heartbeat_interval_s=0.6, heartbeat_grace_s=0.4)
async def test_each_heartbeat_moves_the_deadline(gateway_server: RunningServer) -> None:
    alice = await new_member(gateway_server, "alice")
    async with open_gateway(gateway_server.ws_url, heartbeat=False) as gw:
        await gw.identify(alice.token)
        for _ in range(10):  # 2.5 s in all, two and a half times the first deadline
            await trio.sleep(0.25)
            await gw.heartbeat()
            with trio.fail_after(5):
                while (await gw.receive())["op"] != 11:  # acknowledged: still open
                    pass
        assert await expect_close(gw) == 4009


async def test_unknown_encoding_is_4012(gateway_server: RunningServer) -> None:
    url = f"{gateway_server.ws_url}/v1/gateway?encoding=xml"
    async with open_websocket(url) as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason is not None
    assert closed.value.reason.code == 4012


@pytest.mark.settings(max_frame_bytes=1024)
async def test_oversize_frame_is_refused(gateway_server: RunningServer) -> None:
    async with open_gateway(gateway_server.ws_url) as gw:
        await gw.ws.send_message('{"op": 1, "d": null, "t": "' + "x" * 2000 + '"}')
        assert await expect_close(gw) == 1009


@pytest.mark.settings(outbox_frames=4)
async def test_slow_consumer_is_cut_off_and_can_resume(gateway_server: RunningServer) -> None:
    alice, bob, guild = await setup_pair(gateway_server)
    carol = await new_member(gateway_server, "carol")
    await join(alice, [carol], guild["id"])
    channel = text_channel(guild)
    total = 200
    with trio.fail_after(60):
        # Bob reads his READY and then nothing: a tiny receive buffer makes TCP push back soon.
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = split_url(gateway_server.ws_url)
        await sock.connect((host, port))
        slow = RawClient(trio.SocketStream(sock))
        async with slow.stream:
            assert isinstance(await slow.handshake("/v1/gateway"), AcceptConnection)
            assert isinstance(await slow.next_event(), TextMessage)  # HELLO
            identify = json.dumps({"op": 2, "d": {"token": bob.token}}).encode()
            await slow.send(masked(TEXT, identify))
            ready = await slow.next_event()
            assert isinstance(ready, TextMessage)
            session_id = json.loads(ready.data)["d"]["session_id"]

            seen: list[str] = []
            got: list[str] = []
            last_seq = 0

            async def carol_reads(gw: Gateway) -> None:
                while len(seen) < total:
                    seen.append((await gw.dispatch("MESSAGE_CREATE"))["d"]["id"])

            async def bob_reads_once_cut() -> None:
                # Bob stays silent until the server has cut him, then reads what was queued
                # before the cut and the close frame, which the server gives up on after its
                # close timeout (2 s): reading at once keeps a loaded machine inside it.
                nonlocal last_seq
                session = gateway_server.runtime.hub.sessions[session_id]
                while session.sink is not None:  # noqa: ASYNC110 (the hub has no event for it)
                    await trio.sleep(0.005)
                text = ""
                while True:
                    event = await slow.next_event()
                    assert event is not None, "closed without a close frame"
                    if isinstance(event, CloseConnection):
                        assert event.code == 4010
                        return
                    if isinstance(event, TextMessage):  # wsproto hands over partial messages
                        text += event.data
                        if not event.message_finished:
                            continue
                        frame, text = json.loads(text), ""
                        if frame.get("t") == "MESSAGE_CREATE":
                            got.append(frame["d"]["id"])
                        last_seq = frame.get("s") or 0

            async with open_gateway(gateway_server.ws_url) as c, trio.open_nursery() as nursery:
                await c.identify(carol.token)
                nursery.start_soon(carol_reads, c)
                nursery.start_soon(bob_reads_once_cut)
                posted = [
                    (await post(alice, channel, f"{i:04d}" + "x" * 3996))["id"]
                    for i in range(total)
                ]
            assert seen == posted  # Carol got everything, in order, despite Bob

            # Bob's socket: what was queued before the cut, then the slow-consumer close.
            assert got == posted[: len(got)]
            assert len(got) < total

        # The session survived the cut: RESUME gets exactly the rest.
        async with open_gateway(gateway_server.ws_url) as b:
            await b.resume(bob.token, session_id, last_seq)
            rest = await replayed_messages(b)
            assert got + rest == posted


async def test_logout_closes_the_logins_gateway_sessions(gateway_server: RunningServer) -> None:
    alice, bob, _ = await setup_pair(gateway_server)
    with trio.fail_after(10):
        async with (
            open_gateway(gateway_server.ws_url) as a,
            open_gateway(gateway_server.ws_url) as b,
        ):
            await a.identify(alice.token)
            await b.identify(bob.token)
            await alice.client.logout()
            assert await expect_close(a) == 4004
            await b.heartbeat()  # Bob's session is untouched
            while (await b.receive())["op"] != 11:
                pass
        assert all(
            s.user_id != int(alice.user_id) for s in gateway_server.runtime.hub.sessions.values()
        )


@pytest.mark.settings(heartbeat_interval_s=0.5, heartbeat_grace_s=0.5)
async def test_heartbeats_keep_the_session_alive(gateway_server: RunningServer) -> None:
    alice = await new_member(gateway_server, "alice")
    async with open_gateway(gateway_server.ws_url, heartbeat=False) as gw:
        await gw.identify(alice.token)
        # 2.4 s, well past the first deadline (1 s): each heartbeat must move it.
        for _ in range(6):
            await trio.sleep(0.4)
            await gw.heartbeat()
            while (await gw.receive())["op"] != 11:
                pass


@pytest.mark.settings(max_sessions_per_user=2)
async def test_a_users_sessions_are_capped_and_the_longest_detached_make_way(
    gateway_server: RunningServer,
) -> None:
    alice = await new_member(gateway_server, "alice")
    with trio.fail_after(10):
        async with open_gateway(gateway_server.ws_url) as first:
            await first.identify(alice.token)
            async with open_gateway(gateway_server.ws_url) as second:
                await second.identify(alice.token)
                second_id = second.session_id
                async with open_gateway(gateway_server.ws_url) as third:
                    await third.send(2, {"token": alice.token})
                    assert await expect_close(third) == 4011  # two connected: no room
            # The second is detached (resumable) now: a new one ends it to make room.
            async with open_gateway(gateway_server.ws_url) as fourth:
                await fourth.identify(alice.token)
            assert second_id is not None
            async with open_gateway(gateway_server.ws_url) as fifth:
                await fifth.resume(alice.token, second_id, 1)
                frame = await fifth.receive()
                assert (frame["op"], frame["d"]) == (9, False)  # gone


async def test_shutdown_with_a_live_session_logs_no_error(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A session still connected at shutdown ends quietly: its cleanup (telling presence the
    session went) must not reach for a runtime the services already let go of."""
    running, shutdown = await start_server(nursery, settings_for(tmp_path, **GATEWAY_SETTINGS))
    member = await new_member(running, "ada")
    with trio.fail_after(15):
        async with open_gateway(running.ws_url) as gw:
            await gw.identify(member.token)
            await shutdown()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_a_joiner_and_the_members_see_each_others_presence_at_once(
    gateway_server: RunningServer,
) -> None:
    """Both were online before they shared a server: joining introduces them (before, each
    looked offline to the other until their next change of status)."""
    owner = await new_member(gateway_server, "host")
    joiner = await new_member(gateway_server, "newcomer")
    guild = await owner.client.call("POST", "/v1/api/servers", {"name": "Lobby"})
    with trio.fail_after(10):
        async with (
            open_gateway(gateway_server.ws_url) as a,
            open_gateway(gateway_server.ws_url) as b,
        ):
            await a.identify(owner.token)
            await b.send(2, {"token": joiner.token})
            assert (await b.dispatch("READY"))["d"]["presences"] == []  # nothing shared yet
            await b.send(3, {"status": "dnd"})
            while (await b.dispatch("PRESENCE_UPDATE"))["d"]["status"] != "dnd":
                pass  # the joiner's own sessions hear it: the status is set
            await join(owner, [joiner], guild["id"])
            while (seen := (await a.dispatch("PRESENCE_UPDATE"))["d"])["user_id"] != joiner.user_id:
                pass
            assert seen == {"user_id": joiner.user_id, "status": "dnd", "activity": None}
            while (seen := (await b.dispatch("PRESENCE_UPDATE"))["d"])["user_id"] != owner.user_id:
                pass
            assert seen["status"] == "online"
