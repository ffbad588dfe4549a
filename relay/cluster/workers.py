"""Snowflake worker ids, one per process, never shared (relay.ids: 10 bits, 0-1023).

With a broker, each process leases its id in Redis: `SET relay:worker:<id> <node> NX PX`,
renewed every third of `worker_lease_s` by a compare-and-renew script and deleted on shutdown
by a compare-and-delete one, so only the holder ever extends or frees it. A configured
`worker_id` is claimed the same way (start-up fails if another process holds it); otherwise the
first free id from a random start is taken. A process that cannot renew its lease (Redis lost
it, or another node took it after it expired) stops: two processes making ids with the same
worker could make the same id.
"""

from __future__ import annotations

import logging
import random

import coredis
import trio
from coredis.tokens import PureToken

from relay.errors import ConfigError
from relay.ids import WORKER_BITS

log = logging.getLogger("relay.cluster")

WORKERS = 1 << WORKER_BITS
_KEY = "relay:worker:{}"
# Renew or release only a lease this node holds (the value is the holder's node id).
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"  # noqa: E501
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"  # noqa: E501


class WorkerLeaseLost(RuntimeError):
    """This process's worker-id lease expired or was taken: it must not make ids any more."""


class WorkerLease:
    def __init__(self, redis: coredis.Redis[bytes], node_id: str, lease_s: float) -> None:
        self.redis = redis
        self.node_id = node_id
        self.lease_ms = int(lease_s * 1000)
        self.worker_id: int | None = None

    async def acquire(self, wanted: int | None = None) -> int:
        """Lease `wanted`, or the first free id from a random start.

        Raises:
            ConfigError: `wanted` is held by another process, or all 1024 ids are taken."""
        candidates = [wanted] if wanted is not None else _from_random_start()
        for worker_id in candidates:
            if await self.redis.set(
                _KEY.format(worker_id), self.node_id, condition=PureToken.NX, px=self.lease_ms
            ):
                self.worker_id = worker_id
                log.info("worker id leased", extra={"worker_id": worker_id})
                return worker_id
        if wanted is not None:
            holder = await self.redis.get(_KEY.format(wanted))
            raise ConfigError(
                f"worker_id {wanted} (RELAY_WORKER_ID) is held by another process "
                f"({holder!r}); every process needs its own"
            )
        raise ConfigError(f"all {WORKERS} worker ids are leased; no id left for this process")

    async def renew(self) -> bool:
        assert self.worker_id is not None
        script = self.redis.register_script(_RENEW)
        key = _KEY.format(self.worker_id)
        return bool(await script(keys=[key], args=[self.node_id, self.lease_ms]))

    async def release(self) -> None:
        if self.worker_id is not None:
            script = self.redis.register_script(_RELEASE)
            await script(keys=[_KEY.format(self.worker_id)], args=[self.node_id])
            self.worker_id = None

    async def keep(self) -> None:
        """Renew every third of the lease until cancelled; then release it.

        Raises:
            WorkerLeaseLost: a renewal found the lease gone or held by another node."""
        renewed = trio.current_time()
        try:
            while True:
                await trio.sleep(self.lease_ms / 3000)
                try:
                    held = await self.renew()
                except (coredis.exceptions.RedisError, OSError) as e:
                    # Redis unreachable for a moment: fine while the lease cannot have expired.
                    log.warning("worker id lease not renewed", extra={"error": repr(e)})
                    if trio.current_time() - renewed < self.lease_ms / 1000 * 2 / 3:
                        continue
                    held = False
                if not held:
                    raise WorkerLeaseLost(f"worker id {self.worker_id} lease lost")
                renewed = trio.current_time()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self.release()


def _from_random_start() -> list[int]:
    start = random.randrange(WORKERS)
    return [(start + i) % WORKERS for i in range(WORKERS)]
