"""The justfile's scripting recipes (`just user`, `rooms`, `room-create`, `room-say`,
`room-tail`, `room-close`), run by the real `just` against a real server, found through
RELAY_URL / RELAY_REALTIME_URL and logged in with RELAY_USERNAME / RELAY_PASSWORD as a
developer would after `scripts/serve`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from tests.cli.conftest import BIN, Lines, clean_env

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tests.cli.conftest import Ran
    from tests.conftest import RunningServer

    RelayCli = Callable[..., Awaitable[Ran]]

REPO = Path(__file__).resolve().parents[2]


async def just(env: dict[str, str], *args: str, stdin: bytes = b"") -> str:
    """Run a recipe; its stdout (it must succeed and print nothing on stderr)."""
    with trio.fail_after(20):
        ran = await trio.run_process(
            [str(BIN / "just"), *args],
            cwd=REPO,
            env=env,
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert (ran.returncode, ran.stderr.decode()) == (0, ""), args
    return ran.stdout.decode()


async def test_room_recipes_against_a_running_server(
    relay_server: RunningServer, relay_cli: RelayCli
) -> None:
    env = clean_env(
        RELAY_DATA_DIR=relay_server.settings.data_dir,  # `just user` writes the database
        RELAY_URL=relay_server.url,
        RELAY_REALTIME_URL=relay_server.ws_url,
        RELAY_USERNAME="carol",
        RELAY_PASSWORD="password123",
    )
    assert (await just(env, "user", "carol", stdin=b"password123\n")).strip().isdigit()
    room_id, secret = (await just(env, "room-create", "3", "host")).split()
    listed = (await just(env, "rooms")).splitlines()
    assert listed[1].split()[:4] == [room_id, "host", "0/3", "empty"]

    tail = await trio.lowlevel.open_process(
        [str(BIN / "just"), "room-tail", room_id, secret],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a group of its own, to get Ctrl-C's SIGINT as a terminal does
    )
    assert tail.stdout is not None
    assert tail.stderr is not None
    out = Lines(tail.stdout)
    try:
        connected = await out.frame()
        assert (connected["type"], connected["client_id"], connected["host_id"]) == (
            "connected",
            1,
            1,
        )
        assert await just(env, "room-say", room_id, secret, 'it\'s "quoted" $HOME') == ""
        assert await out.frame() == {"type": "client_joined", "client_id": 2}
        # A host room: only the host broadcasts, so the message went to the host (the tail).
        said = {"type": "host", "from": 2, "data": 'it\'s "quoted" $HOME'}
        assert await out.frame() == said
        assert await out.frame() == {"type": "client_left", "client_id": 2, "reason": "left"}
        os.killpg(tail.pid, signal.SIGINT)
        with trio.fail_after(10):
            await tail.wait()
        errors = await Lines(tail.stderr).rest()
        assert "Traceback" not in errors
        assert await out.rest() == ""
    finally:
        if tail.returncode is None:
            os.killpg(tail.pid, signal.SIGKILL)
            await tail.wait()
    # The tail left the room (a clean close), so it holds no slot for a reconnect.
    rooms = await relay_cli("rooms", "list", "--json", "--url", relay_server.url)
    assert json.loads(rooms.out)["current_clients"] == 0

    assert await just(env, "room-close", room_id) == f"closed room {room_id}\n"
    rooms = await relay_cli("rooms", "list", "--json", "--url", relay_server.url)
    assert rooms.out == ""
    users = await relay_cli("user", "list", "--json")
    assert json.loads(users.out)["logins"] == 0  # each recipe logged out after itself


async def test_backup_recipe_copies_a_running_servers_database(
    relay_server: RunningServer, tmp_path: Path
) -> None:
    env = clean_env(RELAY_DATA_DIR=relay_server.settings.data_dir)
    target = tmp_path / "copy.db"
    await just(env, "backup", str(target))
    with closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM users").fetchone() is not None
