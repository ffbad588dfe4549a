#!/usr/bin/env python3
"""Byte-relay throughput of Relay alone: a thin wrapper over `scripts/bench`'s byte-relay
scenarios (`benchkit`), for a quick look without the peer servers.

Runs scenario `relay` (the relayd TCP listener) and, with `--ws`, `relay_ws` (the same over
`/v1/relay` WebSockets) with one Relay server per scenario, started and stopped by benchkit
(fresh data directory, free loopback ports), and the load generator in separate processes.
Prints one Markdown row per case; "server CPU" is the server process's CPU over the measured
window (100% = one core: the server is one Trio thread), "load generator CPU" that of all the
client processes. For the comparison with the asyncio+uvloop relay, run
`scripts/bench --scenarios relay,relay_ws` (method in docs/benchmarks.md).

    .venv/bin/python scripts/bench_relay.py --seconds 5 --ws
    .venv/bin/python scripts/bench_relay.py --seconds 1 --pairs 1 --sizes 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchkit.core import Config
from benchkit.scenarios import run_relay_alone

from relay.protocol import relayd

ROOT = Path(__file__).resolve().parent.parent
WARMUP_S = 0.3
MAX_PAIRS = 500
MAX_SECONDS = 120.0


def table(phases: list[dict[str, Any]]) -> str:
    lines = [
        "| transport | pairs | payload | frames/s | MB/s (payload) | server CPU "
        "| load generator CPU | missing frames |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        transport = "WebSocket" if p["scenario"] == "relay_ws" else "TCP"
        pairs = str(p["sessions"]).split()[0]
        lines.append(
            f"| {transport} | {pairs} | {p['phase']} | {p['frames_per_s']:,.0f} "
            f"| {p['mb_per_s']:,.1f} | {p['server_cpu_pct']:.0f}% | {p['lg_cpu_pct']:.0f}% "
            f"| {p['missing_deliveries']} |"
        )
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per case")
    parser.add_argument("--pairs", type=_int_list, default=[1, 10, 50], help="e.g. 1,10,50")
    parser.add_argument("--sizes", type=_int_list, default=[100, 65536], help="payload bytes")
    parser.add_argument("--ws", action="store_true", help="also over /v1/relay WebSockets")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    if not args.pairs or not all(0 < p <= MAX_PAIRS for p in args.pairs):
        parser.error(f"--pairs must be 1-{MAX_PAIRS}")
    if not args.sizes or not all(0 <= s <= relayd.DEFAULT_MAX_PAYLOAD_BYTES for s in args.sizes):
        parser.error("--sizes must be 0-8 MiB")
    config = Config.for_profile("short")
    config.relay_pairs, config.relay_sizes = args.pairs, args.sizes
    config.relay_warm_s, config.relay_measure_s = WARMUP_S, args.seconds
    names = ["relay", "relay_ws"] if args.ws else ["relay"]
    bench, log_path = run_relay_alone(ROOT, config, names, "bench-relay")
    print(table(bench.phases))
    for note in bench.notes:
        print(f"- {note}")
    print(f"server log: {log_path}", file=sys.stderr)
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
