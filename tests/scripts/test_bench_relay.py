"""scripts/bench_relay.py runs end to end: its own server process, one pair, about a second."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_relay.py"


async def test_bench_relay_prints_a_table() -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(SCRIPT), "--seconds", "0.5", "--pairs", "1"],
            capture_stdout=True,
            capture_stderr=True,
        )
    lines = result.stdout.decode().strip().splitlines()
    assert lines[0].startswith("| pairs | payload | frames/s |")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [(row[0], row[1]) for row in rows] == [("1", "100 B"), ("1", "64 KiB")]
    for row in rows:
        assert float(row[2].replace(",", "")) > 0  # frames/s: data went through
