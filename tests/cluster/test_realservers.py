"""The private servers the cluster tests run against start, answer and keep tests apart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import coredis
import psycopg

if TYPE_CHECKING:
    from tests.realservers import PostgresServer, RedisServer


async def test_redis_answers(redis: RedisServer) -> None:
    client = coredis.Redis.from_url(redis.url, decode_responses=True)
    async with client:
        await client.set("relay-test", "1")
        assert await client.get("relay-test") == "1"


def test_each_postgres_database_is_new_and_empty(postgres: PostgresServer) -> None:
    first, second = postgres.new_database(), postgres.new_database()
    assert first != second
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE t (x bigint)")
        conn.execute("INSERT INTO t VALUES (1)")
    with psycopg.connect(second) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'").fetchone()
        assert tables == (0,)
