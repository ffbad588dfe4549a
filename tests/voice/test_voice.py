"""Voice end to end: gateway op 4, the voice connection, UDP and WebSocket media through the
voice actor, with real Opus frames (PyAV's libopus), on loopback."""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any

import av
import pytest
import trio

from relay.client import open_gateway
from relay.protocol import rtp
from relay.voice_client import VoiceClient, VoiceClosed, join_voice, open_voice
from tests.conftest import settings_for, start_server
from tests.gateway.conftest import Member, join, new_member

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

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


@pytest.fixture
async def voice_server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = settings_for(tmp_path, voice_resume_grace_s=0.5, resume_window_s=1.0)
    running, shutdown = await start_server(nursery, settings)
    yield running
    await shutdown()


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
        assert ga.session_id is not None
        assert gb.session_id is not None
        async with (
            open_voice(
                url,
                server_id=server_id,
                user_id=a.user_id,
                session_id=ga.session_id,
                token=va["token"],
                protocol="udp",
            ) as ca,
            open_voice(
                url,
                server_id=server_id,
                user_id=b.user_id,
                session_id=gb.session_id,
                token=vb["token"],
                protocol="websocket",
            ) as cb,
        ):
            assert ca.ready["modes"] == [rtp.MODE]
            for frame in frames:
                await ca.send_frame(frame)
            heard = await receive_within(cb)
            assert heard == frames
            assert all(decodes(p) for p in heard)
            for frame in frames:
                await cb.send_frame(frame)
            assert await receive_within(ca) == frames


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


async def close_code(url: str, **identify: str) -> int | None:
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
