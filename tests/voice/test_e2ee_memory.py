"""End-to-end encryption checked from outside the server: Relay runs as its own process
(`python -m relay serve`), two E2EE clients talk through it, and a scan of that process's
memory (/proc/<pid>/mem, through /proc/<pid>/maps) finds no media key, no X25519 private key
and no plaintext frame the clients used, while it does find both transport keys (the positive
control: the scan sees what the server holds)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest
import trio

from relay.client import RelayClient, open_gateway
from relay.voice_client import VoiceClient, join_voice
from tests.realservers import wait_for_relay
from tests.voice.test_voice import pump_until, voice_of
from tests.web.conftest import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

CHUNK = 16 * 1024 * 1024
OVERLAP = 64  # a key cut by a chunk's end is found in the next chunk


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def found_in_memory(pid: int, needles: dict[str, bytes]) -> set[str]:
    """The names of the needles that occur anywhere in the readable memory of process `pid`."""
    found: set[str] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            tail = b""
            for at in range(start, end, CHUNK):
                try:
                    mem.seek(at)
                    chunk = tail + mem.read(min(CHUNK, end - at))
                except OSError:  # a mapping that cannot be read (a guard page, device memory)
                    break
                found.update(name for name, needle in needles.items() if needle in chunk)
                tail = chunk[-OVERLAP:]
    return found


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[int, str, str]]:
    """(pid, http url, ws url) of a Relay server running as its own process."""
    http_port, realtime_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELAY_")},
        "RELAY_DATA_DIR": str(tmp_path / "data"),
        "RELAY_HTTP_PORT": str(http_port),
        "RELAY_REALTIME_PORT": str(realtime_port),
        "RELAY_VOICE_UDP_PORT": str(free_udp_port()),
        "RELAY_RELAY_PORT": "off",
        "RELAY_LOG_LEVEL": "warning",
        "RELAY_REGISTER_PER_IP": "1000",
        "RELAY_LOGIN_PER_IP": "1000",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "relay", "serve"], env=env, stderr=log)
        url = f"http://127.0.0.1:{http_port}"
        try:
            wait_for_relay(url, proc, log_path)
            yield proc.pid, url, f"ws://127.0.0.1:{realtime_port}"
        finally:
            proc.terminate()
            proc.wait(10)


async def member(url: str, name: str) -> tuple[RelayClient, str]:
    client = RelayClient(url)
    user = await client.register(name, "a long password")
    await client.login(name, "a long password")
    return client, str(user["id"])


async def test_the_server_process_never_holds_an_e2ee_key(
    server_process: tuple[int, str, str],
) -> None:
    pid, url, ws_url = server_process
    try:
        open(f"/proc/{pid}/mem", "rb").close()  # noqa: ASYNC230
    except PermissionError:
        pytest.skip("cannot read the server's memory (needs root or ptrace rights)")
    with trio.fail_after(30):
        (alice, alice_id), (bob, bob_id) = await member(url, "alice"), await member(url, "bob")
        created = await alice.call("POST", "/v1/api/servers", {"name": "e2ee"})
        server_id = created["id"]
        voice_id = next(c["id"] for c in created["channels"] if c["type"] == "voice")
        await alice.call("PATCH", f"/v1/api/channels/{voice_id}", {"e2ee_required": True})
        invite = await alice.call("POST", f"/v1/api/servers/{server_id}/invites", {})
        await bob.call("POST", f"/v1/api/invites/{invite['code']}")
        frames = [b"plain opus frame " + secrets.token_bytes(48) for _ in range(4)]
        async with AsyncExitStack() as stack:
            clients: list[VoiceClient] = []
            for client, user_id, protocol in (
                (alice, alice_id, "udp"),
                (bob, bob_id, "websocket"),
            ):
                assert client.access_token is not None
                g = await stack.enter_async_context(open_gateway(ws_url))
                await g.identify(client.access_token)
                grant = await join_voice(g, server_id, voice_id)
                clients.append(
                    await voice_of(
                        stack, ws_url, g, user_id, server_id, grant["token"], protocol, e2ee=True
                    )
                )
            ca, cb = clients
            assert ca.e2ee is not None
            assert cb.e2ee is not None
            ea, eb = ca.e2ee, cb.e2ee
            await pump_until(ca, lambda: bob_id in ea.peers)
            await pump_until(cb, lambda: alice_id in eb.peers)
            await ca.rotate_e2ee()
            await cb.rotate_e2ee()
            await pump_until(ca, lambda: (bob_id, 1) in ea.keys)
            await pump_until(cb, lambda: (alice_id, 1) in eb.keys)
            # They talk, both ways, end to end encrypted.
            await ca.send_frame(frames[0])
            await ca.send_frame(frames[1])
            assert [(await cb.receive()).payload for _ in range(2)] == frames[:2]
            await cb.send_frame(frames[2])
            await cb.send_frame(frames[3])
            assert [(await ca.receive()).payload for _ in range(2)] == frames[2:]

            assert ca.e2ee is not None
            assert cb.e2ee is not None
            secret: dict[str, bytes] = {
                "alice media key": ca.e2ee.media_key,
                "bob media key": cb.e2ee.media_key,
                "alice x25519 key": bytes(ca.e2ee.private),
                "bob x25519 key": bytes(cb.e2ee.private),
            }
            for owner, e2ee in (("alice", ca.e2ee), ("bob", cb.e2ee)):
                for (user, epoch), key in e2ee.keys.items():
                    secret[f"{user}'s epoch {epoch} key, as {owner} holds it"] = key
            for i, frame in enumerate(frames):
                secret[f"plaintext frame {i}"] = frame
            assert len(secret) == 10  # each one's key as the other opened it, too
            control = {"alice transport key": ca.key, "bob transport key": cb.key}
            found = await trio.to_thread.run_sync(found_in_memory, pid, secret | control)
        assert found & set(control) == set(control), "the scan must see what the server holds"
        assert found & set(secret) == set()
        await alice.aclose()
        await bob.aclose()
