"""scripts/bench_relay.py (a wrapper over benchkit's byte-relay scenarios) runs end to end: its
own server processes, one pair over TCP and over /v1/relay, a few seconds. No timing is
asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_relay.py"


async def test_bench_relay_prints_a_table() -> None:
    args = ["--seconds", "0.5", "--pairs", "1", "--sizes", "100", "--ws"]
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
    assert lines[0].startswith("| transport | pairs | payload | frames/s |")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("TCP", "1", "100 B"),
        ("WebSocket", "1", "100 B"),
    ]
    for row in rows:
        assert float(row[3].replace(",", "")) > 0  # frames/s: data went through
        assert row[-1] == "0"  # no frame lost
