"""Server mute and deafen are the member's: they outlive leaving voice, rejoining and a restart
(stored on the member row), and apply to the media of the next join."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio

from relay.voice_client import join_voice
from tests.conftest import settings_for, start_server
from tests.voice.test_voice import open_member_voice, receive_within, setup

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import Gateway
    from tests.conftest import RunningServer
    from tests.gateway.conftest import Member


async def flags_of(server: RunningServer, m: Member, voice_id: str) -> tuple[bool, bool]:
    client = server.client()
    client.access_token = m.token
    states = await client.call("GET", f"/v1/api/channels/{voice_id}/voice-states")
    state = next(s for s in states if s["user_id"] == m.user_id)
    return state["mute"], state["deaf"]


async def leave(g: Gateway, server_id: str) -> None:
    await g.send(4, {"server_id": server_id, "channel_id": None})
    while True:
        frame = await g.dispatch("VOICE_STATE_UPDATE")
        if frame["d"]["session_id"] == g.session_id and frame["d"]["channel_id"] is None:
            return


async def test_server_mute_and_deafen_outlive_leaving_and_a_restart(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, voice_resume_grace_s=0.5, resume_window_s=1.0)
    running, shutdown = await start_server(nursery, settings)
    (a, b), server_id, voice_id = await setup(running, 2)
    path = f"/v1/api/servers/{server_id}/members/{b.user_id}"
    url = running.ws_url
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            gb, _, _ = await open_member_voice(stack, url, b, server_id, voice_id, "websocket")
            await a.client.call("PATCH", path, {"mute": True, "deaf": True})
            assert await flags_of(running, b, voice_id) == (True, True)
            # Leaving voice and joining again: still server muted and deafened.
            await leave(gb, server_id)
            await join_voice(gb, server_id, voice_id)
            assert await flags_of(running, b, voice_id) == (True, True)
            # Undeafen only: the mute stays.
            await a.client.call("PATCH", path, {"deaf": False})
            assert await flags_of(running, b, voice_id) == (True, False)
            await a.client.call("PATCH", path, {"deaf": True})
        await shutdown()

        # A restart on the same database: the next join is muted and deafened, media included.
        running, shutdown = await start_server(nursery, settings)
        url = running.ws_url
        a.client = running.client()
        a.client.access_token = a.token
        async with AsyncExitStack() as stack:
            _, ca, _ = await open_member_voice(stack, url, a, server_id, voice_id, "websocket")
            _, cb, _ = await open_member_voice(stack, url, b, server_id, voice_id, "websocket")
            assert await flags_of(running, b, voice_id) == (True, True)
            await cb.send_frame(b"from a muted member")
            await ca.send_frame(b"to a deafened member")
            assert await receive_within(ca, 0.3) == []
            assert await receive_within(cb, 0.3) == []
            # Lifted by a moderator: heard again, and stored so (not just in memory).
            await a.client.call("PATCH", path, {"mute": False, "deaf": False})
            assert await flags_of(running, b, voice_id) == (False, False)
            await cb.send_frame(b"heard")
            assert await receive_within(ca, 0.3) == [b"heard"]
            await ca.send_frame(b"hears")
            assert await receive_within(cb, 0.3) == [b"hears"]
        runtime = running.runtime
        assert await runtime.store.read(
            runtime.chat.q.voice.moderation, int(server_id), int(b.user_id)
        ) == (False, False)
        await shutdown()
