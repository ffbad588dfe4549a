"""The two documented ways to start the server, run as real processes: `relay serve` and plain
`hypercorn relay.app:app`. Each must come up, answer, and exit 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from relay.storage.schema import LATEST_VERSION
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from trio.abc import ReceiveStream

BIN = Path(sys.executable).parent


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    # Free ports for every listener: a fixed one (8081 by default) collides with anything else
    # running on the machine, e.g. a second test run or scripts/serve.
    env.update(
        RELAY_DATA_DIR=str(tmp_path / "data"),
        RELAY_REALTIME_PORT="0",
        RELAY_RELAY_PORT="off",
        RELAY_VOICE_UDP_PORT="0",
    )
    env.update(extra)
    return env


async def read_until(stream: ReceiveStream, pattern: re.Pattern[bytes], seen: bytearray) -> bytes:
    """Read output until `pattern` matches; return the match's first group."""
    with trio.fail_after(20):
        while (match := pattern.search(seen)) is None:
            chunk = await stream.receive_some(4096)
            assert chunk, f"process ended before {pattern.pattern!r}; output:\n{seen.decode()}"
            seen += chunk
    return match.group(1)


async def serve_and_stop(
    command: list[str],
    env: dict[str, str],
    started: re.Pattern[bytes],
    stop: signal.Signals = signal.SIGTERM,
) -> tuple[int, str]:
    process = await trio.lowlevel.open_process(
        command, env=env, stderr=subprocess.STDOUT, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    seen = bytearray()
    try:
        url = (await read_until(process.stdout, started, seen)).decode()
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/healthz")).status_code == 200
            response = await client.post(
                "/v1/api/auth/register", json={"username": "cli", "password": "password123"}
            )
            assert response.status_code == 201
        process.send_signal(stop)
        with trio.fail_after(20):
            while chunk := await process.stdout.receive_some(4096):
                seen += chunk
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return code, seen.decode()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_relay_serve_starts_answers_and_stops_cleanly(
    tmp_path: Path, stop: signal.Signals
) -> None:
    # No RELAY_LOG_FORMAT: the default ("auto") writes JSON lines when stderr is not a terminal.
    env = env_for(tmp_path, RELAY_HTTP_PORT="0")
    listening = re.compile(rb'"msg":"listening","http":"(http://127\.0\.0\.1:\d+)"')
    code, output = await serve_and_stop([str(BIN / "relay"), "serve"], env, listening, stop)
    assert code == 0, output
    lines = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    events = [line["msg"] for line in lines]
    assert events.index("listening") < events.index("shutting down") < events.index("stopped")
    requests = [(line["path"], line["status"]) for line in lines if line["msg"] == "request"]
    assert requests == [("/healthz", 200), ("/v1/api/auth/register", 201)]
    assert (tmp_path / "data" / "relay.db").exists()
    assert not (tmp_path / "data" / "relay.db-wal").exists()  # closed cleanly, WAL checkpointed


async def test_plain_hypercorn_runs_the_same_app(tmp_path: Path) -> None:
    env = env_for(tmp_path, RELAY_LOG_FORMAT="json")
    command = [
        str(BIN / "hypercorn"),
        "relay.app:app",
        "--worker-class",
        "trio",
        "--bind",
        "127.0.0.1:0",
    ]
    # The worker's own JSON line: it logs after listen(). hypercorn's parent process prints a
    # plain "Running on" line of its own, possibly before the worker listens (connect refused).
    running = re.compile(rb'"msg":"Running on (http://127\.0\.0\.1:\d+)')
    code, output = await serve_and_stop(command, env, running)
    assert code == 0, output
    assert "services started" in output


async def test_bad_setting_stops_startup_with_one_line(tmp_path: Path) -> None:
    env = env_for(tmp_path, RELAY_HTTP_PORT="eighty")
    result = await trio.run_process(
        [str(BIN / "relay"), "serve"],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "RELAY_HTTP_PORT" in lines[0]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("key", ["http_port", "realtime_port", "relay_port"])
async def test_port_in_use_stops_startup_with_one_line_naming_the_setting(
    tmp_path: Path, key: str
) -> None:
    with trio.socket.socket() as holder:
        await holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = {"RELAY_HTTP_PORT": "0", "RELAY_RELAY_PORT": "0", f"RELAY_{key.upper()}": str(port)}
        ports["RELAY_LOG_FORMAT"] = "text"  # the "listening http=" check below reads text lines
        with trio.fail_after(20):
            result = await trio.run_process(
                [str(BIN / "relay"), "serve"],
                env=env_for(tmp_path, **ports),
                capture_stderr=True,
                check=False,
            )
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    # Only the services' start-up lines before it (the HTTP port is bound before any).
    assert all(" INFO " in line for line in lines[:-1]), lines
    assert lines[-1] == (
        f"relay: start-up failed: cannot listen on 127.0.0.1:{port} "
        f"({key}, RELAY_{key.upper()}): Address already in use"
    )
    assert not any("listening http=" in line for line in lines)
    if key == "http_port":
        assert len(lines) == 1  # nothing else started


async def test_db_migrate_creates_the_database(tmp_path: Path) -> None:
    result = await trio.run_process(
        [str(BIN / "relay"), "db", "migrate"], env=env_for(tmp_path), capture_stdout=True
    )
    assert f"schema version {LATEST_VERSION}".encode() in result.stdout
    assert (tmp_path / "data" / "relay.db").exists()


async def test_db_migrate_refuses_while_the_server_runs(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    env = env_for(tmp_path, RELAY_DATA_DIR=running.settings.data_dir)
    result = await trio.run_process(
        [str(BIN / "relay"), "db", "migrate"],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 1
    assert b"is in use by process" in result.stderr
    assert result.stdout == b""
    await shutdown()
