"""Per-topic logs (relay.cluster.topiclog): the header codec, a node's count of each topic, and
reading a log after a mark in a real Redis, refused once trimmed past it or of another epoch."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import coredis
import pytest
from coredis.tokens import PureToken
from hypothesis import given
from hypothesis import strategies as st

from relay.cluster import topiclog
from relay.cluster.topiclog import Mark, Tracker, Trimmed, read_after

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.realservers import RedisServer

_prefixes = itertools.count()
epochs = st.text(alphabet="0123456789abcdef", min_size=1, max_size=16)


@given(epochs, st.integers(0, 2**62), st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_a_header_round_trips(epoch: str, offset: int, pub: int, rest: bytes) -> None:
    mark = Mark(epoch, offset, pub)
    assert topiclog.parse(topiclog.header(mark) + rest) == (mark, rest)


@given(st.binary(max_size=40))
def test_parse_takes_a_header_or_nothing(data: bytes) -> None:
    try:
        parsed = topiclog.parse(data)
    except ValueError:
        assert data.startswith(b"#")
        return
    if parsed is None:
        assert not data.startswith(b"#")
    else:
        mark, rest = parsed
        assert topiclog.header(mark) + rest == data


@pytest.mark.parametrize(
    "data", [b"#e:1:2", b"#e:x:2|d", b"#:1:2|d", b"#e:1|d", b"#e:1:2:3|d", b"#e:-1:2|d"]
)
def test_a_malformed_header_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="log header"):
        topiclog.parse(data)


def test_a_node_counts_a_topic_from_its_sync_and_notices_gaps() -> None:
    tracker = Tracker()
    t = "relay:s:1"
    assert tracker.heard(t, Mark("e", 5), sync=False, own=False)  # before its sync: not counted
    assert tracker.mark(t) is None
    assert tracker.heard(t, Mark("e", 5), sync=True, own=False)
    tracker.delivered(t, 77)  # its own publication, delivered here, not heard back yet
    assert tracker.mark(t) == Mark("e", 5, 0, (77,))
    assert tracker.heard(t, Mark("e", 6, 77), sync=False, own=True)
    assert tracker.mark(t) == Mark("e", 6)
    assert tracker.heard(t, Mark("e", 6), sync=True, own=False)  # another node's sync
    assert not tracker.heard(t, Mark("e", 8), sync=False, own=False)  # 7 was missed
    assert tracker.heard(t, Mark("f", 1), sync=False, own=False)  # a new epoch from its start
    assert not tracker.heard(t, Mark("g", 4), sync=False, own=False)  # one that began unheard
    tracker.forget([t])
    assert tracker.mark(t) is None


@pytest.fixture
async def client(redis: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    opened: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url, decode_responses=False)
    async with opened:
        yield opened


async def offsets(
    client: coredis.Redis[bytes], topic: str, mark: Mark, count: int = 100
) -> list[int]:
    prefix = topic.rpartition("s:")[0]
    return [e.offset for e in (await read_after(client, topic, mark, count, prefix))[0]]


async def test_a_log_is_read_after_a_mark_until_trimmed_or_of_another_epoch(
    client: coredis.Redis[bytes],
) -> None:
    prefix = f"test-log-{next(_prefixes)}:"
    topic = prefix + "s:42"
    publish = client.register_script(topiclog.PUBLISH_SCRIPT)
    sync = client.register_script(topiclog.SYNC_SCRIPT)
    batch = [(topic, pub, f"node-a|payload {pub}".encode()) for pub in range(1, 6)]
    args: list[str | int | bytes] = [1000, 60_000, "ep1", prefix, topiclog.pack(batch)]
    assert await publish(keys=[], args=args) == 5
    entries, last = await read_after(client, topic, Mark("ep1", 2), 100, prefix)
    assert last == 5
    assert [(e.offset, e.node, e.pub, e.payload) for e in entries] == [
        (n, "node-a", n, f"payload {n}".encode()) for n in (3, 4, 5)
    ]
    assert (await read_after(client, topic, Mark("ep1", 5), 100, prefix)) == ([], 5)
    # Bounded: at most `count` entries a read.
    assert await offsets(client, topic, Mark("ep1", 0), 2) == [1, 2]
    with pytest.raises(Trimmed):  # another epoch (Redis restarted, flushed, the log expired)
        await read_after(client, topic, Mark("other", 2), 100, prefix)
    # A sync publishes the mark without taking an offset; an existing epoch is kept.
    assert await sync(keys=[], args=[60_000, "ep2", prefix, b"node-a|" + topiclog.SYNC, topic]) == 1
    assert await client.hget(f"{prefix}logm:s:42", "o") == b"5"
    await client.xtrim(f"{prefix}log:s:42", PureToken.MAXLEN, 2)
    with pytest.raises(Trimmed):  # entries 3 and 4 are gone
        await read_after(client, topic, Mark("ep1", 2), 100, prefix)
    assert await offsets(client, topic, Mark("ep1", 3)) == [4, 5]
    await client.delete([f"{prefix}logm:s:42"])  # lost: a new epoch starts afresh
    with pytest.raises(Trimmed):
        await read_after(client, topic, Mark("ep1", 5), 100, prefix)
    await sync(keys=[], args=[60_000, "ep3", prefix, b"node-a|" + topiclog.SYNC, topic])
    assert await client.hmget(f"{prefix}logm:s:42", ["e", "o"]) == (b"ep3", b"0")
    assert await publish(keys=[], args=[1000, 60_000, "ep4", prefix, topiclog.pack(batch[:1])]) == 1
    assert await offsets(client, topic, Mark("ep3", 0)) == [1]
