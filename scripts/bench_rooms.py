#!/usr/bin/env python3
"""Room broadcast fan-out of Relay alone: a thin wrapper over `scripts/bench`'s `rooms`
scenario (`benchkit`), for a quick look without the peer servers.

Starts Relay through benchkit (fresh data directory, free loopback ports), creates a `peer` room
of `--clients` clients in separate load-generator processes (raw sockets, frames masked by
hand), and has `--senders` of them broadcast binary messages of `--payload` bytes (behind the
rooms' 5-byte header), each stamped with its send time (CLOCK_MONOTONIC, shared by all
processes). First the most deliveries/s (each sender keeps `--window` messages in flight), then
each of `--rates` (messages/s per sender, on a fixed schedule): deliveries/s and p50/p99 latency
from send to receipt. Every client gets every message, its sender included (Relay's broadcast
skips the sender, so a sender also sends itself a copy). "missing" counts deliveries that never
came; "closed" the clients whose connection the server closed (4010: slow consumer). For the
comparison with Node `ws` and websockets, run `scripts/bench --scenarios rooms` (method in
docs/benchmarks.md).

    .venv/bin/python scripts/bench_rooms.py --seconds 5
    .venv/bin/python scripts/bench_rooms.py --seconds 1 --clients 6 --senders 2 --rates 50
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from benchkit.core import Config
from benchkit.scenarios import run_relay_alone

ROOT = Path(__file__).resolve().parent.parent
WARMUP_S = 0.5
MAX_CLIENTS = 1000
MAX_SECONDS = 120.0
MAX_RATE = 100_000


def table(phases: list[dict[str, Any]], senders: int) -> str:
    lines = [
        "| clients | senders | phase (offered deliveries/s) | msg/s | deliveries/s | p50 ms "
        "| p99 ms | server CPU | load generator CPU | missing | closed |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        latency = p.get("latency", {})
        p50, p99 = latency.get("p50_ms"), latency.get("p99_ms")
        closed = sum(p["closed_connections"].values())
        # Each message reaches every client once, so deliveries / clients is sent messages.
        lines.append(
            f"| {p['sessions']} | {senders} | {p['phase']} "
            f"| {p['deliveries_per_s'] / p['sessions']:,.0f} | {p['deliveries_per_s']:,.0f} "
            f"| {'n/a' if p50 is None else f'{p50:.2f}'} "
            f"| {'n/a' if p99 is None else f'{p99:.2f}'} "
            f"| {p['server_cpu_pct']:.0f}% | {p['lg_cpu_pct']:.0f}% "
            f"| {p['missing_deliveries']} | {closed} |"
        )
    return "\n".join(lines)


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per phase")
    parser.add_argument("--clients", type=int, default=100, help="clients in the room")
    parser.add_argument("--senders", type=int, default=10, help="clients that broadcast")
    parser.add_argument(
        "--rates",
        type=_rates,
        default=[10.0, 100.0, 500.0],
        help="msg/s per sender for the fixed-rate phases, e.g. 100,500",
    )
    parser.add_argument("--window", type=int, default=4, help="in flight per sender (max)")
    parser.add_argument("--payload", type=int, default=64, help="bytes per message (>= 40)")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="receiver processes (the senders get one more)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    if not 2 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be 2-{MAX_CLIENTS}")
    if not 1 <= args.senders < args.clients:
        parser.error("--senders must be 1 to --clients - 1")
    if not args.rates or not all(0 < r <= MAX_RATE for r in args.rates):
        parser.error(f"--rates must be in (0, {MAX_RATE}]")
    if not 40 <= args.payload <= 16 * 1024 - 5:
        parser.error("--payload must be 40 (the bench stamp) to 16379 bytes (the room limit)")
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be 1-64")
    if not 1 <= args.window <= 1000:
        parser.error("--window must be 1-1000")
    config = Config.for_profile("short")
    config.rooms_clients, config.rooms_senders = args.clients, args.senders
    config.rooms_payload_bytes, config.window, config.recv_procs = (
        args.payload,
        args.window,
        args.workers,
    )
    # The scenario's rates are deliveries/s: every message reaches every client.
    config.rooms_rates = [round(r * args.senders * args.clients) for r in args.rates]
    config.rooms_warm_s, config.rooms_measure_s = WARMUP_S, args.seconds
    bench, log_path = run_relay_alone(ROOT, config, ["rooms"], "bench-rooms")
    print(table(bench.phases, args.senders))
    for note in bench.notes:
        print(f"- {note}")
    print(f"server log: {log_path}", file=sys.stderr)
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
