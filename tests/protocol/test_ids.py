"""Snowflake IDs: ordering under any clock, timestamp round trip, parsing arbitrary text."""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.ids import EPOCH_MS, MAX_SEQUENCE, MAX_TIMESTAMP, Snowflakes, parse_id, timestamp_ms

if TYPE_CHECKING:
    from collections.abc import Callable

workers = st.integers(min_value=0, max_value=1023)
# Wall-clock readings a few seconds around one instant, in any order, with many repeats.
clock_readings = st.lists(
    st.integers(min_value=EPOCH_MS + 1, max_value=EPOCH_MS + 5_000), min_size=1, max_size=300
)


def replay(readings: list[int]) -> Callable[[], int]:
    """A clock that returns these readings, one per call."""
    return iter(readings).__next__


@given(readings=clock_readings, worker=workers)
def test_ids_strictly_increase_whatever_the_clock_does(readings: list[int], worker: int) -> None:
    ids = Snowflakes(worker, clock_ms=replay(readings))
    made = [ids.next() for _ in readings]

    assert all(a < b for a, b in pairwise(made))
    for reading, snowflake in zip(readings, made, strict=True):
        assert 0 < snowflake < 1 << 63
        assert timestamp_ms(snowflake) >= reading  # never stamped earlier than the clock said
        assert (snowflake >> 12) & 1023 == worker
        assert parse_id(str(snowflake)) == snowflake


@given(ms=st.integers(min_value=EPOCH_MS, max_value=EPOCH_MS + MAX_TIMESTAMP), worker=workers)
def test_timestamp_round_trip(ms: int, worker: int) -> None:
    assert timestamp_ms(Snowflakes(worker, clock_ms=lambda: ms).next()) == ms


def test_a_full_millisecond_borrows_the_next_one() -> None:
    ids = Snowflakes(clock_ms=lambda: EPOCH_MS + 1_000)
    made = [ids.next() for _ in range(3 * (MAX_SEQUENCE + 1) + 1)]

    assert all(a < b for a, b in pairwise(made))
    assert {timestamp_ms(s) for s in made} == {EPOCH_MS + 1_000 + i for i in range(4)}


@pytest.mark.parametrize("ms", [EPOCH_MS - 1, EPOCH_MS + MAX_TIMESTAMP + 1])
def test_a_clock_outside_the_range_is_refused(ms: int) -> None:
    with pytest.raises(OverflowError):
        Snowflakes(clock_ms=lambda: ms).next()


@pytest.mark.parametrize("worker", [-1, 1024])
def test_a_worker_outside_ten_bits_is_refused(worker: int) -> None:
    with pytest.raises(ValueError, match="worker"):
        Snowflakes(worker)


@given(text=st.text())
def test_parse_id_never_raises(text: str) -> None:
    parsed = parse_id(text)
    if parsed is not None:
        assert 0 < parsed < 1 << 63
        assert parsed == int(text)


@given(value=st.integers(min_value=1, max_value=(1 << 63) - 1))
def test_parse_id_reads_every_valid_id(value: int) -> None:
    assert parse_id(str(value)) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "007",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "0x10",
        "1_000",
        "١٢٣",
        "²",
        str(1 << 63),
        "9" * 5000,
    ],
)
def test_parse_id_rejects_what_is_not_an_id(text: str) -> None:
    assert parse_id(text) is None
