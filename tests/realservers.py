"""Private Redis and PostgreSQL servers for the cluster-mode tests, started from Debian's packages.

Each pytest worker starts its own servers (session-scoped fixtures in tests/conftest.py) on
free loopback ports, in a temporary directory removed afterwards. Without the binaries the
tests that need them are skipped, unless RELAY_REQUIRE_CLUSTER_SERVERS=1 (set by .ci/run, which
installs the packages): there, a missing server fails the run instead of hiding it.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

REQUIRED = os.environ.get("RELAY_REQUIRE_CLUSTER_SERVERS") == "1"
START_TIMEOUT_S = 30.0


def unavailable(what: str) -> None:
    """Skip (or, where the servers are required, fail) a test that needs `what`."""
    message = f"{what} is not installed (apt-get install postgresql redis-server)"
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_relay(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until a `relay serve` process answers /readyz at `url`; its log if it exits or takes
    over 20 s."""
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text())
        time.sleep(0.05)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} in {START_TIMEOUT_S:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RedisServer:
    url: str  # redis://127.0.0.1:PORT
    port: int

    def flush(self) -> None:
        """FLUSHALL, over a plain socket (RESP)."""
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
            assert s.recv(64).startswith(b"+OK"), "FLUSHALL failed"


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        unavailable("redis-server")
        raise AssertionError  # unreachable: unavailable() raises
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="relay-redis-") as workdir:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for_port(port, process, "redis-server")
            yield RedisServer(f"redis://127.0.0.1:{port}", port)
        finally:
            _stop(process)


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    _names: Iterator[int]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database on this server; its DSN."""
        name = f"relay_{os.getpid()}_{next(self._names)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        binary = _pg_binary("psql") or "psql"
        done = subprocess.run(
            [binary, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database),
             "-c", sql],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if done.returncode:  # with psql's own words, which CalledProcessError leaves out
            raise AssertionError(f"psql {sql!r} exited with {done.returncode}: {done.stderr}")
        return done.stdout


def _wait_for_recovery(server: PostgresServer) -> None:
    """The port opens before PostgreSQL takes connections ("the database system is starting
    up"): wait until a query answers."""
    deadline = time.monotonic() + 60
    while True:
        try:
            server.psql("SELECT 1")
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _pg_binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextlib.contextmanager
def postgres_server(superuser: str = "relay") -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster: trust authentication on loopback, fsync off (tests only).
    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user. `superuser`:
    the bootstrap role (tests/docs runs docs/postgresql.md, which creates `relay` itself)."""
    initdb, postgres = _pg_binary("initdb"), _pg_binary("postgres")
    if initdb is None or postgres is None:
        unavailable("PostgreSQL")
        raise AssertionError  # unreachable: unavailable() raises
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
    workdir = tempfile.mkdtemp(prefix="relay-pg-")
    try:
        if as_user:
            shutil.chown(workdir, "postgres", "postgres")
        data = os.path.join(workdir, "data")
        subprocess.run(
            [*as_user, initdb, "-D", data, "-A", "trust", "-U", superuser, "-E", "UTF8",
             "--no-instructions", "--locale", "C.UTF-8"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        port = free_port()
        process = subprocess.Popen(
            [*as_user, postgres, "-D", data, "-p", str(port), "-k", workdir,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for_port(port, process, "postgres")
            server = PostgresServer("127.0.0.1", port, superuser, itertools.count())
            _wait_for_recovery(server)
            yield server
        finally:
            _stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
