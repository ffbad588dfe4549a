"""scripts/bench_rooms.py (a wrapper over benchkit's `rooms` scenario) runs end to end: its own
server process, a small room, a few seconds. No timing is asserted."""

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
    with trio.fail_after(90):  # a hang guard, not a performance assertion
        result = await trio.run_process(
            [sys.executable, str(SCRIPT), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode()
    assert result.returncode == 0, out[-2000:] + result.stderr.decode()[-4000:]
    lines = out.strip().splitlines()
    assert lines[0].startswith("| clients | senders | phase (offered deliveries/s) |")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    # The most deliveries/s, then 20 msg/s from each of 2 senders to all 5 clients.
    assert [(row[0], row[1], row[2]) for row in rows] == [("5", "2", "max"), ("5", "2", "200/s")]
    for row in rows:
        assert float(row[4].replace(",", "")) > 0  # deliveries/s: broadcasts went through
        assert (row[-2], row[-1]) == ("0", "0")  # nothing missing, nobody cut
    assert rows[1][5] != "n/a"  # a p50 latency was measured at the fixed rate
