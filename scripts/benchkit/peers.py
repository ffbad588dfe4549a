"""Peer servers: the smallest honest broadcast server on each stack, installed by the bench
into its scratch directory (never project dependencies) and started on a free loopback port.

Each peer does the same work as Relay's fan-out: clients connect, senders send, the server
sends every message to every client of the one room (the sender included), without
compression (Relay negotiates none).

- `node_ws`: Node.js with the `ws` package (npm), the usual broadcast loop.
- `websockets`: Python `websockets` (asyncio implementation, `broadcast()`) on uvloop, in its
  own virtualenv.
- `asyncio_relay`: the byte-relay peer (scenario `relay`), installed and run with the
  `websockets` peer's virtualenv: the relayd frame format on asyncio + uvloop (login, transfers
  forwarded to the receiver's connection, the last login wins, frames to offline ids dropped,
  malformed input closes the connection). Each read is parsed in one pass and the frames it
  holds for one receiver go out in one write; a receiver with over 1 MiB unsent pauses its
  senders' reading (Relay's backpressure).

Resource handling: a peer's process is registered with `Procs` and stopped by its id.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from benchkit.procs import Procs

NODE_SERVER = """\
// Relay bench peer: one room; every message goes to every client (ws, no compression).
const { WebSocketServer } = require("ws");
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === 1) client.send(data, { binary: isBinary });
    }
  });
});
wss.on("listening", () => console.log(`listening ${wss.address().port}`));
"""

PYTHON_SERVER = """\
# Relay bench peer: one room; every message goes to every client (websockets on uvloop).
import asyncio

import uvloop
from websockets.asyncio.server import broadcast, serve

clients = set()


async def handler(ws):
    clients.add(ws)
    try:
        async for message in ws:
            broadcast(clients, message)
    finally:
        clients.discard(ws)


async def main():
    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        print("listening", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()


uvloop.run(main())
"""

RELAY_SERVER = """\
# Relay bench peer: the relayd byte relay on asyncio + uvloop (one Protocol per connection).
import asyncio

import uvloop

HEAD, HIGH, MAX_PAYLOAD = b"RELY\\x01", 1024 * 1024, 8 * 1024 * 1024
clients = {}


class Conn(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.id, self.rest, self.paused, self.waiting = transport, None, b"", False, set()
        transport.set_write_buffer_limits(high=HIGH)

    def data_received(self, data):
        buf = self.rest + data if self.rest else data
        mv, n, pos, out = memoryview(buf), len(buf), 0, {}
        while n - pos >= 7:
            cmd, a = buf[pos + 5], buf[pos + 6]
            if buf[pos : pos + 5] != HEAD or not a or cmd not in (1, 9):
                return self.t.close()
            i = pos + 7 + a
            if cmd == 1:
                if n < i:
                    break
                if not self.login(buf[pos + 7 : i]):
                    return self.t.close()
                pos = i
                continue
            if n < i + 1:
                break
            j = i + 1 + buf[i]
            if n < j + 4:
                break
            size = int.from_bytes(buf[j : j + 4], "big")
            if size > MAX_PAYLOAD or buf[pos + 7 : i] != self.id:
                return self.t.close()
            if n < j + 4 + size:
                break
            if j > i + 1:  # to_len 0: a heartbeat
                out.setdefault(buf[i + 1 : j], []).append(mv[pos : j + 4 + size])
            pos = j + 4 + size
        self.rest = buf[pos:]
        for to, frames in out.items():
            peer = clients.get(to)
            if peer is not None:  # offline: dropped
                peer.t.write(b"".join(frames))
                if peer.paused:
                    peer.waiting.add(self)
                    self.t.pause_reading()

    def login(self, client_id):
        if self.id is not None:
            return self.id == client_id
        old, self.id, clients[client_id] = clients.get(client_id), client_id, self
        if old is not None:  # the last login wins
            old.t.close()
        return True

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        for sender in self.waiting:
            sender.t.resume_reading()
        self.waiting.clear()

    def connection_lost(self, exc):
        if self.id is not None and clients.get(self.id) is self:
            del clients[self.id]
        self.resume_writing()


async def main():
    server = await asyncio.get_running_loop().create_server(Conn, "127.0.0.1", 0)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


uvloop.run(main())
"""

PEERS = ("node_ws", "websockets")
LABELS = {
    "relay": "Relay",
    "node_ws": "Node ws",
    "websockets": "websockets+uvloop",
    "asyncio_relay": "asyncio+uvloop relay",
    "asyncio_voice": "asyncio+uvloop forwarder",  # UDP and WebSocket
    "relay_tcp": "Relay TCP",
    "relay_ws": "Relay /v1/relay",
}


class PeerUnavailable(Exception):
    """The peer could not be installed here (no node/npm, no registry access, ...)."""


@dataclass
class PeerServer:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    procs: Procs

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int | None:
        return self.procs.stop(self.proc)


def install(name: str, scratch: Path) -> dict[str, str]:
    """Install (or find already installed) a peer; returns the versions it runs."""
    if name == "node_ws":
        return _install_node(scratch / "node")
    if name == "websockets":
        return _install_python(scratch / "pyws")
    raise ValueError(name)


def _run(args: list[str], what: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerUnavailable(f"{what}: {e}") from None
    if done.returncode != 0:
        raise PeerUnavailable(f"{what} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def _install_node(home: Path) -> dict[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("node and npm are needed for the Node ws peer")
    home.mkdir(parents=True, exist_ok=True)
    marker = home / "node_modules" / "ws" / "package.json"
    if not marker.exists():
        (home / "package.json").write_text('{"private": true}\n')
        _run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(home), "ws@8"],
            "npm install ws",
        )
    (home / "server.js").write_text(NODE_SERVER)
    return {
        "node": _run([node, "--version"], "node --version"),
        "ws": json.loads(marker.read_text())["version"],
    }


def _install_python(home: Path) -> dict[str, str]:
    python = home / "venv" / "bin" / "python"
    probe = "import websockets, uvloop; print(websockets.__version__, uvloop.__version__)"
    try:
        versions = _run([str(python), "-c", probe], "probe") if python.exists() else ""
    except PeerUnavailable:
        versions = ""
    if not versions:
        home.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", "--clear", str(home / "venv")], "python -m venv")
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*pip, "websockets>=13", "uvloop>=0.19"], "pip install websockets uvloop")
        versions = _run([str(python), "-c", probe], "probe")
    (home / "server.py").write_text(PYTHON_SERVER)
    (home / "relay_server.py").write_text(RELAY_SERVER)
    websockets_version, uvloop_version = versions.split()
    python_version = _run([str(python), "-c", "import sys; print(sys.version.split()[0])"], "py")
    return {"python": python_version, "websockets": websockets_version, "uvloop": uvloop_version}


def start(procs: Procs, name: str, scratch: Path, log_path: Path) -> PeerServer:
    """Start an installed peer on a free port (it prints `listening PORT`).
    `asyncio_relay` runs in the `websockets` peer's virtualenv (install that one first)."""
    if name == "node_ws":
        args = [shutil.which("node") or "node", str(scratch / "node" / "server.js")]
    else:
        script = "relay_server.py" if name == "asyncio_relay" else "server.py"
        args = [str(scratch / "pyws" / "venv" / "bin" / "python"), str(scratch / "pyws" / script)]
    with open(log_path, "ab") as log:
        proc = procs.popen(args, stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    line = b""
    while not line.endswith(b"\n"):
        if time.monotonic() > deadline or proc.poll() is not None:
            procs.stop(proc)
            raise RuntimeError(f"peer {name} did not start; see {log_path}")
        if sel.select(0.2):
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                continue
            line += chunk
    sel.close()
    words = line.split()
    if len(words) != 2 or words[0] != b"listening":
        procs.stop(proc)
        raise RuntimeError(f"peer {name} said {line!r}")
    return PeerServer(name, proc, int(words[1]), procs)
