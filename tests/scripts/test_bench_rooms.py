"""scripts/bench_rooms.py (a wrapper over benchkit's `rooms` scenario) runs end to end: its own
server process, a small room, a few seconds. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

from tests.scripts.tables import table_of

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
    rows = await table_of(SCRIPT, args, "| clients | senders | phase (offered deliveries/s) |")
    # The most deliveries/s, then 20 msg/s from each of 2 senders to all 5 clients.
    assert [(row[0], row[1], row[2]) for row in rows] == [("5", "2", "max"), ("5", "2", "200/s")]
    for row in rows:
        assert float(row[4].replace(",", "")) > 0  # deliveries/s: broadcasts went through
        assert (row[-2], row[-1]) == ("0", "0")  # nothing missing, nobody cut
    assert rows[1][5] != "n/a"  # a p50 latency was measured at the fixed rate
