"""scripts/bench_rooms.py runs end to end: its own server process, a small room, about a second."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_rooms.py"


async def test_bench_rooms_prints_a_table() -> None:
    args = [
        "--seconds",
        "0.5",
        "--clients",
        "5",
        "--senders",
        "2",
        "--rates",
        "20",
        "--workers",
        "1",
    ]
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(SCRIPT), *args], capture_stdout=True, capture_stderr=True
        )
    lines = result.stdout.decode().strip().splitlines()
    assert lines[0].startswith("| clients | senders | offered msg/s | sent msg/s | deliveries/s |")
    (row,) = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert (row[0], row[1], row[2]) == ("5", "2", "40")
    assert float(row[4].replace(",", "")) > 0  # deliveries/s: broadcasts went through
    assert row[6] != "n/a"  # a p50 latency was measured
    assert row[-1] == "0"  # nobody was cut as a slow consumer
