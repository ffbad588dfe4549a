"""Relay under test: a `relay serve` subprocess on a fresh database, and the accounts, server
and channel a scenario needs, made through the real REST API (Ed25519 key login, so no argon2).

Resource handling: `start_relay` registers the process with `Procs` (stopped by id in the
harness's `finally`); `RelayServer.stop` sends SIGTERM, waits for the graceful exit, and removes
the data directory.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from nacl.signing import SigningKey

from benchkit.procs import free_port
from relay.client import KEY_LOGIN_PREFIX, ApiError, RelayClient

if TYPE_CHECKING:
    import subprocess

    from benchkit.procs import Procs

HOST = "127.0.0.1"
# The bench is one client IP making thousands of accounts and connections: lift the limits
# that would throttle it. Heartbeats are an hour apart, so idle sessions need not send any.
BENCH_ENV = {
    "RELAY_LOG_LEVEL": "warning",
    "RELAY_REGISTER_PER_IP": "100000000",
    "RELAY_LOGIN_PER_IP": "100000000",
    "RELAY_LOGIN_PER_USERNAME": "100000000",
    "RELAY_HTTP_PER_IP": "100000000",
    "RELAY_GATEWAY_RATE": "100000000",
    "RELAY_MESSAGE_RATE": "100000000",  # messages per user (REST posts and gateway op 12)
    "RELAY_MAX_SESSIONS_PER_USER": "100000000",  # --sessions-per-user may ask for many
    "RELAY_MAX_CONNECTIONS_PER_IP": "100000000",  # every bench client is 127.0.0.1
    "RELAY_HEARTBEAT_INTERVAL_S": "3600",
    "RELAY_ACCESS_TOKEN_TTL_S": "7200",
    "RELAY_RELAY_PORT": "off",
    "RELAY_VOICE_UDP_PORT": "0",  # the voice scenario sets its own
}
SETUP_CONCURRENCY = 16


@dataclass
class Account:
    name: str
    user_id: str
    token: str


class RelayServer:
    def __init__(
        self, procs: Procs, proc: subprocess.Popen[bytes], data_dir: Path, ports: tuple[int, int]
    ) -> None:
        self.procs = procs
        self.proc = proc
        self.data_dir = data_dir
        self.http_port, self.ws_port = ports
        self.url = f"http://{HOST}:{self.http_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int | None:
        code = self.procs.stop(self.proc, timeout_s=15.0)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return code

    def store_counters(self) -> dict[str, int]:
        """Committed writes and write transactions so far (from /readyz): group commit's
        batch size is their ratio."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as response:
                data = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        return {k: data[k] for k in ("writes_committed", "write_batches") if k in data}

    def byte_relay_counters(self) -> dict[str, int]:
        """The byte relay's counters so far (from /readyz; empty if it did not answer)."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as response:
                data = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        counters = data.get("byte_relay") or {}
        return {k: v for k, v in counters.items() if isinstance(v, int)}

    # -- accounts ------------------------------------------------------------------------------

    def accounts(self, prefix: str, count: int) -> list[Account]:
        return trio.run(make_accounts, self.url, prefix, count)

    def community(self, owner: Account, members: list[Account]) -> tuple[str, str]:
        """A server owned by `owner` that `members` joined: (server id, text channel id)."""
        return trio.run(make_community, self.url, owner, members)

    def post(self, author: Account, channel: str, content: str) -> None:
        """One message (the cluster scenario: the node it is sent to becomes the owner)."""
        trio.run(make_post, self.url, author, channel, content)

    def room(self, owner: Account, max_clients: int) -> tuple[str, str]:
        """A new `peer` app room created by `owner`: (room id, secret)."""
        return trio.run(make_room, self.url, owner, max_clients)


def start_relay(
    procs: Procs, scratch: Path, log_path: Path, src: Path | None = None, **settings: str
) -> RelayServer:
    """`relay serve` on free loopback ports with a fresh data directory; waits until it serves
    HTTP and accepts on the realtime port. Extra RELAY_* settings come as keyword arguments
    (e.g. relay_port="33334" for a scenario that needs the byte relay). `src`: run the Relay
    source tree there (e.g. a `git worktree` of another commit) instead of this checkout.
    A port taken between choosing and binding it means another try with new ports."""
    for attempt in range(3):
        start = log_path.stat().st_size if log_path.exists() else 0
        try:
            return _start_relay(procs, scratch, log_path, src, **settings)
        except RuntimeError:
            with open(log_path, "rb") as log:
                log.seek(start)
                port_taken = b"Address already in use" in log.read()
            if not port_taken or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_relay(
    procs: Procs, scratch: Path, log_path: Path, src: Path | None, **settings: str
) -> RelayServer:
    scratch.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="relay-data-", dir=scratch))
    http_port, ws_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(BENCH_ENV)
    env.update(
        {
            "RELAY_DATA_DIR": str(data_dir),
            "RELAY_HOST": HOST,
            "RELAY_HTTP_PORT": str(http_port),
            "RELAY_REALTIME_PORT": str(ws_port),
        }
    )
    env.update({f"RELAY_{k.upper()}": v for k, v in settings.items()})
    if src is not None:
        env["PYTHONPATH"] = str(src.resolve())
    python = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
    with open(log_path, "ab") as log:
        # cwd is the data directory: `-m` puts the cwd first on sys.path, before PYTHONPATH.
        proc = procs.popen(
            [str(python), "-m", "relay", "serve"], env=env, stdout=log, stderr=log, cwd=data_dir
        )
    server = RelayServer(procs, proc, data_dir, (http_port, ws_port))
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"relay serve exited with {proc.returncode}; see {log_path}")
        if _healthy(server.url) and _accepts(ws_port):
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"relay serve did not start within 30 s; see {log_path}")
        time.sleep(0.1)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


async def _call(client: RelayClient, method: str, path: str, token: str, body: Any = None) -> Any:
    response = await client.request(method, path, json=body, token=token)
    if not response.is_success:
        raise ApiError(response.status_code, "setup_failed", response.text[:200], {})
    return response.json() if response.content else None


async def make_accounts(url: str, prefix: str, count: int) -> list[Account]:
    """Register `count` users with Ed25519 keys and log each in once."""
    accounts: list[Account | None] = [None] * count
    limiter = trio.CapacityLimiter(SETUP_CONCURRENCY)

    async def one(client: RelayClient, i: int) -> None:
        async with limiter:
            name = f"{prefix}{i}"
            key = SigningKey.generate()
            public = base64.b64encode(bytes(key.verify_key)).decode()
            user = await _call(
                client,
                "POST",
                "/v1/api/auth/register",
                "",
                {"username": name, "public_key": public},
            )
            challenge = await _call(
                client, "POST", "/v1/api/auth/challenge", "", {"username": name}
            )
            raw = base64.b64decode(challenge["challenge"])
            signature = key.sign(KEY_LOGIN_PREFIX + raw).signature
            body = {
                "username": name,
                "challenge": challenge["challenge"],
                "signature": base64.b64encode(signature).decode(),
            }
            login = await _call(client, "POST", "/v1/api/auth/login/key", "", body)
            accounts[i] = Account(name, user["id"], login["access_token"])

    async with RelayClient(url, timeout_s=60) as client, trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, client, i)
    return [a for a in accounts if a is not None]


async def make_community(url: str, owner: Account, members: list[Account]) -> tuple[str, str]:
    async with RelayClient(url, timeout_s=60) as client:
        server = await _call(client, "POST", "/v1/api/servers", owner.token, {"name": "bench"})
        channel = next(c["id"] for c in server["channels"] if c["type"] == "text")
        invite = await _call(
            client, "POST", f"/v1/api/servers/{server['id']}/invites", owner.token, {"max_age": 0}
        )
        limiter = trio.CapacityLimiter(SETUP_CONCURRENCY)

        async def join(member: Account) -> None:
            async with limiter:
                await _call(client, "POST", f"/v1/api/invites/{invite['code']}", member.token)

        async with trio.open_nursery() as nursery:
            for member in members:
                nursery.start_soon(join, member)
    return str(server["id"]), str(channel)


async def make_post(url: str, author: Account, channel: str, content: str) -> None:
    async with RelayClient(url, timeout_s=60) as client:
        path = f"/v1/api/channels/{channel}/messages"
        await _call(client, "POST", path, author.token, {"content": content})


async def make_room(url: str, owner: Account, max_clients: int) -> tuple[str, str]:
    async with RelayClient(url, timeout_s=60) as client:
        body = {"max_clients": max_clients, "protocol": "peer"}
        room = await _call(client, "POST", "/v1/api/rooms", owner.token, body)
    return str(room["id"]), str(room["secret"])
