"""Connection caps shared by every process of a cluster: gateway connections per client address
(`max_connections_per_ip`) and connected gateway sessions per user (`max_sessions_per_user`), so
that connecting to several nodes does not multiply them.

Each capped key is a Redis hash, `relay:cap:<kind>:<key>`, with one field per process holding
that process's count. Taking a place is one atomic script: it sums the fields of the processes
still alive (each keeps `relay:alive:<instance>` with an expiry, renewed every third of
`worker_lease_s`), deletes the fields of the dead ones, and adds one to its own field only if
the sum is under the cap; giving it back subtracts one. The process's own caps (the realtime
listener's Gate, the hub's per-user count) still apply first. If Redis does not answer, the
process's own caps decide alone (a place taken then is not given back to Redis).

Limits: these cover the gateway only (app rooms and the byte relay keep per-process caps; the
alive marks also serve voice seats, relay.cluster.voice, and rooms per user,
relay.cluster.rooms); a place whose release Redis did not get stays counted until the process
restarts (its instance changes) or the key is unused for a day.
"""

from __future__ import annotations

import logging
import secrets

import coredis
import trio

log = logging.getLogger("relay.cluster")

ALIVE = "relay:alive:"
KEY_TTL_MS = 86_400_000  # an unused cap key goes after a day
RELEASE_S = 1.0  # at most this long to give a place back

_ACQUIRE = """
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local owner = fields[i]
  if owner == ARGV[1] or redis.call('EXISTS', ARGV[3] .. owner) == 1 then
    total = total + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], owner)
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
_RELEASE = """
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n <= 1 then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HINCRBY', KEYS[1], ARGV[1], -1) end
return n
"""  # noqa: E501


class SharedCaps:
    def __init__(self, redis: coredis.Redis[bytes], node_id: str, lease_s: float) -> None:
        self.redis = redis
        # This run of the process: a restarted node with the same node_id starts from zero.
        self.instance = f"{node_id}.{secrets.token_hex(4)}"
        self.lease_ms = int(lease_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self.refused = 0
        self.fallbacks = 0  # decisions left to the process's own caps: Redis did not answer

    async def acquire(self, kind: str, key: str, limit: int) -> bool:
        """Take a place under `limit` for `key` across the cluster; False: it is full."""
        try:
            taken: object = await self._acquire(
                keys=[f"relay:cap:{kind}:{key}"],
                args=[self.instance, limit, ALIVE, KEY_TTL_MS],
            )
        except (coredis.exceptions.RedisError, OSError) as e:
            self.fallbacks += 1
            if self.fallbacks % 1000 == 1:
                log.warning("shared caps unavailable", extra={"error": repr(e)})
            return True
        if not taken:
            self.refused += 1
        return bool(taken)

    async def release(self, kind: str, key: str) -> None:
        """Give a place back (shielded, bounded: it runs as a connection ends)."""
        with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_S):
            try:
                await self._release(keys=[f"relay:cap:{kind}:{key}"], args=[self.instance])
            except (coredis.exceptions.RedisError, OSError) as e:
                log.warning("shared cap place not given back", extra={"error": repr(e)})

    async def announce(self) -> None:
        """Mark this instance alive (before its first place is taken)."""
        await self.redis.set(ALIVE + self.instance, "1", px=self.lease_ms)

    async def keep_alive(self) -> None:
        """Renew the mark every third of the lease until cancelled."""
        while True:
            await trio.sleep(self.lease_ms / 3000)
            try:
                await self.announce()
            except (coredis.exceptions.RedisError, OSError) as e:
                log.warning("shared caps: alive mark not renewed", extra={"error": repr(e)})

    async def leave(self) -> None:
        """At shutdown: this instance's places no longer count anywhere."""
        await self.redis.delete([ALIVE + self.instance])
