"""scripts/bench_relay.py (a wrapper over benchkit's byte-relay scenarios) runs end to end: its
own server processes, one pair over TCP and over /v1/relay, a few seconds. No timing is
asserted."""

from __future__ import annotations

from pathlib import Path

from tests.scripts.tables import table_of

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_relay.py"


async def test_bench_relay_prints_a_table() -> None:
    args = ["--seconds", "0.5", "--pairs", "1", "--sizes", "100", "--ws"]
    rows = await table_of(SCRIPT, args, "| transport | pairs | payload | frames/s |")
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("TCP", "1", "100 B"),
        ("WebSocket", "1", "100 B"),
    ]
    for row in rows:
        assert float(row[3].replace(",", "")) > 0  # frames/s: data went through
        assert row[-1] == "0"  # no frame lost
