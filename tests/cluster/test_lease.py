"""Leases on a real Redis: one holder at a time, tokens that only grow, renewal, expiry and
takeover, and a holder that notices it lost its lease stops acting as owner."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import coredis
import pytest
import trio

from relay.cluster.lease import Leases, holder_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.realservers import RedisServer

_prefixes = itertools.count()


@pytest.fixture
async def redis_client(redis: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url, decode_responses=False)
    async with client:
        yield client


def leases(client: coredis.Redis[bytes], ttl_s: float) -> Leases:
    """Leases under a prefix of their own: tests sharing the worker's Redis stay apart."""
    return Leases(client, ttl_s=ttl_s, prefix=f"test-lease-{next(_prefixes)}:")


async def test_one_holder_at_a_time_and_tokens_only_grow(
    redis_client: coredis.Redis[bytes],
) -> None:
    pool = leases(redis_client, ttl_s=5.0)
    first = await pool.acquire("channel:1", "a")
    assert first is not None
    assert await pool.acquire("channel:1", "b") is None
    assert await pool.owner("channel:1") == ("a", first.token)
    other = await pool.acquire("channel:2", "b")  # keys are independent
    assert other is not None
    assert await pool.release(first)
    assert not await pool.release(first)  # compare-and-delete: no longer ours
    second = await pool.acquire("channel:1", "b")
    assert second is not None
    assert second.token > first.token
    assert not await pool.renew(first)  # the old holder cannot extend the new lease
    assert await pool.renew(second)


async def test_an_expired_lease_is_taken_over_with_a_newer_token(
    redis_client: coredis.Redis[bytes],
) -> None:
    pool = leases(redis_client, ttl_s=0.1)
    first = await pool.acquire("room:x", "a")  # never renewed: its holder died
    assert first is not None
    second = None
    for _ in range(200):  # Redis expires it on its own clock: ask until it has
        second = await pool.acquire("room:x", "b")
        if second is not None:
            break
        await trio.sleep(0.01)
    assert second is not None
    assert trio.current_time() >= first.expires_at  # not before the ttl
    assert second.token > first.token
    assert not await pool.renew(first)


async def test_a_held_lease_is_renewed_past_its_ttl_and_released_after(
    redis_client: coredis.Redis[bytes],
) -> None:
    pool = leases(redis_client, ttl_s=0.15)
    lease = await pool.acquire("voice:7", "a")
    assert lease is not None
    async with pool.hold(lease):
        await trio.sleep(0.5)  # three ttls
        assert await pool.owner("voice:7") == ("a", lease.token)
        assert not lease.lost.is_set()
    assert await pool.owner("voice:7") is None  # released on the way out: no wait for a taker


async def test_a_holder_that_loses_its_lease_stops_acting_as_owner(
    redis_client: coredis.Redis[bytes],
) -> None:
    pool = leases(redis_client, ttl_s=0.3)
    lease = await pool.acquire("relay:bob", "a")
    assert lease is not None
    told: list[str] = []
    body_ended = False
    with trio.fail_after(3):
        async with pool.hold(lease, on_lost=lambda: told.append("lost")):
            # Its ttl passed while it could not renew (a pause, a partition), and another
            # process took the key: the next renewal is refused.
            await redis_client.delete([pool.key("relay:bob")])
            taker = await pool.acquire("relay:bob", "b")
            assert taker is not None
            await trio.sleep_forever()  # cancelled by the holder once it knows
        body_ended = True
    assert body_ended
    assert lease.lost.is_set()
    assert told == ["lost"]
    assert await pool.owner("relay:bob") == ("b", taker.token)  # not released by the loser


def test_a_lease_value_names_its_holder_and_token() -> None:
    assert holder_of(b"node-1:42") == ("node-1", 42)
    assert holder_of("a:b:7") == ("a:b", 7)


async def test_holder_ids_with_a_colon_are_refused(redis_client: coredis.Redis[bytes]) -> None:
    with pytest.raises(ValueError, match="':'"):
        await leases(redis_client, ttl_s=1.0).acquire("x", "a:b")
