"""kill -9 in the middle of an upload: no visible partial file, and the prune removes the rest."""

from __future__ import annotations

import re
import signal
import subprocess
from typing import TYPE_CHECKING

import trio
from nacl.signing import SigningKey

from relay.client import RelayClient
from relay.services import prune_files
from tests.conftest import settings_for, start_server
from tests.test_cli import BIN, env_for, read_until

if TYPE_CHECKING:
    from pathlib import Path

MiB = 1024 * 1024


async def test_kill_9_during_an_upload_leaves_no_visible_file(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    env = env_for(tmp_path, RELAY_HTTP_PORT="0", RELAY_MIN_FREE_DISK_BYTES="0")
    listening = re.compile(rb'"msg":"listening","http":"(http://127\.0\.0\.1:\d+)"')
    process = await trio.lowlevel.open_process(
        [str(BIN / "relay"), "serve"], env=env, stderr=subprocess.STDOUT, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    media = tmp_path / "data" / "media"
    try:
        url = (await read_until(process.stdout, listening, bytearray())).decode()
        async with RelayClient(url) as client:
            key = SigningKey.generate()  # a key login: no argon2 hashing, a faster test
            await client.register("crash", public_key=bytes(key.verify_key))
            await client.login_with_key("crash", key)
            auth = {"Authorization": f"Bearer {client.access_token}"}
            server = await client.call("POST", "/v1/api/servers", {"name": "s"})
            channel = await client.call(
                "POST", f"/v1/api/servers/{server['id']}/channels", {"name": "c", "type": "text"}
            )
        host, port = url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(
            f"POST /v1/api/channels/{channel['id']}/attachments?filename=big HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: {auth['Authorization']}\r\n"
            f"Content-Length: {8 * MiB}\r\n\r\n".encode()
            + b"z" * (2 * MiB)
        )
        with trio.fail_after(10):  # until the spool has bytes on disk
            # Another process's file: there is no event to wait for, so poll.
            while not any(p.stat().st_size > MiB for p in (media / "tmp").iterdir()):  # noqa: ASYNC110
                await trio.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await stream.aclose()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert [p for p in (media / "blobs").rglob("*") if p.is_file()] == []  # nothing visible
    assert list((media / "tmp").iterdir())  # only the temp file, which the prune removes:

    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    assert running.runtime.chat.media is not None
    await prune_files(running.runtime.store, running.runtime.chat.media, orphan_age_s=0)
    assert list((media / "tmp").iterdir()) == []
    await shutdown()
