"""Playing audio with the bundled voice client: `VoiceClient.play` from a generator, and
`just voice-play` (relay voice play) sending an Ogg Opus file that a member in the channel
hears, frame for frame, and can decode."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio

from relay.client import open_gateway
from relay.voice_client import join_voice, open_voice
from tests.cli.conftest import BIN, clean_env
from tests.cli.test_justfile import REPO
from tests.voice.opusfile import write_opus_file
from tests.voice.test_voice import decodes, open_member_voice, receive_within, setup

if TYPE_CHECKING:
    import subprocess
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.cli.test_justfile import RelayCli
    from tests.conftest import RunningServer

FRAMES = 10


async def test_play_sends_a_generators_frames_at_their_pace(voice_server: RunningServer) -> None:
    (a, b), server_id, voice_id = await setup(voice_server, 2)
    url = voice_server.ws_url

    async def tone() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"frame {i}".encode()

    async with AsyncExitStack() as stack:
        _, ca, _ = await open_member_voice(stack, url, a, server_id, voice_id, "udp")
        _, cb, _ = await open_member_voice(stack, url, b, server_id, voice_id, "websocket")
        with trio.fail_after(5):
            start = trio.current_time()
            assert await ca.play(tone()) == 5
            # Five frames one per 20 ms: the last goes out 80 ms after the first.
            assert trio.current_time() - start >= 0.08
            assert await receive_within(cb, 0.3) == [f"frame {i}".encode() for i in range(5)]
            # Speaking on before, off after, relayed to the others.
            spoke = [f["d"]["speaking"] for f in cb.controls if f["op"] == 5]
            assert spoke == [1, 0]
            assert await ca.play([b"again"]) == 1  # a plain iterable too
            assert await receive_within(cb, 0.3) == [b"again"]


async def run_just(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [str(BIN / "just"), *args],
            cwd=REPO,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_just_voice_play_plays_an_opus_file_into_a_channel(
    voice_server: RunningServer, tmp_path: Path, relay_cli: RelayCli
) -> None:
    (a,), server_id, voice_id = await setup(voice_server, 1)
    carol = voice_server.client()
    await carol.register("carol", "password123")
    invite = await a.client.call("POST", f"/v1/api/servers/{server_id}/invites", {})
    await carol.login("carol", "password123")
    await carol.call("POST", f"/v1/api/invites/{invite['code']}")
    song = tmp_path / "tone.opus"
    frames = write_opus_file(song, FRAMES)
    env = clean_env(
        RELAY_URL=voice_server.url,
        RELAY_REALTIME_URL=voice_server.ws_url,
        RELAY_USERNAME="carol",
        RELAY_PASSWORD="password123",
    )

    async def play_to_a(e2ee: bool, *options: str) -> None:
        """`just voice-play` as carol while a listens (end-to-end encrypted with `e2ee`)."""
        async with AsyncExitStack() as stack:
            g = await stack.enter_async_context(open_gateway(voice_server.ws_url))
            await g.identify(a.token)
            grant = await join_voice(g, server_id, voice_id)
            assert g.session_id is not None
            ca = await stack.enter_async_context(
                open_voice(
                    voice_server.ws_url,
                    server_id=server_id,
                    user_id=a.user_id,
                    session_id=g.session_id,
                    token=grant["token"],
                    protocol="websocket",
                    e2ee=e2ee,
                )
            )
            heard: list[bytes] = []

            async def listen() -> None:
                while len(heard) < len(frames):
                    heard.append((await ca.receive()).payload)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(listen)
                    args = ["voice-play", server_id, voice_id, str(song), *options]
                    ran = await run_just(env, *args)
                    assert (ran.returncode, ran.stderr.decode()) == (0, "")
                    assert ran.stdout.decode().startswith(f"played {len(frames)} frames")
            assert heard == frames
            assert all(decodes(p) for p in heard)
            assert await receive_within(ca, 0.1) == []

    await play_to_a(False)
    # As docs/voice.md writes it: over the WebSocket, end-to-end encrypted, into a channel that
    # requires it (a decrypts with the key carol sealed to it).
    await a.client.call("PATCH", f"/v1/api/channels/{voice_id}", {"e2ee_required": True})
    await play_to_a(True, "--protocol", "websocket", "--e2ee")

    # Not an Opus file: refused before connecting, one line, status 1.
    refused = await relay_cli("voice", "play", server_id, voice_id, str(REPO / "justfile"))
    assert refused.code == 1
    assert refused.error.startswith("relay: cannot play")
