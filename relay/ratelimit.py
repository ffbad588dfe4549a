"""Token-bucket rate limits keyed by a string (a username, an IP, a user+route).

Pure and clock-injected: callers pass `now` (trio.current_time() in the server), so tests drive
time directly. Memory is bounded: at most `max_keys` buckets, least recently used evicted first
(an evicted bucket was the idlest, so forgetting it only ever lets a client retry sooner).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

# Added to every retry-after so that a caller who waits exactly that long finds the token back
# despite float rounding (in `now + retry_after_s` and in the refill arithmetic).
_RETRY_SLACK_S = 1e-6


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float  # 0 when allowed


class RateLimiter:
    """`limit` events per `window_s`, refilled continuously, per key."""

    def __init__(self, limit: int, window_s: float, *, max_keys: int = 100_000) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self._rate = limit / window_s  # tokens per second
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, t)

    def hit(self, key: str, now: float, cost: float = 1.0) -> Decision:
        tokens, last = self._buckets.pop(key, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - last) * self._rate)
        if tokens >= cost:
            tokens -= cost
            allowed, retry = True, 0.0
        else:
            allowed, retry = False, (cost - tokens) / self._rate + _RETRY_SLACK_S
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return Decision(allowed, self.limit, int(tokens), retry)

    def __len__(self) -> int:
        return len(self._buckets)


class Bucket:
    """One key's token bucket (`limit` events per `window_s`), for a limit that belongs to one
    object, e.g. a connection: a RateLimiter's table costs ~0.5 KB even with one key."""

    __slots__ = ("_last", "_rate", "_tokens", "limit")

    def __init__(self, limit: int, window_s: float, now: float) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self._rate = limit / window_s
        self._tokens = float(limit)
        self._last = now

    def hit(self, now: float) -> bool:
        """Take one token if there is one; False: over the limit."""
        self._tokens = min(float(self.limit), self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Budget(Protocol):
    """A per-key limit taken asynchronously: in this process (a RateLimiter, relay.chat.context)
    or shared by every process of a cluster through Redis (relay.cluster.limits)."""

    limit: int

    async def take(self, key: str) -> Decision:
        """Count one event of `key`: whether it may go, and when to retry if not."""
