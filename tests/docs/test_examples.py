"""Every program of docs/examples runs, as the README's tour runs it, against a real server.

The programs take the server's addresses from HTTP_URL, WS_URL and RELAYD_ADDRESS. The tour is
run twice over on one server, so each program also works when its account, server or room
already exists (the first run registers ada, the second logs her in).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from collections.abc import Mapping

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
# What each program prints last, in the README's order.
PRINTS = {
    "gateway.py": "MESSAGE_CREATE: ada said hello from the gateway example",
    "key_login.py": "logged in with the key",
    "rooms.py": "{'type': 'broadcast', 'from': 1, 'data': {'x': 1}}",
    "byte_relay.py": "b'alice' sent b'hello bob'",
}


def test_every_example_is_run() -> None:
    assert sorted(PRINTS) == sorted(p.name for p in EXAMPLES.glob("*.py"))


async def run_example(name: str, env: Mapping[str, str]) -> str:
    with trio.fail_after(30):  # a hang guard: each takes about a second
        result = await trio.run_process(
            [sys.executable, str(EXAMPLES / name)],
            env=env,
            cwd=ROOT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = result.stdout.decode()
    assert result.returncode == 0, f"{name}:\n{output}{result.stderr.decode()}"
    return output


async def test_the_examples_run_against_a_real_server(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, relay_port=0))
    host, port = running.runtime.relay_addresses[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(HTTP_URL=running.url, WS_URL=running.ws_url, RELAYD_ADDRESS=f"{host}:{port}")
    for _ in range(2):
        for name, last_line in PRINTS.items():
            output = await run_example(name, env)
            assert last_line in output.strip().splitlines()[-1], f"{name}:\n{output}"
    await shutdown()
