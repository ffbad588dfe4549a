"""64-bit time-ordered snowflake IDs: 42 bits of milliseconds since EPOCH_MS, 10 bits of worker,
12 bits of sequence. They sort by creation time, fit SQLite's INTEGER and go out as JSON strings
(JavaScript numbers lose precision above 2**53).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_TIMESTAMP = (1 << 42) - 1


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Snowflakes:
    """Issues strictly increasing IDs, even within one millisecond or if the wall clock steps back.

    Not thread-safe: one generator per writer (the storage writer owns the one that matters).
    """

    def __init__(self, worker: int = 0, clock_ms: Callable[[], int] = _wall_ms) -> None:
        if not 0 <= worker < (1 << WORKER_BITS):
            raise ValueError(f"worker must be in [0, {1 << WORKER_BITS})")
        self._worker = worker
        self._clock_ms = clock_ms
        self._last_ms = -1
        self._sequence = 0

    @property
    def worker(self) -> int:
        """The worker id in every id made here: one per process (relay.cluster.workers)."""
        return self._worker

    def next(self) -> int:
        now = max(self._clock_ms() - EPOCH_MS, self._last_ms)  # never run backwards
        if now == self._last_ms:
            self._sequence += 1
            if self._sequence > MAX_SEQUENCE:  # 4096 IDs in one ms: borrow the next ms
                now += 1
                self._sequence = 0
        else:
            self._sequence = 0
        if not 0 <= now <= MAX_TIMESTAMP:
            raise OverflowError("clock outside the snowflake range")
        self._last_ms = now
        return (
            (now << (WORKER_BITS + SEQUENCE_BITS))
            | (self._worker << SEQUENCE_BITS)
            | (self._sequence)
        )

    def advance_past(self, snowflake: int) -> None:
        """Make every later ID greater than `snowflake`, whichever worker made it (a channel's
        new owner in cluster mode continues above the last owner's ids, whatever the clocks)."""
        ms = snowflake >> (WORKER_BITS + SEQUENCE_BITS)
        if ms >= self._last_ms:
            # The next ID borrows the millisecond after `ms` (see `next`).
            self._last_ms = ms
            self._sequence = MAX_SEQUENCE


def timestamp_ms(snowflake: int) -> int:
    """The Unix time in milliseconds at which an ID was made."""
    return (snowflake >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS


def parse_id(text: str) -> int | None:
    """A snowflake from its decimal string form, or None if it is not one."""
    if not text.isascii() or not text.isdigit() or len(text) > 20 or text.startswith("0"):
        return None  # only the canonical form: "007" and "7" must not name the same thing
    value = int(text)
    return value if 0 < value < (1 << 63) else None
