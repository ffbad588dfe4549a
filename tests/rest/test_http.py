"""Helpers of the REST layer without a server: timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from relay.rest.http import iso

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(0, 253_402_300_799_999))  # up to the last millisecond of year 9999
def test_iso_is_the_exact_utc_millisecond(ms: int) -> None:
    expected = (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
    assert iso(ms) == expected.removesuffix("+00:00") + "Z"


def test_iso_examples() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1_795_000_000_123) == "2026-11-18T11:06:40.123Z"
    assert iso(253_402_300_799_999) == "9999-12-31T23:59:59.999Z"  # float division gave .998
