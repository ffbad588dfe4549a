"""Rate limits shared by every process of a cluster: a fixed window per key in Redis.

One atomic script per event: INCR the key, set its expiry to the window on the first event,
and answer the count and the time left (so a user connected to several nodes spends one budget,
not one per node). A fixed window lets a client spend up to twice the limit across a window's
edge, unlike the in-process token bucket (relay.ratelimit), which stays the default without a
broker. If Redis cannot answer, the process's own limiter decides, so a broker outage never
refuses everything, nor lets everything through.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import coredis
import trio

from relay.ratelimit import Decision, RateLimiter

if TYPE_CHECKING:
    from coredis.commands.script import Script

log = logging.getLogger("relay.cluster")

_TAKE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


class RedisBudget:
    """`limit` events per `window_s` per key, counted in Redis under relay:rl:<name>:<key>."""

    def __init__(self, redis: coredis.Redis[bytes], name: str, limit: int, window_s: float) -> None:
        self.limit = limit
        self.name = name
        self._window_ms = max(1, math.ceil(window_s * 1000))
        self._script: Script[bytes] = redis.register_script(_TAKE)
        self._fallback = RateLimiter(limit, window_s)
        self.fallbacks = 0  # decisions taken locally because Redis did not answer

    async def take(self, key: str) -> Decision:
        try:
            answer: object = await self._script(
                keys=[f"relay:rl:{self.name}:{key}"], args=[self._window_ms]
            )
        except (coredis.exceptions.RedisError, OSError) as e:
            self.fallbacks += 1
            if self.fallbacks % 1000 == 1:
                log.warning("shared rate limit unavailable", extra={"error": repr(e)})
            return self._fallback.hit(key, trio.current_time())
        assert isinstance(answer, list)
        count, ttl_ms = int(answer[0]), int(answer[1])
        if count <= self.limit:
            return Decision(True, self.limit, self.limit - count, 0.0)
        return Decision(False, self.limit, 0, max(ttl_ms, 1) / 1000)
