"""Worker-id leases and shared budgets against a real Redis (tests/realservers.py)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import coredis
import pytest
import trio

from relay.cluster.limits import RedisBudget
from relay.cluster.workers import WorkerLease, WorkerLeaseLost
from relay.errors import ConfigError

if TYPE_CHECKING:
    from tests.realservers import RedisServer


async def test_leases_are_distinct_renewed_and_released(redis: RedisServer) -> None:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    async with client:
        first = WorkerLease(client, "node-a", 30)
        second = WorkerLease(client, "node-b", 30)
        a = await first.acquire()
        b = await second.acquire()
        assert a != b
        assert await client.get(f"relay:worker:{a}") == b"node-a"
        # A configured id held by another process is refused, naming the setting.
        with pytest.raises(ConfigError, match="RELAY_WORKER_ID"):
            await WorkerLease(client, "node-c", 30).acquire(a)
        assert await first.renew()
        # Only the holder renews or releases: node-b cannot free node-a's id.
        impostor = WorkerLease(client, "node-b", 30)
        impostor.worker_id = a
        assert not await impostor.renew()
        await impostor.release()
        assert await client.get(f"relay:worker:{a}") == b"node-a"
        await first.release()
        assert await client.get(f"relay:worker:{a}") is None
        await second.release()


async def test_a_lost_lease_stops_its_keeper(redis: RedisServer) -> None:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    async with client:
        lease = WorkerLease(client, "node-lost", 0.6)  # renewed every 0.2 s
        worker_id = await lease.acquire()
        # Its key expired and another node took the id: the keeper must stop, not share it.
        await client.set(f"relay:worker:{worker_id}", "node-thief")
        with pytest.raises(WorkerLeaseLost), trio.fail_after(5):
            await lease.keep()
        assert await client.get(f"relay:worker:{worker_id}") == b"node-thief"
        await client.delete([f"relay:worker:{worker_id}"])


async def test_a_budget_is_shared_by_every_node(redis: RedisServer) -> None:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    name = f"test-{secrets.token_hex(4)}"
    async with client:
        # Two nodes' budgets for the same limit: 3 per minute in all, not 3 each.
        one, two = (RedisBudget(client, name, 3, 60.0) for _ in range(2))
        taken = [await one.take("u1"), await two.take("u1"), await one.take("u1")]
        assert [d.allowed for d in taken] == [True, True, True]
        assert [d.remaining for d in taken] == [2, 1, 0]
        refused = await two.take("u1")
        assert not refused.allowed
        assert 0 < refused.retry_after_s <= 60
        assert (await two.take("u2")).allowed  # another key has its own budget


async def test_a_budget_redis_cannot_count_falls_back_to_the_local_limiter(
    redis: RedisServer,
) -> None:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    name = f"test-{secrets.token_hex(4)}"
    async with client:
        # The key holds a list: Redis answers the script with an error (WRONGTYPE), as it
        # would any failure; the node's own limiter decides instead of refusing everything.
        await client.rpush(f"relay:rl:{name}:u", ["x"])
        budget = RedisBudget(client, name, 2, 60.0)
        decisions = [await budget.take("u") for _ in range(3)]
        assert [d.allowed for d in decisions] == [True, True, False]
        assert budget.fallbacks == 3
