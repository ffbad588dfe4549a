"""Leases in Redis: one owner per key at a time (a channel, an app room, a voice channel, a
byte-relay id), each acquisition with a fencing token that only grows.

- acquire: `SET lease:<name> "<holder>:<token>" NX PX ttl`, the token from `INCR fence:<name>`
  (one script, so a token is spent only when the key was free);
- renew: compare-and-renew (PEXPIRE only while the value is still ours);
- release: compare-and-delete.

The value holds the token, so a holder that lost its lease and acquired it again is a new
holder: the old renewal loop cannot extend the new lease.

`Leases.hold(lease)` runs the body as the owner: a task renews every ttl/3; when a renewal is
refused, or the local expiry passes without a successful renewal (Redis unreachable, the
process paused), the lease is lost: `on_lost` is called and the body's cancel scope is
cancelled (after `drain_s`). The local expiry is counted from *before* each request was sent,
so it never passes after Redis's own: a holder stops acting as owner no later than Redis lets
another take over, given clocks that run at the same rate. Takeover after a holder dies takes at
most the ttl (docs/ownership.md). Storage refuses the stale token anyway (relay.storage.fencing),
so a holder that is paused past its expiry and wakes before noticing can never commit.

Resource handling: `hold` owns the renewal task (a nursery around the body); leaving it stops
renewing and releases the lease (shielded, bounded), unless it was lost.

Error handling: a Redis error or timeout during renewal counts as a failed attempt; the next
attempt comes at the next ttl/3 tick, and the lease is lost once its local expiry passes.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import coredis

log = logging.getLogger("relay.cluster")

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'NX', 'PX', ARGV[2])
return token
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# renew_many, release_many: KEYS[i] is held with value ARGV[i] (renew: ARGV[1] is the ttl).
_RENEW_MANY = """
local done = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    done[i] = redis.call('PEXPIRE', key, ARGV[1])
  else
    done[i] = 0
  end
end
return done
"""

_RELEASE_MANY = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i] then redis.call('DEL', key) end
end
return 0
"""

RELEASE_TIMEOUT_S = 1.0


class Lease:
    """One acquisition of `name` by `holder`, with its fencing token (`token`)."""

    __slots__ = ("expires_at", "holder", "lost", "name", "scope", "token")

    def __init__(self, name: str, holder: str, token: int, expires_at: float) -> None:
        self.name = name
        self.holder = holder
        self.token = token
        self.expires_at = expires_at  # Trio time, local and never later than Redis's
        self.lost = trio.Event()
        self.scope = trio.CancelScope()  # the body of `hold`, cancelled when the lease is lost

    @property
    def value(self) -> str:
        return f"{self.holder}:{self.token}"


def holder_of(value: bytes | str) -> tuple[str, int]:
    """A lease value's holder and token."""
    text = value.decode() if isinstance(value, bytes) else value
    holder, _, token = text.rpartition(":")
    return holder, int(token)


class Leases:
    """Leases under one key prefix in one Redis, with one ttl."""

    def __init__(
        self, redis: coredis.Redis[bytes], *, ttl_s: float, prefix: str = "relay:"
    ) -> None:
        if ttl_s < 0.03:
            raise ValueError("a lease ttl under 30 ms leaves no time to renew")
        self.redis = redis
        self.ttl_s = ttl_s
        self.ttl_ms = round(ttl_s * 1000)
        self.prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._renew_many = redis.register_script(_RENEW_MANY)
        self._release_many = redis.register_script(_RELEASE_MANY)

    def key(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    def fence_key(self, name: str) -> str:
        return f"{self.prefix}fence:{name}"

    async def acquire(self, name: str, holder: str) -> Lease | None:
        """The lease on `name` for `holder`, or None if someone holds it."""
        if ":" in holder:
            raise ValueError("a holder id must not contain ':'")
        sent_at = trio.current_time()
        token: object = await self._acquire(
            keys=[self.key(name), self.fence_key(name)], args=[holder, self.ttl_ms]
        )
        if token is None:
            return None
        assert isinstance(token, int)
        return Lease(name, holder, token, sent_at + self.ttl_s)

    async def owner(self, name: str) -> tuple[str, int] | None:
        """Who holds `name` now (holder, token), if anyone."""
        value = await self.redis.get(self.key(name))
        return None if value is None else holder_of(value)

    async def renew(self, lease: Lease) -> bool:
        """Extend the lease by the ttl if it is still ours; False if it is not."""
        sent_at = trio.current_time()
        renewed: object = await self._renew(
            keys=[self.key(lease.name)], args=[lease.value, self.ttl_ms]
        )
        if renewed == 1:
            lease.expires_at = max(lease.expires_at, sent_at + self.ttl_s)
            return True
        return False

    async def release(self, lease: Lease) -> bool:
        """Give the lease up if it is still ours (another may take it at once)."""
        released: object = await self._release(keys=[self.key(lease.name)], args=[lease.value])
        return released == 1

    async def renew_many(self, leases: list[Lease]) -> list[bool]:
        """`renew` for many leases in one script call (a node's session leases)."""
        if not leases:
            return []
        sent_at = trio.current_time()
        keys = [self.key(lease.name) for lease in leases]
        renewed: object = await self._renew_many(
            keys=keys, args=[self.ttl_ms, *(lease.value for lease in leases)]
        )
        assert isinstance(renewed, list)
        done = [flag == 1 for flag in renewed]
        for lease, ok in zip(leases, done, strict=True):
            if ok:
                lease.expires_at = max(lease.expires_at, sent_at + self.ttl_s)
        return done

    async def release_many(self, leases: list[Lease]) -> None:
        """`release` for many leases in one script call."""
        if leases:
            await self._release_many(
                keys=[self.key(lease.name) for lease in leases],
                args=[lease.value for lease in leases],
            )

    @asynccontextmanager
    async def hold(
        self,
        lease: Lease,
        *,
        on_lost: Callable[[], object] | None = None,
        drain_s: float = 0.0,
    ) -> AsyncIterator[Lease]:
        """Act as the lease's owner inside the block, renewing it every ttl/3. When it is
        lost, `on_lost()` is called (e.g. stop taking work), and `drain_s` later the block's
        cancel scope (`lease.scope`) is cancelled. Leaving the block releases the lease."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep, lease, on_lost, drain_s)
            try:
                with lease.scope:
                    yield lease
            finally:
                nursery.cancel_scope.cancel()
                if not lease.lost.is_set():
                    with trio.move_on_after(RELEASE_TIMEOUT_S, shield=True):
                        try:
                            await self.release(lease)
                        except Exception:  # it expires by itself within the ttl
                            log.warning("lease not released", extra={"lease": lease.name})

    async def _keep(
        self, lease: Lease, on_lost: Callable[[], object] | None, drain_s: float
    ) -> None:
        every = self.ttl_s / 3
        while True:
            await trio.sleep_until(min(trio.current_time() + every, lease.expires_at))
            if trio.current_time() >= lease.expires_at:
                break
            renewed = False
            with trio.move_on_at(lease.expires_at):
                try:
                    renewed = await self.renew(lease)
                except Exception:
                    log.warning("lease renewal failed", extra={"lease": lease.name}, exc_info=True)
                    continue
                if not renewed:
                    break
        lease.lost.set()
        log.warning("lease lost", extra={"lease": lease.name, "token": lease.token})
        if on_lost is not None:
            on_lost()
        await trio.sleep(drain_s)
        lease.scope.cancel()
