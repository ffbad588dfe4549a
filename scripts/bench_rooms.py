#!/usr/bin/env python3
"""Room broadcast fan-out: deliveries/s and latency through one `peer` room of a Relay server.

Starts `python -m relay serve` with a fresh temporary data dir on free loopback ports, creates
an account and, for each offered rate, a fresh `peer` room of `--clients` clients. The clients
run in `--workers` separate processes (lean WebSocket clients: wsproto for the handshake, then
frames written and parsed by hand, so the load generator stays cheap). `--senders` of them
broadcast binary messages of `--payload` bytes at the offered rate each, stamped with their
send time (CLOCK_MONOTONIC, shared by all processes); every other client receives each one.
After WARMUP_S, for `--seconds`: deliveries/s (messages received in that window, by all
clients), p50/p99 latency from send to receipt of those, and "delivered", the share of the
deliveries expected for the messages sent in the window (each to every other client) that
arrived by DRAIN_S after it. Below 100% the room is past what this machine sustains; the
backlog then waits before the room (its inbox, then the senders' TCP connections, which push
back on the senders: "sent msg/s" falls below "offered"). "server CPU" is the server
process's CPU time over the window (100% = one core), "client CPU" the busiest client
process's: near 100% means the load generator, not the server, is the limit. Clients cut as
slow consumers (close 4010) are counted. Everything started here is stopped before the script
exits; only loopback is used; every run is bounded in time and memory.

    .venv/bin/python scripts/bench_rooms.py --seconds 5
    .venv/bin/python scripts/bench_rooms.py --seconds 1 --clients 6 --senders 2 --rates 50
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio
from benchkit.procs import Procs, cpu_seconds
from nacl.signing import SigningKey
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from relay.client import RelayClient
from relay.protocol.rooms import Kind

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.synchronize import Semaphore

WARMUP_S = 0.5
DRAIN_S = 1.0  # after the window: late deliveries still count (their latency shows it)
SETUP_TIMEOUT_S = 60.0
RECEIVE_BYTES = 64 * 1024
SAMPLES_PER_WORKER = 50_000  # latency reservoir per worker process
MAX_CLIENTS = 1000
MAX_SECONDS = 120.0
MAX_RATE = 100_000
CATCH_UP_S = 0.1  # a sender this far behind its schedule skips ahead instead of bursting
STAMP = struct.Struct("!q")  # send time, ns, CLOCK_MONOTONIC
ZERO_MASK = b"\x00\x00\x00\x00"  # a valid (if predictable) mask: the payload goes out as is
SERVER_ENV = {
    "RELAY_HOST": "127.0.0.1",
    "RELAY_HTTP_PORT": "0",
    "RELAY_REALTIME_PORT": "0",
    "RELAY_RELAY_PORT": "off",
    "RELAY_LOG_FORMAT": "json",
    "RELAY_LOG_LEVEL": "info",
    "RELAY_ROOM_MESSAGE_RATE": str(MAX_RATE),
    "RELAY_ROOM_MAX_CLIENTS": str(MAX_CLIENTS),
    "RELAY_ROOM_CAPACITY": str(MAX_CLIENTS * 10),
    "RELAY_ROOMS_PER_USER": "100",
}


@dataclass(frozen=True)
class Job:
    """What one worker process runs: its share of the room's clients."""

    ws_url: str
    room_id: str
    secret: str
    clients: int  # clients in this worker
    senders: int  # of which the first `senders` send
    rate: float  # messages per second per sender
    payload: int
    seconds: float  # the measured window: [go + WARMUP_S, go + WARMUP_S + seconds)


@dataclass
class Tally:
    deliveries: int = 0  # messages received during the window
    arrived: int = 0  # messages sent during the window that arrived (by its end + DRAIN_S)
    sent: int = 0  # messages sent during the window
    cuts: int = 0


# -- the lean WebSocket client -------------------------------------------------------------------


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame with FIN (mask key 0, so no XOR is needed)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + ZERO_MASK + payload


class LeanClient:
    """One room client: handshake with wsproto, then frames parsed by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.offset = 0  # frames before it were returned already

    @classmethod
    async def open(cls, ws_url: str) -> LeanClient:
        parts = urlsplit(ws_url)
        assert parts.hostname is not None
        assert parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=parts.hostname, target="/v1/websocket")))
        while True:
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                raise ConnectionError("the server closed during the handshake")
            ws.receive_data(bytes(data))
            events = list(ws.events())
            if any(isinstance(e, AcceptConnection) for e in events):
                return cls(stream)  # the server sends nothing before our connect
            if events:
                raise ConnectionError(f"handshake refused: {events}")

    async def send(self, opcode: int, payload: bytes) -> None:
        await self.stream.send_all(client_frame(opcode, payload))

    async def receive(self) -> tuple[int, bytes] | None:
        """The next server frame as (opcode, payload); None once the connection has ended."""
        while True:
            frame = self._parse()
            if frame is not None:
                return frame
            data = await self.stream.receive_some(RECEIVE_BYTES)
            if not data:
                return None
            del self.buffer[: self.offset]
            self.offset = 0
            self.buffer += data

    def _parse(self) -> tuple[int, bytes] | None:
        """One complete frame from the buffer (server frames are never masked), or None."""
        buffer, offset = self.buffer, self.offset
        if len(buffer) - offset < 2:
            return None
        first, length, start = buffer[offset], buffer[offset + 1] & 0x7F, offset + 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if len(buffer) < start + size:
                return None
            length = int.from_bytes(buffer[start : start + size], "big")
            start += size
        if len(buffer) < start + length:
            return None
        self.offset = start + length
        return first & 0x0F, bytes(buffer[start : self.offset])


# -- worker processes ----------------------------------------------------------------------------


async def _join(job: Job) -> LeanClient:
    client = await LeanClient.open(job.ws_url)
    connect = {"type": "connect", "room_id": job.room_id, "secret": job.secret}
    await client.send(0x1, json.dumps(connect).encode())
    frame = await client.receive()
    if frame is None:
        raise ConnectionError("closed while joining")
    opcode, payload = frame
    if opcode != 0x1 or json.loads(payload)["type"] != "connected":
        raise ConnectionError(f"join refused: {payload[:200]!r}")
    return client


async def _receive(
    client: LeanClient, window: tuple[int, int], tally: Tally, samples: list[int], seen: list[int]
) -> None:
    start_ns, end_ns = window
    while (frame := await client.receive()) is not None:
        opcode, payload = frame
        if opcode == 0x2:  # kind(1) sender(4) stamp(8) padding
            (sent_ns,) = STAMP.unpack_from(payload, 5)
            now_ns = time.monotonic_ns()
            if start_ns <= sent_ns < end_ns:
                tally.arrived += 1  # of the messages sent in the window
            if start_ns <= now_ns < end_ns:
                tally.deliveries += 1
                seen[0] += 1
                latency = now_ns - sent_ns
                if len(samples) < SAMPLES_PER_WORKER:  # reservoir sampling: bounded memory
                    samples.append(latency)
                else:
                    slot = random.randrange(seen[0])
                    if slot < SAMPLES_PER_WORKER:
                        samples[slot] = latency
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            if code == 4010:  # SLOW_CONSUMER
                tally.cuts += 1
            return


async def _send(
    client: LeanClient, job: Job, window: tuple[int, int], tally: Tally, go_ns: int
) -> None:
    start_ns, end_ns = window
    padding = bytes(max(0, job.payload - STAMP.size))
    head = bytes((Kind.BROADCAST,)) + bytes(4)
    interval_ns = int(1e9 / job.rate)
    next_ns = go_ns + random.randrange(interval_ns)  # spread the senders out
    while next_ns < end_ns:
        now = time.monotonic_ns()
        if next_ns > now:
            await trio.sleep((next_ns - now) / 1e9)
        elif now - next_ns > CATCH_UP_S * 1e9:
            next_ns = now
        stamp = time.monotonic_ns()
        await client.send(0x2, head + STAMP.pack(stamp) + padding)
        if start_ns <= stamp < end_ns:
            tally.sent += 1
        next_ns += interval_ns


async def _cpu_over(window: tuple[int, int], cpu: list[float]) -> None:
    """This process's CPU time at the window's start and end."""
    for at_ns in window:
        await trio.sleep(max(0.0, (at_ns - time.monotonic_ns()) / 1e9))
        cpu.append(time.process_time())


def worker(job: Job, go_slot: Any, ready: Semaphore, results: Connection) -> None:
    """Join `job.clients` clients, wait for the go time, run, and send back the tally."""

    async def main() -> None:
        clients = [await _join(job) for _ in range(job.clients)]
        ready.release()
        while not (go_ns := go_slot.value):  # noqa: ASYNC110 (no async wait on a shared value)
            await trio.sleep(0.01)
        window = (go_ns + int(WARMUP_S * 1e9), go_ns + int((WARMUP_S + job.seconds) * 1e9))
        cpu: list[float] = []
        tally, seen = Tally(), [0]
        samples: list[int] = []
        with trio.move_on_after((window[1] - time.monotonic_ns()) / 1e9 + DRAIN_S):
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(_receive, client, window, tally, samples, seen)
                for client in clients[: job.senders]:
                    nursery.start_soon(_send, client, job, window, tally, go_ns)
                nursery.start_soon(_cpu_over, window, cpu)
        for client in clients:
            await trio.aclose_forcefully(client.stream)
        results.send(
            {
                "cpu": (cpu[1] - cpu[0]) / job.seconds if len(cpu) == 2 else None,
                "deliveries": tally.deliveries,
                "arrived": tally.arrived,
                "sent": tally.sent,
                "cuts": tally.cuts,
                "samples": samples,
            }
        )

    trio.run(main)


# -- the server ----------------------------------------------------------------------------------


class Server:
    """`python -m relay serve` on free loopback ports, with its own data dir and log file."""

    def __init__(self, workdir: Path) -> None:
        self.log_path = workdir / "server.log"
        env = {**os.environ, "RELAY_DATA_DIR": str(workdir / "data"), **SERVER_ENV}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def urls(self) -> tuple[str, str]:
        """(http, ws) once the server logged both listeners."""
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        http = ws = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            for line in self.log_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("msg") == "listening" and "http" in entry:
                    http = str(entry["http"]).split()[0]
                elif entry.get("msg") == "realtime listening":
                    ws = str(entry["ws"]).split()[0]
            if http and ws:
                return http, ws
            time.sleep(0.05)
        raise TimeoutError("the server did not start")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (Linux /proc)."""
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        Procs().stop(self.proc)


async def create_room(http_url: str, clients: int) -> tuple[str, str]:
    """A new account's new peer room: (id, secret)."""
    key = SigningKey.generate()
    name = f"bench{random.randrange(10**9)}"
    async with RelayClient(http_url) as api:
        await api.register(name, public_key=bytes(key.verify_key))
        await api.login_with_key(name, key)
        room = await api.call("POST", "/v1/api/rooms", {"max_clients": clients, "protocol": "peer"})
    return room["id"], room["secret"]


# -- one run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    rate: float
    seconds: float
    sent: int
    deliveries: int
    arrived: int
    expected: int
    p50_ms: float | None
    p99_ms: float | None
    server_cpu: float | None
    client_cpu: float | None  # the busiest client process
    cuts: int


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _percentile(sorted_ns: list[int], q: float) -> float | None:
    if not sorted_ns:
        return None
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6


def run_rate(ctx: Any, server: Server, urls: tuple[str, str], args: Any, rate: float) -> Result:
    """One measured run at `rate` messages/s per sender, in a fresh room."""
    room_id, secret = trio.run(create_room, urls[0], args.clients)
    ready, go_slot = ctx.Semaphore(0), ctx.Value("q", 0, lock=False)
    workers = min(args.workers, args.clients)
    shares = zip(_split(args.clients, workers), _split(args.senders, workers), strict=True)
    procs: list[Any] = []
    pipes: list[Connection] = []
    try:
        for clients, senders in shares:
            job = Job(urls[1], room_id, secret, clients, senders, rate, args.payload, args.seconds)
            receive_end, send_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=worker, args=(job, go_slot, ready, send_end), daemon=True)
            proc.start()
            send_end.close()
            procs.append(proc)
            pipes.append(receive_end)
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        joined = 0
        while joined < len(procs):
            if ready.acquire(timeout=0.2):
                joined += 1
            elif any(proc.exitcode is not None for proc in procs):
                raise RuntimeError("a client process failed while joining (see above)")
            elif time.monotonic() > deadline:
                raise TimeoutError("the clients did not join in time")
        go_ns = time.monotonic_ns() + int(0.1e9)
        go_slot.value = go_ns
        time.sleep(max(0.0, (go_ns - time.monotonic_ns()) / 1e9 + WARMUP_S))
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        time.sleep(args.seconds)
        cpu1, t1 = server.cpu_seconds(), time.monotonic()
        tallies = []
        for pipe in pipes:
            if not pipe.poll(DRAIN_S + SETUP_TIMEOUT_S):
                raise TimeoutError("a worker did not report")
            tallies.append(pipe.recv())
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()  # by its own pid
                proc.join()
        for pipe in pipes:
            pipe.close()
    sent = sum(t["sent"] for t in tallies)
    samples = sorted(s for t in tallies for s in t["samples"])
    cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / (t1 - t0)
    return Result(
        rate=rate,
        seconds=args.seconds,
        sent=sent,
        deliveries=sum(t["deliveries"] for t in tallies),
        arrived=sum(t["arrived"] for t in tallies),
        expected=sent * (args.clients - 1),
        p50_ms=_percentile(samples, 0.50),
        p99_ms=_percentile(samples, 0.99),
        server_cpu=cpu,
        client_cpu=max((t["cpu"] for t in tallies if t["cpu"] is not None), default=None),
        cuts=sum(t["cuts"] for t in tallies),
    )


def table(results: list[Result], args: Any) -> str:
    lines = [
        "| clients | senders | offered msg/s | sent msg/s | deliveries/s | delivered "
        "| p50 ms | p99 ms | server CPU | client CPU | slow cuts |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        offered = r.rate * args.senders
        delivered = f"{r.arrived / r.expected:.1%}" if r.expected else "n/a"
        p50 = "n/a" if r.p50_ms is None else f"{r.p50_ms:.2f}"
        p99 = "n/a" if r.p99_ms is None else f"{r.p99_ms:.2f}"
        cpu = "n/a" if r.server_cpu is None else f"{r.server_cpu:.0%}"
        client_cpu = "n/a" if r.client_cpu is None else f"{r.client_cpu:.0%}"
        lines.append(
            f"| {args.clients} | {args.senders} | {offered:,.0f} | {r.sent / r.seconds:,.0f} "
            f"| {r.deliveries / r.seconds:,.0f} | {delivered} | {p50} | {p99} | {cpu} "
            f"| {client_cpu} | {r.cuts} |"
        )
    return "\n".join(lines)


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per rate")
    parser.add_argument("--clients", type=int, default=100, help="clients in the room")
    parser.add_argument("--senders", type=int, default=10, help="clients that broadcast")
    parser.add_argument(
        "--rates",
        type=_rates,
        default=[100.0, 500.0, 2000.0],
        help="msg/s per sender, e.g. 100,500",
    )
    parser.add_argument("--payload", type=int, default=64, help="bytes per message (>= 8)")
    parser.add_argument(
        "--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="client processes"
    )
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    if not 2 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be 2-{MAX_CLIENTS}")
    if not 1 <= args.senders <= args.clients:
        parser.error("--senders must be 1 to --clients")
    if not args.rates or not all(0 < r <= MAX_RATE for r in args.rates):
        parser.error(f"--rates must be in (0, {MAX_RATE}]")
    if not STAMP.size <= args.payload <= 16 * 1024 - 5:
        parser.error("--payload must be 8 to 16379 bytes (the room's default message limit)")
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be 1-64")
    ctx = multiprocessing.get_context("spawn")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="relay-bench-rooms-") as workdir:
        server = Server(Path(workdir))
        try:
            urls = server.urls()
            for rate in args.rates:
                results.append(run_rate(ctx, server, urls, args, rate))
                print(f"done: {rate:g} msg/s per sender", file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
