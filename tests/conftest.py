"""Shared fixtures: a real Relay server on a free loopback port, and clients for it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

from relay import server
from relay.client import RelayClient
from relay.config import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


@dataclass
class RunningServer:
    url: str
    settings: Settings

    def client(self) -> RelayClient:
        return RelayClient(self.url)


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "http_port": 0,
        "realtime_port": 0,
        "relay_port": None,
        "register_per_ip": 1000,
        "login_per_ip": 1000,
        "login_per_username": 1000,
        "shutdown_grace_s": 2.0,
    }
    values.update(overrides)
    return load_settings({}, **values)


async def start_server(
    nursery: trio.Nursery, settings: Settings
) -> tuple[RunningServer, Callable[[], Any]]:
    """Start the real server; the returned coroutine function stops it gracefully and waits."""
    stop = trio.Event()
    done = trio.Event()

    async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await server.run(settings, shutdown_trigger=stop.wait, task_status=task_status)
        finally:
            done.set()

    binds: list[str] = await nursery.start(partial(serve))

    async def shutdown() -> None:
        stop.set()
        with trio.fail_after(10):
            await done.wait()

    return RunningServer(binds[0], settings), shutdown


@pytest.fixture
async def relay_server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningServer]:
    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    yield running
    await shutdown()


@pytest.fixture
async def client(relay_server: RunningServer) -> AsyncIterator[RelayClient]:
    async with relay_server.client() as c:
        yield c
