"""Token-bucket rate limiter: bursts, continuous refill, accurate retry-after, per-key buckets and
the LRU bound on how many keys it remembers. Time is injected, so nothing here sleeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.ratelimit import Bucket, Decision, RateLimiter


def assert_refused(decision: Decision, limit: int, remaining: int, retry_after_s: float) -> None:
    """Retry-after is exact but for a microsecond of slack (so waiting it out is always enough)."""
    assert (decision.allowed, decision.limit, decision.remaining) == (False, limit, remaining)
    assert retry_after_s <= decision.retry_after_s <= retry_after_s + 2e-6


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -5.0)])
def test_constructor_validates(limit: int, window: float) -> None:
    with pytest.raises(ValueError, match="limit must be"):
        RateLimiter(limit, window)


def test_burst_then_refuse() -> None:
    limiter = RateLimiter(5, 10.0)  # one token every 2 s
    decisions = [limiter.hit("k", 100.0) for _ in range(5)]
    assert decisions == [Decision(True, 5, remaining, 0.0) for remaining in (4, 3, 2, 1, 0)]
    refused = limiter.hit("k", 100.0)
    assert_refused(refused, 5, 0, 2.0)
    # Refused attempts cost nothing: the wait does not grow while a client keeps knocking.
    assert limiter.hit("k", 100.0) == refused


def test_refill_over_time() -> None:
    limiter = RateLimiter(5, 10.0)
    for _ in range(5):
        assert limiter.hit("k", 0.0).allowed
    refused = limiter.hit("k", 1.0)  # half a token back
    assert not refused.allowed
    assert_refused(refused, 5, 0, 1.0)
    assert not limiter.hit("k", 1.999).allowed
    assert limiter.hit("k", 2.0) == Decision(True, 5, 0, 0.0)
    # Six seconds later three tokens are back.
    assert [limiter.hit("k", 8.0).allowed for _ in range(4)] == [True, True, True, False]


def test_bucket_is_capped_at_limit() -> None:
    limiter = RateLimiter(3, 1.0)
    assert limiter.hit("k", 0.0).remaining == 2
    decisions = [limiter.hit("k", 1_000_000.0) for _ in range(4)]  # a long idle stretch
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]


def test_full_again_after_a_whole_window() -> None:
    limiter = RateLimiter(3, 10.0)  # rate 0.3/s is not exact in binary
    for _ in range(3):
        assert limiter.hit("k", 0.0).allowed
    decisions = [limiter.hit("k", 10.0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]


def test_retry_after_is_accurate() -> None:
    limiter = RateLimiter(3, 10.0)
    for _ in range(3):
        limiter.hit("k", 50.0)
    refused = limiter.hit("k", 50.0)
    assert not refused.allowed
    assert_refused(refused, 3, 0, 10.0 / 3)
    assert not limiter.hit("k", 50.0 + refused.retry_after_s * 0.999).allowed
    assert limiter.hit("k", 50.0 + refused.retry_after_s).allowed


@given(
    limit=st.integers(min_value=1, max_value=1000),
    window=st.floats(min_value=0.01, max_value=86_400.0),
    start=st.floats(min_value=0.0, max_value=1e6),
)
def test_waiting_exactly_retry_after_is_enough(limit: int, window: float, start: float) -> None:
    limiter = RateLimiter(limit, window)
    for _ in range(limit):
        assert limiter.hit("k", start).allowed
    refused = limiter.hit("k", start)
    assert not refused.allowed
    assert refused.remaining == 0
    assert_refused(refused, limit, 0, window / limit)
    assert limiter.hit("k", start + refused.retry_after_s).allowed


def test_cost_above_one() -> None:
    limiter = RateLimiter(10, 10.0)
    assert limiter.hit("k", 0.0, cost=4) == Decision(True, 10, 6, 0.0)
    assert limiter.hit("k", 0.0, cost=4) == Decision(True, 10, 2, 0.0)
    assert_refused(limiter.hit("k", 0.0, cost=4), 10, 2, 2.0)
    never = limiter.hit("other", 0.0, cost=11)  # more than the bucket holds
    assert not never.allowed
    assert_refused(never, 10, 10, 1.0)


def test_keys_are_independent() -> None:
    limiter = RateLimiter(2, 60.0)
    assert [limiter.hit("alice", 0.0).allowed for _ in range(3)] == [True, True, False]
    assert limiter.hit("bob", 0.0) == Decision(True, 2, 1, 0.0)
    assert not limiter.hit("alice", 0.0).allowed
    assert len(limiter) == 2


def test_max_keys_evicts_least_recently_used() -> None:
    limiter = RateLimiter(1, 60.0, max_keys=2)
    assert limiter.hit("a", 0.0).allowed
    assert limiter.hit("b", 0.0).allowed
    assert not limiter.hit("a", 1.0).allowed  # touching a makes b the least recently used
    assert limiter.hit("c", 2.0).allowed  # evicts b
    assert len(limiter) == 2
    assert not limiter.hit("a", 3.0).allowed  # a kept its (empty) bucket
    assert limiter.hit("b", 3.0).allowed  # b was forgotten: a fresh, full bucket (evicts c)
    assert len(limiter) == 2
    assert limiter.hit("c", 4.0).allowed  # c was forgotten too


@given(
    limit=st.integers(min_value=1, max_value=20),
    window=st.floats(min_value=0.1, max_value=1000.0),
    max_keys=st.integers(min_value=1, max_value=5),
    hits=st.lists(
        st.tuples(
            st.sampled_from("abcdefg"),
            st.floats(min_value=0.0, max_value=50.0),  # time since the previous hit
            st.sampled_from([1.0, 1.0, 1.0, 0.5, 2.0, 3.5]),  # cost
        ),
        max_size=200,
    ),
)
def test_decisions_stay_in_bounds(
    limit: int, window: float, max_keys: int, hits: list[tuple[str, float, float]]
) -> None:
    limiter = RateLimiter(limit, window, max_keys=max_keys)
    now = 0.0
    for key, dt, cost in hits:
        now += dt
        decision = limiter.hit(key, now, cost)
        assert decision.limit == limit
        assert 0 <= decision.remaining <= limit
        if decision.allowed:
            assert decision.retry_after_s == 0.0
        else:
            assert 0.0 < decision.retry_after_s <= cost * window / limit * (1 + 1e-9) + 1e-6
        assert len(limiter) <= max_keys


@given(
    limit=st.integers(min_value=1, max_value=20),
    window=st.floats(min_value=0.1, max_value=100.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=300),
)
def test_never_more_than_burst_plus_refill(limit: int, window: float, gaps: list[float]) -> None:
    """The token-bucket guarantee: over any stretch of T seconds a key gets at most
    limit + T * limit / window hits allowed."""
    limiter = RateLimiter(limit, window)
    now, allowed_at = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.hit("k", now).allowed:
            allowed_at.append(now)
    rate = limit / window
    for i, first in enumerate(allowed_at):
        for j in range(i, len(allowed_at)):
            count = j - i + 1
            assert count <= limit + (allowed_at[j] - first) * rate + 1e-6


def test_bucket_allows_its_limit_then_refills_at_the_rate() -> None:
    bucket = Bucket(3, 60.0, now=0.0)
    assert [bucket.hit(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.hit(19.9)  # one token takes 20 s
    assert bucket.hit(20.1)
    assert not bucket.hit(20.1)
    assert [bucket.hit(1000.0) for _ in range(4)] == [True, True, True, False]  # capped at 3
