"""Replay buffers in Redis Streams: a session written by one node is resumed on another with
exactly the frames it missed, or not at all when some are gone (trimmed, ended, dropped)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import coredis
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from relay.cluster import replay
from relay.cluster.replay import ReplayLog, SessionState
from relay.cluster.topiclog import Mark

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.realservers import RedisServer

_prefixes = itertools.count()


@pytest.fixture
async def client(redis: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    opened: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url, decode_responses=False)
    async with opened:
        yield opened


def state(session_id: str, seq: int = 1) -> SessionState:
    return SessionState(
        session_id=session_id,
        user_id=7,
        auth_session_id=8,
        encoding="json",
        intents=3,
        seq=seq,
        node="",
    )


def frame(session_id: str, seq: int) -> bytes:
    return f'{{"op":0,"s":{seq},"t":"X","d":"{session_id}"}}'.encode()


async def test_a_session_resumes_on_another_node_with_exactly_what_it_missed(
    client: coredis.Redis[bytes],
) -> None:
    prefix = f"test-replay-{next(_prefixes)}:"
    a = ReplayLog(client, "a", size=1000, window_s=60, prefix=prefix)
    b = ReplayLog(client, "b", size=1000, window_s=60, prefix=prefix)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        with trio.fail_after(5):
            a.open(state("s1"))  # after READY (seq 1, never kept)
            for seq in range(2, 42):
                a.append("s1", seq, frame("s1", seq))
            await a.flushed()
            # Node a dies here (nothing ended): node b serves the RESUME.
            resumed = await b.resume("s1", 30)
            assert resumed is not None
            assert resumed.frames == [frame("s1", seq) for seq in range(31, 42)]
            assert (resumed.state.seq, resumed.state.node, resumed.state.user_id) == (41, "a", 7)
            empty = await b.resume("s1", 41)
            assert empty is not None
            assert empty.frames == []
            assert await b.resume("s1", 42) is None  # from the future
            assert await b.resume("nobody", 1) is None
            # b takes it over and goes on numbering; a later RESUME sees one sequence.
            b.open(resumed.state)
            for seq in range(42, 45):
                b.append("s1", seq, frame("s1", seq))
            await b.flushed()
            again = await a.resume("s1", 39)
            assert again is not None
            assert again.frames == [frame("s1", seq) for seq in range(40, 45)]
            assert again.state.node == "b"
            b.end("s1")  # logout: resumable nowhere
            b.append("s1", 45, frame("s1", 45))  # ignored: it is over
            await b.flushed()
            assert not await client.exists([b.state_key("s1"), b.stream_key("s1")])
            assert await a.resume("s1", 44) is None
        nursery.cancel_scope.cancel()


async def test_a_trimmed_buffer_or_a_dropped_session_is_not_resumable(
    client: coredis.Redis[bytes],
) -> None:
    prefix = f"test-replay-{next(_prefixes)}:"
    log = ReplayLog(client, "a", size=10, window_s=60, prefix=prefix, max_pending=300)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        with trio.fail_after(5):
            log.open(state("long"))
            for seq in range(2, 252):
                log.append("long", seq, frame("long", seq))
            log.open(state("flood"))
            for seq in range(2, 100):  # the queue holds 300: this one's appends overflow it
                log.append("flood", seq, frame("flood", seq))
            await log.flushed()
            assert await log.resume("long", 1) is None  # trimmed: MAXLEN ~ 10
            recent = await log.resume("long", 241)
            assert recent is not None
            assert recent.frames == [frame("long", seq) for seq in range(242, 252)]
            assert await log.resume("flood", 1) is None  # dropped: never a stream with holes
            assert log.dropped == 1
            assert not await client.exists([log.stream_key("flood")])
        nursery.cancel_scope.cancel()


marks = st.builds(
    Mark,
    epoch=st.text(max_size=16),
    offset=st.integers(0, 2**63 - 1),
    pub=st.integers(0, 2**32 - 1),
    ahead=st.lists(st.integers(1, 2**32 - 1), max_size=4).map(tuple),
)


@given(
    st.builds(
        SessionState,
        session_id=st.text(max_size=30),
        user_id=st.integers(0, 2**63 - 1),
        auth_session_id=st.integers(0, 2**63 - 1),
        encoding=st.sampled_from(["json", "msgpack"]),
        intents=st.integers(0, 2**31),
        seq=st.integers(0, 2**63 - 1),
        node=st.text(max_size=20),
        marks=st.dictionaries(st.text(max_size=20), marks, max_size=3),
    )
)
def test_a_session_state_round_trips(value: SessionState) -> None:
    assert replay._state_decoder.decode(replay._state_encoder.encode(value)) == value


async def test_states_carry_the_marks_of_their_round_and_sessions_stay_whole(
    client: coredis.Redis[bytes],
) -> None:
    """A round of writes takes every session's marks at one moment, and writes each session's
    frames and state in one call even when the round is bigger than a call (BATCH)."""
    prefix = f"test-replay-{next(_prefixes)}:"
    a = ReplayLog(client, "a", size=5000, window_s=60, prefix=prefix, max_pending=10_000)
    b = ReplayLog(client, "b", size=5000, window_s=60, prefix=prefix)
    now = {"relay:s:1": Mark("e", 7, 0, (3,))}
    a.marks_of = lambda session_id: dict(now)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(5):
            for name, count in (("big", replay.BATCH + 100), ("small", 3), ("other", 1500)):
                a.open(state(name))
                for seq in range(2, 2 + count):
                    a.append(name, seq, frame(name, seq))
            await nursery.start(a.run)  # one round: all of the above
            await a.flushed()
            for name, count in (("big", replay.BATCH + 100), ("small", 3), ("other", 1500)):
                resumed = await b.resume(name, 1)
                assert resumed is not None
                assert len(resumed.frames) == count
                assert resumed.state.marks == now
            # A mark that moved is written with the next frame, or by `touch` without one.
            now["relay:s:1"] = Mark("e", 9)
            a.touch("small")
            await a.flushed()
            touched = await b.resume("small", 4)
            assert touched is not None
            assert (touched.frames, touched.state.seq) == ([], 4)
            assert touched.state.marks == now
        nursery.cancel_scope.cancel()
