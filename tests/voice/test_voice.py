"""Voice end to end: gateway op 4, the voice connection, UDP and WebSocket media through the
voice actor, with real Opus frames (PyAV's libopus), on loopback."""

from __future__ import annotations

import math
import struct
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import av
import pytest
import trio
import trio_websocket
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from actors.voice import Crash
from relay.client import ApiError, open_gateway, open_websocket
from relay.protocol import rtp
from relay.voice_client import VoiceClient, VoiceClosed, join_voice, open_voice, resume_voice
from tests.gateway.conftest import Member, join, new_member

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.client import Gateway
    from tests.conftest import RunningServer


def opus_frames(count: int) -> list[bytes]:
    """Real Opus frames (20 ms of a 440 Hz tone each), encoded by libopus through PyAV."""
    encoder: Any = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "mono", "s16"
    frames: list[bytes] = []
    for i in range(count):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        samples = (
            int(8000 * math.sin(2 * math.pi * 440 * (i * 960 + n) / 48000)) for n in range(960)
        )
        frame.planes[0].update(b"".join(struct.pack("<h", s) for s in samples))
        frame.sample_rate, frame.pts = 48000, i * 960
        frames.extend(bytes(p) for p in encoder.encode(frame))
    return frames


def decodes(payload: bytes) -> bool:
    decoder: Any = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout = 48000, "mono"
    return any(f.samples == 960 for f in decoder.decode(av.Packet(payload)))


async def setup(server: RunningServer, n: int) -> tuple[list[Member], str, str]:
    members = [await new_member(server, f"v{i}") for i in range(n)]
    created = await members[0].client.call("POST", "/v1/api/servers", {"name": "voice"})
    voice_id = next(c["id"] for c in created["channels"] if c["type"] == "voice")
    await join(members[0], members[1:], created["id"])
    return members, created["id"], voice_id


async def receive_within(client: VoiceClient, seconds: float = 0.3) -> list[bytes]:
    """Every media payload `client` gets within `seconds`."""
    got: list[bytes] = []
    with trio.move_on_after(seconds):
        while True:
            got.append((await client.receive()).payload)
    return got


async def test_two_members_udp_and_websocket_hear_each_other(
    voice_server: RunningServer,
) -> None:
    (a, b), server_id, voice_id = await setup(voice_server, 2)
    url = voice_server.ws_url
    frames = opus_frames(3)
    async with open_gateway(url) as ga, open_gateway(url) as gb:
        await ga.identify(a.token)
        await gb.identify(b.token)
        va = await join_voice(ga, server_id, voice_id)
        # Everyone in the server hears who joined.
        state = await gb.dispatch("VOICE_STATE_UPDATE")
        assert state["d"]["user_id"] == a.user_id
        assert state["d"]["channel_id"] == voice_id
        vb = await join_voice(gb, server_id, voice_id, self_mute=False)
        states = await b.client.call("GET", f"/v1/api/channels/{voice_id}/voice-states")
        assert {s["user_id"] for s in states} == {a.user_id, b.user_id}
        async with AsyncExitStack() as stack:
            ca = await voice_of(stack, url, ga, a.user_id, server_id, va["token"], "udp")
            cb = await voice_of(stack, url, gb, b.user_id, server_id, vb["token"], "websocket")
            assert ca.ready["modes"] == [rtp.MODE]
            for frame in frames:
                await ca.send_frame(frame)
            heard = await receive_within(cb)
            assert heard == frames
            assert all(decodes(p) for p in heard)
            for frame in frames:
                await cb.send_frame(frame)
            assert await receive_within(ca) == frames
            # Speaking state is relayed to the others.
            await ca.speaking(True)
            spoke = await cb.control(5)
            assert spoke["d"] == {"user_id": a.user_id, "ssrc": ca.ssrc, "speaking": 1}
        # The voice connections are gone: after the resume grace the voice states end.
        with trio.fail_after(10):
            left: set[str] = set()
            while left != {a.user_id, b.user_id}:
                update = await ga.dispatch("VOICE_STATE_UPDATE")
                if update["d"]["channel_id"] is None:
                    left.add(update["d"]["user_id"])


async def test_token_is_single_use_and_bound(voice_server: RunningServer) -> None:
    (a, b), server_id, voice_id = await setup(voice_server, 2)
    url = voice_server.ws_url
    async with open_gateway(url) as ga:
        await ga.identify(a.token)
        va = await join_voice(ga, server_id, voice_id)
        assert ga.session_id is not None
        ids = {"server_id": server_id, "session_id": ga.session_id, "token": va["token"]}
        assert await close_code(url, user_id=b.user_id, **ids) == 4004
        # The failed attempt used the token up.
        assert await close_code(url, user_id=a.user_id, **ids) == 4004
    # Protocol violations close with their documented codes.
    cases: list[tuple[list[str | bytes], int]] = [
        ([b"\x80media"], 4003),  # media before IDENTIFY
        (['{"op": 1, "d": {"protocol": "websocket"}}'], 4003),
        (['{"op": 2, "d": {}}'], 4001),  # a server op
        (["not json"], 4002),
        (['{"op": 3, "d": 1}'] * 200, 4008),  # a flood of control frames
    ]
    for frames, code in cases:
        assert await violation(url, frames) == code


async def violation(url: str, frames: list[str | bytes]) -> int | None:
    """The close code the voice endpoint answers these frames with."""
    async with open_websocket(f"{url}/v1/voice") as ws:
        await ws.get_message()  # HELLO
        try:
            for frame in frames:
                await ws.send_message(frame)
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as e:
            return e.reason.code if e.reason else None


async def close_code(url: str, **identify: Any) -> int | None:
    """The close code of a voice connection that fails to open."""
    try:
        async with open_voice(url, **identify):
            pass
    except BaseException as e:  # a VoiceClosed, in the client's nursery's group
        first: BaseException = e
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        if not isinstance(first, VoiceClosed):
            raise
        return first.code
    raise AssertionError("the voice connection opened")


async def connect_all(
    stack: AsyncExitStack, url: str, members: list[Member], server_id: str, voice_id: str
) -> tuple[list[Gateway], list[VoiceClient]]:
    gateways: list[Gateway] = []
    clients: list[VoiceClient] = []
    for i, m in enumerate(members):
        g = await stack.enter_async_context(open_gateway(url))
        await g.identify(m.token)
        grant = await join_voice(g, server_id, voice_id)
        protocol = "websocket" if i % 3 == 2 else "udp"
        c = await voice_of(stack, url, g, m.user_id, server_id, grant["token"], protocol)
        gateways.append(g)
        clients.append(c)
    return gateways, clients


async def heard_by(clients: list[VoiceClient], payload: bytes) -> set[int]:
    """The indexes of the clients that get `payload` within a short while."""
    heard: set[int] = set()
    async with trio.open_nursery() as nursery:
        for i, c in enumerate(clients):

            async def listen(i: int = i, c: VoiceClient = c) -> None:
                if payload in await receive_within(c, 0.25):
                    heard.add(i)

            nursery.start_soon(listen)
    return heard


async def test_ten_members_mute_deafen_spoof_replay_flood_leave(
    voice_server: RunningServer,
) -> None:
    members, server_id, voice_id = await setup(voice_server, 10)
    url = voice_server.ws_url
    frame = opus_frames(1)[0]
    everyone = set(range(10))
    with trio.fail_after(15):
        await _ten(url, members, server_id, voice_id, frame, everyone)


async def _ten(
    url: str, members: list[Member], server_id: str, voice_id: str, frame: bytes, everyone: set[int]
) -> None:
    async with AsyncExitStack() as stack:
        gateways, clients = await connect_all(stack, url, members, server_id, voice_id)
        sender = clients[0]
        await sender.send_frame(frame)
        assert await heard_by(clients, frame) == everyone - {0}

        # A deafened member gets nothing; the others still hear.
        await join_voice_flags(gateways[1], server_id, voice_id, self_deaf=True)
        await sender.send_frame(frame)
        assert await heard_by(clients, frame) == everyone - {0, 1}

        # Self mute: dropped on the server.
        await join_voice_flags(gateways[0], server_id, voice_id, self_mute=True)
        await sender.send_frame(frame)
        assert await heard_by(clients, frame) == set()
        await join_voice_flags(gateways[0], server_id, voice_id)

        # Server mute by the owner (member 0) of member 2, then unmute.
        path = f"/v1/api/servers/{server_id}/members/{members[2].user_id}"
        await members[0].client.call("PATCH", path, {"mute": True})
        await clients[2].send_frame(frame)
        assert await heard_by(clients, frame) == set()
        await members[0].client.call("PATCH", path, {"mute": False})

        # Someone without MUTE_MEMBERS may not.
        with pytest.raises(ApiError) as refused:
            await members[3].client.call("PATCH", path, {"mute": True})
        assert refused.value.code == "missing_permission"

        # Spoofed SSRC (member 3 claims member 0's), a replay, a tampered packet, garbage.
        spoof = clients[3]
        header = rtp.build_header(120, 1, 1, sender.ssrc)
        await spoof.send_raw(rtp.seal(header, b"spoofed", spoof.key, 10_000))
        packet = sender.packet(b"once")
        await sender.send_raw(packet)
        assert await heard_by(clients, b"once") == everyone - {0, 1}
        await sender.send_raw(packet)  # replayed
        tampered = bytearray(sender.packet(b"tampered"))
        tampered[20] ^= 1
        await sender.send_raw(bytes(tampered))
        assert sender.udp is not None
        assert sender.server_addr is not None
        for size in (0, 1, 74, 200, 1400):
            await sender.udp.sendto(bytes(size), sender.server_addr)
        # The sender's own valid packet, from an address that is not the one it bound.
        with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as other:
            await other.bind(("127.0.0.1", 0))
            await other.sendto(sender.packet(b"elsewhere"), sender.server_addr)
        assert await heard_by(clients, b"spoofed") == set()
        assert await heard_by(clients, b"elsewhere") == set()
        assert await heard_by(clients, b"once") == set()
        await sender.send_frame(frame)
        assert await heard_by(clients, frame) == everyone - {0, 1}

        # Leaving ends the voice connection (4014); a gateway session that ends clears it.
        await gateways[4].send(4, {"server_id": server_id, "channel_id": None})
        with pytest.raises(VoiceClosed) as closed:
            await clients[4].control(-1)  # no such op: reads until the close
        assert closed.value.code == 4014
        states = await members[0].client.call("GET", f"/v1/api/channels/{voice_id}/voice-states")
        assert members[4].user_id not in {s["user_id"] for s in states}


async def join_voice_flags(g: Gateway, server_id: str, voice_id: str, **flags: bool) -> None:
    """Op 4 on the channel one is in already: flags change, no new token."""
    await g.send(4, {"server_id": server_id, "channel_id": voice_id, **flags})
    while True:
        frame = await g.dispatch()
        if frame["t"] == "VOICE_STATE_UPDATE" and frame["d"]["session_id"] == g.session_id:
            return


async def test_gateway_session_end_and_kick_and_connect_refusal(
    voice_server: RunningServer,
) -> None:
    (a, b, c), server_id, voice_id = await setup(voice_server, 3)
    url = voice_server.ws_url
    async with open_gateway(url) as ga:
        await ga.identify(a.token)
        async with open_gateway(url) as gb:
            await gb.identify(b.token)
            await join_voice(gb, server_id, voice_id)
        # b's gateway is gone: after the resume window its voice state ends.
        with trio.fail_after(5):
            while True:
                frame = await ga.dispatch("VOICE_STATE_UPDATE")
                if frame["d"]["user_id"] == b.user_id and frame["d"]["channel_id"] is None:
                    break
        async with open_gateway(url) as gc:
            ready = await gc.identify(c.token)
            assert ready["voice_states"] == []
            await join_voice(gc, server_id, voice_id)
            await a.client.call("DELETE", f"/v1/api/servers/{server_id}/members/{c.user_id}")
            with trio.fail_after(5):
                while True:
                    frame = await ga.dispatch("VOICE_STATE_UPDATE")
                    if frame["d"]["user_id"] == c.user_id and frame["d"]["channel_id"] is None:
                        break
        # Without CONNECT (@everyone's taken away), joining is refused.
        roles = await a.client.call("GET", f"/v1/api/servers/{server_id}/roles")
        everyone = next(r for r in roles if r["name"] == "@everyone")
        mask = int(everyone["permissions"]) & ~(1 << 18)
        path = f"/v1/api/servers/{server_id}/roles/{everyone['id']}"
        await a.client.call("PATCH", path, {"permissions": str(mask)})
        async with open_gateway(url) as gb:
            await gb.identify(b.token)
            with pytest.raises(PermissionError, match="missing_permission"):
                await join_voice(gb, server_id, voice_id)


async def pump_until(client: VoiceClient, condition: Callable[[], bool]) -> None:
    """Read `client`'s control frames until what they teach makes `condition` true."""
    with trio.fail_after(5):
        while not condition():
            await client.pump(0.02)


async def voice_of(
    stack: AsyncExitStack,
    url: str,
    g: Gateway,
    user_id: str,
    server_id: str,
    token: str,
    protocol: str,
    *,
    e2ee: bool = False,
) -> VoiceClient:
    """The voice connection of `user_id`'s gateway session `g`, closed with `stack`."""
    assert g.session_id is not None
    return await stack.enter_async_context(
        open_voice(
            url,
            server_id=server_id,
            user_id=user_id,
            session_id=g.session_id,
            token=token,
            protocol=protocol,
            e2ee=e2ee,
        )
    )


async def open_member_voice(
    stack: AsyncExitStack,
    url: str,
    m: Member,
    server_id: str,
    voice_id: str,
    protocol: str,
    *,
    e2ee: bool = False,
) -> tuple[Gateway, VoiceClient, str]:
    """`m` identifies on a new gateway connection, joins the voice channel and connects."""
    g = await stack.enter_async_context(open_gateway(url))
    await g.identify(m.token)
    grant = await join_voice(g, server_id, voice_id)
    c = await voice_of(stack, url, g, m.user_id, server_id, grant["token"], protocol, e2ee=e2ee)
    return g, c, grant["token"]


async def test_user_limit_move_and_bypass(voice_server: RunningServer) -> None:
    (a, b, c), server_id, voice_id = await setup(voice_server, 3)
    url = voice_server.ws_url
    channel = await a.client.call("PATCH", f"/v1/api/channels/{voice_id}", {"user_limit": 1})
    assert channel["user_limit"] == 1
    other = await a.client.call(
        "POST", f"/v1/api/servers/{server_id}/channels", {"name": "two", "type": "voice"}
    )
    with pytest.raises(ApiError) as not_voice:
        await a.client.call("GET", f"/v1/api/channels/{server_id}/voice-states")
    assert not_voice.value.status in (400, 404)
    async with AsyncExitStack() as stack:
        gb, cb, _ = await open_member_voice(stack, url, b, server_id, voice_id, "websocket")
        gc = await stack.enter_async_context(open_gateway(url))
        await gc.identify(c.token)
        with pytest.raises(PermissionError, match="voice_channel_full"):
            await join_voice(gc, server_id, voice_id)
        # The owner (MOVE_MEMBERS) passes the limit.
        ga = await stack.enter_async_context(open_gateway(url))
        await ga.identify(a.token)
        await join_voice(ga, server_id, voice_id)
        # A moderator moves b: b's voice connection closes (4014), b gets a new token.
        path = f"/v1/api/servers/{server_id}/members/{b.user_id}"
        await a.client.call("PATCH", path, {"voice_channel_id": other["id"]})
        with pytest.raises(VoiceClosed) as closed:
            await cb.control(-1)
        assert closed.value.code == 4014
        moved = await gb.dispatch("VOICE_SERVER_UPDATE")
        assert moved["d"]["channel_id"] == other["id"]
        # And disconnects them.
        await a.client.call("PATCH", path, {"voice_channel_id": None})
        states = await a.client.call("GET", f"/v1/api/channels/{other['id']}/voice-states")
        assert states == []
        with pytest.raises(ApiError) as not_in_voice:
            await a.client.call("PATCH", path, {"voice_channel_id": None})
        assert not_in_voice.value.code == "not_in_voice"
        # Two voice channels in use (voice_max_channels=2): a third may not start.
        await join_voice(gb, server_id, other["id"])
        third = await a.client.call(
            "POST", f"/v1/api/servers/{server_id}/channels", {"name": "three", "type": "voice"}
        )
        with pytest.raises(PermissionError, match="too_many_voice_channels"):
            await join_voice(gc, server_id, third["id"])


async def test_actor_crash_resume_and_slow_receiver(voice_server: RunningServer) -> None:
    (a, b, c), server_id, voice_id = await setup(voice_server, 3)
    url = voice_server.ws_url
    frame = opus_frames(1)[0]
    async with AsyncExitStack() as stack:
        ga, ca, token_a = await open_member_voice(stack, url, a, server_id, voice_id, "websocket")
        gb, cb, token_b = await open_member_voice(stack, url, b, server_id, voice_id, "udp")
        _, slow, _ = await open_member_voice(stack, url, c, server_id, voice_id, "websocket")
        # c stops reading; b still gets every packet, and c is not cut off.
        got: list[bytes] = []

        async def fast_reader() -> None:
            while len(got) < 300:
                got.append((await cb.receive()).payload)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fast_reader)
                for i in range(300):
                    await ca.send_frame(b"%d" % i)
                    if i % 20 == 19:
                        await trio.sleep(0.005)
        assert got == [b"%d" % i for i in range(300)]
        await ca.send_frame(b"after")
        with trio.fail_after(10):
            while b"after" not in await receive_within(slow, 0.2):
                pass

        # The channel's actor crashes: connections close with 4015; RESUME rebuilds it.
        voice = voice_server.runtime.voice
        assert voice is not None
        await voice.actors.tell(f"voice:{voice_id}", Crash())
        with trio.fail_after(5), pytest.raises(VoiceClosed) as crashed:
            await ca.control(-1)
        assert crashed.value.code == 4015
        assert ga.session_id is not None
        resumed = await stack.enter_async_context(
            resume_voice(url, ca, server_id=server_id, session_id=ga.session_id, token=token_a)
        )
        # b's connection closed as well; it resumes and its UDP address is still bound.
        with trio.fail_after(5), pytest.raises(VoiceClosed):
            await cb.control(-1)
        assert gb.session_id is not None
        cb = await stack.enter_async_context(
            resume_voice(url, cb, server_id=server_id, session_id=gb.session_id, token=token_b)
        )
        with trio.fail_after(5):
            while True:
                await resumed.send_frame(frame)
                if frame in await receive_within(cb, 0.1):
                    break


async def test_video_sources_selection_keyframe_requests_and_permissions(
    voice_server: RunningServer,
) -> None:
    (a, b, c), server_id, voice_id = await setup(voice_server, 3)
    url = voice_server.ws_url
    async with AsyncExitStack() as stack:
        _, ca, _ = await open_member_voice(stack, url, a, server_id, voice_id, "udp")
        _, cb, _ = await open_member_voice(stack, url, b, server_id, voice_id, "websocket")
        gc, cc, _ = await open_member_voice(stack, url, c, server_id, voice_id, "udp")
        sources = await ca.announce_sources(["camera", "screen"])
        camera, screen = (s["ssrc"] for s in sources)
        assert {s["type"] for s in sources} == {"camera", "screen"}
        state = await gc.dispatch("VOICE_STATE_UPDATE")
        while state["d"]["user_id"] != a.user_id or not state["d"]["self_stream"]:
            state = await gc.dispatch("VOICE_STATE_UPDATE")
        assert state["d"]["self_video"] is True
        # b wants the screen only; c wants nothing: audio still reaches both.
        await cb.select_sources([screen])
        await trio.sleep(0.05)  # the selection is a control frame; media may overtake it
        await ca.send_raw(ca.packet(b"screen-frame" * 100, screen))  # a 1,200-byte packet
        await ca.send_raw(ca.packet(b"camera-frame", camera))
        await ca.send_frame(b"audio")
        got_b = await receive_within(cb, 0.3)
        got_c = await receive_within(cc, 0.3)
        assert sorted(got_b) == sorted([b"screen-frame" * 100, b"audio"])
        assert got_c == [b"audio"]
        # Spoofing another member's source is dropped.
        await cc.send_raw(cc.packet(b"fake", screen))
        assert await receive_within(cb, 0.2) == []
        # b asks for a keyframe of the screen: it reaches a only.
        await cb.request_keyframe(screen)
        with trio.fail_after(5):
            asked = await ca.receive()
        assert asked.rtcp
        assert asked.ssrc == cb.ssrc
        assert asked.payload[:4] == screen.to_bytes(4, "big")
        assert await receive_within(cc, 0.2) == []
        # Without STREAM (taken from @everyone), a screen share closes the connection (4018).
        roles = await a.client.call("GET", f"/v1/api/servers/{server_id}/roles")
        everyone = next(r for r in roles if r["name"] == "@everyone")
        mask = int(everyone["permissions"]) & ~(1 << 20)
        path = f"/v1/api/servers/{server_id}/roles/{everyone['id']}"
        await a.client.call("PATCH", path, {"permissions": str(mask)})
        # c joins again (permissions are taken at the join) and tries a screen: 4018.
        await gc.send(4, {"server_id": server_id, "channel_id": None})
        grant = await join_voice(gc, server_id, voice_id)
        c2 = await voice_of(stack, url, gc, c.user_id, server_id, grant["token"], "websocket")
        with trio.fail_after(5), pytest.raises(VoiceClosed) as refused:
            await c2.announce_sources(["screen"])
        assert refused.value.code == 4018


async def test_e2ee_server_forwards_what_it_cannot_read(voice_server: RunningServer) -> None:
    (a, b, c), server_id, voice_id = await setup(voice_server, 3)
    url = voice_server.ws_url
    await a.client.call("PATCH", f"/v1/api/channels/{voice_id}", {"e2ee_required": True})
    frame = opus_frames(1)[0]
    async with AsyncExitStack() as stack:

        async def member(m: Member) -> tuple[Gateway, VoiceClient]:
            g, client, _ = await open_member_voice(
                stack, url, m, server_id, voice_id, "websocket", e2ee=True
            )
            return g, client

        # Without e2ee the channel refuses the member (4019).
        gc = await stack.enter_async_context(open_gateway(url))
        await gc.identify(c.token)
        grant = await join_voice(gc, server_id, voice_id)
        assert gc.session_id is not None
        ids = {"server_id": server_id, "user_id": c.user_id, "session_id": gc.session_id}
        assert await close_code(url, token=grant["token"], protocol="websocket", **ids) == 4019

        _, ca = await member(a)
        _, cb = await member(b)
        assert ca.e2ee is not None
        assert cb.e2ee is not None
        ea, eb = ca.e2ee, cb.e2ee
        await pump_until(ca, lambda: b.user_id in ea.peers)
        await pump_until(cb, lambda: a.user_id in eb.peers)
        await ca.rotate_e2ee()
        await cb.rotate_e2ee()
        await pump_until(cb, lambda: (a.user_id, 1) in eb.keys)
        await ca.send_frame(frame)
        with trio.fail_after(5):
            raw = await cb.receive_raw()
        inner = cb.open(raw).payload  # what the server forwarded, transport layer removed
        assert frame not in inner
        assert cb.e2ee.decrypt(a.user_id, inner) == frame
        # No key the server holds opens it: every voice session's transport key.
        voice = voice_server.runtime.voice
        assert voice is not None
        server_keys = [s.key for s in voice.sessions.values()]
        assert server_keys
        for key in server_keys:
            with pytest.raises(CryptoError):
                SecretBox(key).decrypt(inner[4:])
        # A joiner gets only the keys made after it came: a rotates, b's old key stays unknown.
        old_epoch = ca.e2ee.epoch
        _, cc = await member(c)
        assert cc.e2ee is not None
        ec = cc.e2ee
        await pump_until(ca, lambda: c.user_id in ea.peers)
        await ca.rotate_e2ee()
        await pump_until(cc, lambda: (a.user_id, old_epoch + 1) in ec.keys)
        assert (a.user_id, old_epoch) not in cc.e2ee.keys
        assert (b.user_id, cb.e2ee.epoch) not in cc.e2ee.keys


async def test_permission_changes_apply_while_in_voice(voice_server: RunningServer) -> None:
    (a, b), server_id, voice_id = await setup(voice_server, 2)
    url = voice_server.ws_url
    roles = await a.client.call("GET", f"/v1/api/servers/{server_id}/roles")
    everyone = next(r for r in roles if r["name"] == "@everyone")
    path = f"/v1/api/servers/{server_id}/roles/{everyone['id']}"
    mask = int(everyone["permissions"])
    async with AsyncExitStack() as stack:
        _, ca, _ = await open_member_voice(stack, url, a, server_id, voice_id, "websocket")
        _, cb, _ = await open_member_voice(stack, url, b, server_id, voice_id, "websocket")
        await cb.send_frame(b"before")
        assert await receive_within(ca, 0.3) == [b"before"]
        # SPEAK taken from @everyone: b's audio is dropped from then on.
        await a.client.call("PATCH", path, {"permissions": str(mask & ~(1 << 19))})
        with trio.fail_after(5):
            while True:
                await cb.send_frame(b"muted?")
                if await receive_within(ca, 0.1) == []:
                    break
        await cb.send_frame(b"after")
        assert await receive_within(ca, 0.3) == []
        # CONNECT taken: b leaves voice (4014).
        await a.client.call("PATCH", path, {"permissions": str(mask & ~(1 << 18))})
        with trio.fail_after(5), pytest.raises(VoiceClosed) as closed:
            await cb.control(-1)
        assert closed.value.code == 4014
