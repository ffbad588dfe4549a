"""Shared fixtures: a real Relay server on a free loopback port, and clients for it."""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
import trio

from relay import server
from relay.app import create_app
from relay.client import RelayClient
from relay.config import Settings, load_settings
from tests.realservers import PostgresServer, RedisServer, postgres_server, redis_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from relay.gateway.hub import Hub
    from relay.runtime import Runtime


@dataclass
class RunningServer:
    url: str
    settings: Settings
    runtime: Runtime
    clients: list[RelayClient] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.runtime.realtime_urls[0]

    def client(self) -> RelayClient:
        """A client for this server; closed when the server stops, if not before."""
        client = RelayClient(self.url)
        self.clients.append(client)
        return client


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "http_port": 0,
        "realtime_port": 0,
        "relay_port": None,
        "voice_udp_port": 0,
        "register_per_ip": 1000,
        "login_per_ip": 1000,
        "login_per_username": 1000,
        "message_rate": 100_000,  # tests post fast; tests/gateway/test_send.py sets it low
        "action_rate": 100_000,
        "http_per_ip": 1_000_000,
        "shutdown_grace_s": 2.0,
        # A loaded test machine stalls the loop longer than the 60 ms default now and then;
        # tests that expect every packet must not lose one to that (tests/voice sets it low).
        "voice_max_delay_ms": 5000,
    }
    values.update(overrides)
    return load_settings({}, **values)


async def start_server(
    nursery: trio.Nursery, settings: Settings, *, hub_type: type[Hub] | None = None
) -> tuple[RunningServer, Callable[[], Any]]:
    """Start the real server; the returned coroutine function stops it gracefully and waits.
    `hub_type`: another implementation of the fan-out than the in-process hub."""
    stop = trio.Event()
    done = trio.Event()
    app = create_app(settings)
    runtime: Runtime = app.extensions["relay"]
    runtime.hub_type = hub_type

    async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await server.run(settings, app=app, shutdown_trigger=stop.wait, task_status=task_status)
        finally:
            done.set()

    binds: list[str] = await nursery.start(partial(serve))
    running = RunningServer(binds[0], settings, runtime)

    async def shutdown() -> None:
        for client in running.clients:
            await client.aclose()
        stop.set()
        with trio.fail_after(10):
            await done.wait()

    return running, shutdown


@pytest.fixture
async def relay_server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningServer]:
    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    yield running
    await shutdown()


@pytest.fixture
async def client(relay_server: RunningServer) -> AsyncIterator[RelayClient]:
    async with relay_server.client() as c:
        yield c


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisServer]:
    """A private Redis server for this test worker (tests/realservers.py)."""
    with redis_server() as running:
        yield running


@pytest.fixture
def redis(redis_process: RedisServer) -> Iterator[RedisServer]:
    """The worker's Redis, emptied: what an earlier test's nodes left (their connection counts,
    leases and presence, which expire only later) must not count in this one.

    Afterwards, garbage is collected with unclosed-socket warnings ignored: coredis leaves the
    socket (and anyio streams) of a command cancelled mid-way (a node stopped while it talked to
    Redis, or a connection Redis killed) to the garbage collector, whose warning would
    otherwise fail whichever later test it lands in."""
    redis_process.flush()
    yield redis_process
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed <socket", ResourceWarning)
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)  # anyio's
        gc.collect()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for this test worker; `postgres.new_database()` gives each
    test its own database."""
    with postgres_server() as running:
        yield running
