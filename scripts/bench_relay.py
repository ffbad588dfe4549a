#!/usr/bin/env python3
"""Byte-relay throughput: frames/s and MB/s through a Relay server running in its own process.

Starts `python -m relay serve` with a fresh temporary data dir on free loopback ports, then, for
each number of sender/receiver pairs and each payload size, runs the receivers and the senders
in separate worker processes (so the load generator is not the bottleneck: senders write
pre-built batches of frames, receivers only count bytes). Each case logs every receiver in and
confirms it, starts the senders, waits WARMUP_S, then counts the bytes delivered for
`--seconds`. Prints a Markdown table; "server CPU" is the server process's CPU time over the
measured window (100% = one core; the server is one Trio thread). Everything started here is
stopped before the script exits, and only loopback is used.

    .venv/bin/python scripts/bench_relay.py --seconds 5
    .venv/bin/python scripts/bench_relay.py --seconds 1 --pairs 1 --sizes 100
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from benchkit.procs import Procs, cpu_seconds

from relay.protocol import relayd

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Event

WARMUP_S = 0.3
SETUP_TIMEOUT_S = 30.0
BATCH_BYTES = 256 * 1024  # a sender writes this much per send_all
RECEIVE_BYTES = 1024 * 1024
MAX_PAIRS = 500
MAX_SECONDS = 120.0


@dataclass(frozen=True)
class Case:
    pairs: int
    size: int


@dataclass(frozen=True)
class Result:
    case: Case
    seconds: float
    frames: int
    server_cpu: float | None  # fraction of one core


# -- worker processes ------------------------------------------------------------------------


async def _until(stop: Event) -> None:
    while not stop.is_set():  # noqa: ASYNC110 (a multiprocessing event has no async wait)
        await trio.sleep(0.05)


async def _receive(
    address: tuple[str, int], client_id: bytes, counter: Synchronized[int], ready: Any
) -> None:
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(
            relayd.encode_login(client_id) + relayd.encode_transfer(client_id, client_id)
        )
        confirmation = len(relayd.encode_transfer(client_id, client_id))
        got = 0
        while got < confirmation:  # the login took effect once our own frame comes back
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data:
                raise ConnectionError("the server closed a receiver")
            got += len(data)
        ready()
        while data := await stream.receive_some(RECEIVE_BYTES):
            counter.value += len(data)


async def _send(address: tuple[str, int], client_id: bytes, to: bytes, size: int) -> None:
    frame = relayd.encode_transfer(client_id, to, os.urandom(size))
    batch = frame * max(1, BATCH_BYTES // len(frame))
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(relayd.encode_login(client_id))
        while True:
            await stream.send_all(batch)


def receiver_worker(
    address: tuple[str, int],
    ids: list[bytes],
    counter: Synchronized[int],
    ready: Any,
    stop: Event,
) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for client_id in ids:
                nursery.start_soon(_receive, address, client_id, counter, ready.release)
            await _until(stop)
            nursery.cancel_scope.cancel()

    trio.run(main)


def sender_worker(
    address: tuple[str, int], pairs: list[tuple[bytes, bytes]], size: int, stop: Event
) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for client_id, to in pairs:
                nursery.start_soon(_send, address, client_id, to, size)
            await _until(stop)
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- the server ------------------------------------------------------------------------------


class Server:
    """`python -m relay serve` on free loopback ports, with its own data dir and log file."""

    def __init__(self, workdir: Path) -> None:
        self.log_path = workdir / "server.log"
        env = dict(os.environ)
        env.update(
            RELAY_DATA_DIR=str(workdir / "data"),
            RELAY_HOST="127.0.0.1",
            RELAY_HTTP_PORT="0",
            RELAY_REALTIME_PORT="0",
            RELAY_RELAY_PORT="0",
            RELAY_LOG_FORMAT="json",
            RELAY_LOG_LEVEL="info",
        )
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def relay_address(self) -> tuple[str, int]:
        """Wait for the server's "byte relay listening" log line."""
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            for line in self.log_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("msg") == "byte relay listening":
                    host, _, port = str(entry["tcp"]).split()[0].rpartition(":")
                    return host.strip("[]"), int(port)
            time.sleep(0.05)
        raise TimeoutError("the server did not start its byte relay")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (Linux /proc)."""
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        Procs().stop(self.proc)


# -- one case --------------------------------------------------------------------------------


def run_case(
    ctx: Any, server: Server, address: tuple[str, int], case: Case, seconds: float, workers: int
) -> Result:
    stop = ctx.Event()
    ready = ctx.Semaphore(0)
    counters = [ctx.Value("q", 0, lock=False) for _ in range(workers)]
    tag = f"{case.pairs}-{case.size}".encode()
    receivers = [b"r%d-" % i + tag for i in range(case.pairs)]
    senders = [(b"s%d-" % i + tag, receivers[i]) for i in range(case.pairs)]
    procs: list[Any] = []
    try:
        for w in range(workers):
            receiving = (address, receivers[w::workers], counters[w], ready, stop)
            procs.append(ctx.Process(target=receiver_worker, args=receiving, daemon=True))
        for w in range(workers):
            sending = (address, senders[w::workers], case.size, stop)
            procs.append(ctx.Process(target=sender_worker, args=sending, daemon=True))
        for proc in procs[:workers]:
            proc.start()
        for _ in receivers:
            if not ready.acquire(timeout=SETUP_TIMEOUT_S):
                raise TimeoutError("receivers did not log in")
        for proc in procs[workers:]:
            proc.start()
        time.sleep(WARMUP_S)
        cpu0, bytes0, t0 = server.cpu_seconds(), sum(c.value for c in counters), time.monotonic()
        time.sleep(seconds)
        cpu1, bytes1, t1 = server.cpu_seconds(), sum(c.value for c in counters), time.monotonic()
    finally:
        stop.set()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    frame_len = len(relayd.encode_transfer(senders[0][0], receivers[0], b"x" * case.size))
    cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / (t1 - t0)
    return Result(case, t1 - t0, (bytes1 - bytes0) // frame_len, cpu)


def table(results: list[Result]) -> str:
    lines = [
        "| pairs | payload | frames/s | MB/s (payload) | server CPU |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rate = r.frames / r.seconds
        payload = f"{r.case.size} B" if r.case.size < 1024 else f"{r.case.size // 1024} KiB"
        cpu = "n/a" if r.server_cpu is None else f"{r.server_cpu:.0%}"
        megabytes = rate * r.case.size / 1e6
        lines.append(f"| {r.case.pairs} | {payload} | {rate:,.0f} | {megabytes:,.1f} | {cpu} |")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per case")
    parser.add_argument("--pairs", type=_int_list, default=[1, 10, 50], help="e.g. 1,10,50")
    parser.add_argument("--sizes", type=_int_list, default=[100, 65536], help="payload bytes")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="processes for senders, and as many for receivers",
    )
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    if not all(0 < p <= MAX_PAIRS for p in args.pairs):
        parser.error(f"--pairs must be 1-{MAX_PAIRS}")
    if not all(0 <= s <= relayd.DEFAULT_MAX_PAYLOAD_BYTES for s in args.sizes):
        parser.error("--sizes must be 0-8 MiB")
    ctx = multiprocessing.get_context("spawn")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as workdir:
        server = Server(Path(workdir))
        try:
            address = server.relay_address()
            for pairs in args.pairs:
                for size in args.sizes:
                    workers = min(pairs, args.workers)
                    case = Case(pairs, size)
                    results.append(run_case(ctx, server, address, case, args.seconds, workers))
                    print(f"done: {pairs} pairs, {size} B", file=sys.stderr, flush=True)
        finally:
            server.stop()
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
