"""The relayd codec without sockets: round trips, arbitrary splits, garbage, and the payload cap
checked before any payload byte is kept."""

from __future__ import annotations

import os
import tracemalloc
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.protocol import relayd
from relay.protocol.relayd import (
    MAX_HEADER_BYTES,
    FrameTooLarge,
    Login,
    Parser,
    RelaydError,
    Transfer,
)

ids = st.binary(min_size=1, max_size=255)
payloads = st.binary(max_size=2000)
logins = st.builds(relayd.encode_login, ids)
transfers = st.builds(relayd.encode_transfer, ids, st.binary(max_size=255), payloads)
streams = st.lists(st.one_of(logins, transfers), min_size=1, max_size=12)


def parse_all(parser: Parser, chunks: list[bytes]) -> list[relayd.Frame]:
    frames: list[relayd.Frame] = []
    for chunk in chunks:
        parser.feed(chunk)
        frames.extend(parser)
    return frames


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


# -- round trips ---------------------------------------------------------------------------------


@given(ids)
def test_login_round_trip(client_id: bytes) -> None:
    data = relayd.encode_login(client_id)
    assert data == b"RELY\x01\x01" + bytes((len(client_id),)) + client_id
    assert relayd.decode(data) == Login(client_id)
    assert relayd.encode(Login(client_id)) == data


@given(ids, st.binary(max_size=255), payloads)
def test_transfer_round_trip(sender: bytes, to: bytes, payload: bytes) -> None:
    data = relayd.encode_transfer(sender, to, payload)
    frame = relayd.decode(data)
    assert isinstance(frame, Transfer)
    assert (frame.sender, frame.to, frame.payload) == (sender, to, payload)
    assert frame.heartbeat == (to == b"")
    assert frame.raw == data
    assert relayd.encode(frame) == data


def test_byte_layout_is_big_endian() -> None:
    data = relayd.encode_transfer(b"a", b"bc", b"xyz")
    assert data == b"RELY\x01\x09\x01a\x02bc\x00\x00\x00\x03xyz"
    assert relayd.encode_heartbeat(b"a") == b"RELY\x01\x09\x01a\x00\x00\x00\x00\x00"


@settings(max_examples=200)
@given(streams, st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_parses_the_same(frames: list[bytes], cuts: list[int]) -> None:
    data = b"".join(frames)
    whole = parse_all(Parser(), [data])
    assert [relayd.encode(f) for f in whole] == frames
    assert parse_all(Parser(), split(data, cuts)) == whole
    one_by_one = Parser()
    assert parse_all(one_by_one, [data[i : i + 1] for i in range(len(data))]) == whole
    assert one_by_one.buffered_bytes == 0


def test_feeding_before_taking_keeps_order() -> None:
    parser = Parser()
    a, b = relayd.encode_login(b"a"), relayd.encode_transfer(b"a", b"b", b"hi")
    parser.feed(a + b[:3])
    parser.feed(b[3:])
    assert list(parser) == [Login(b"a"), relayd.decode(b)]


@pytest.mark.parametrize("coalesce", [False, True])
def test_a_frame_fed_a_byte_at_a_time_costs_its_bytes(coalesce: bool) -> None:
    # A view and a chunk per read were ~320 bytes per byte: an 8 MiB transfer sent a byte at
    # a time (relay_idle_s counts from the last read) could hold 2.6 GB.
    payload = os.urandom(100_000)
    frame = relayd.encode_transfer(b"a", b"b", payload)
    parser = relayd.Parser(coalesce=coalesce)
    tracemalloc.start()
    try:
        for i in range(len(frame) - 1):
            parser.feed(frame[i : i + 1])
            assert parser.next_frame() is None
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2 * len(frame)
    parser.feed(frame[-1:])
    assert parser.next_frame() == relayd.decode(frame)


def test_a_frame_in_large_and_small_pieces_reads_back() -> None:
    frame = relayd.encode_transfer(b"a", b"b", os.urandom(50_000))
    cuts = [3, 20, 30, 9000, 9001, 9002, 30000, 30005, 49000, len(frame) - 1]
    parser = relayd.Parser()
    got = []
    for start, end in pairwise([0, *cuts, len(frame)]):
        parser.feed(frame[start:end])
        got += list(parser)
    assert got == [relayd.decode(frame)]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"X", "bad magic"),
        (b"RELX", "bad magic"),
        (b"RELY\x02", "unsupported version 2"),
        (b"RELY\x01\x02", "unknown command 0x02"),
        (b"RELY\x01\x01\x00", "an empty client id"),
        (b"RELY\x01\x09\x00", "an empty `from`"),
    ],
)
def test_bad_headers_fail_on_the_first_wrong_byte(data: bytes, message: str) -> None:
    parser = Parser()
    parser.feed(data)
    with pytest.raises(RelaydError, match=message):
        parser.next_frame()
    with pytest.raises(RelaydError, match=message):  # a dead parser stays dead
        parser.next_frame()


def test_a_huge_declared_length_fails_before_any_payload() -> None:
    parser = Parser()
    header = relayd.encode_transfer(b"a", b"b")[:-4] + b"\xff\xff\xff\xff"
    parser.feed(header)
    with pytest.raises(FrameTooLarge):
        parser.next_frame()
    assert parser.buffered_bytes == 0


def test_the_cap_is_inclusive() -> None:
    parser = Parser(max_payload_bytes=10)
    parser.feed(relayd.encode_transfer(b"a", b"b", b"x" * 10))
    frame = parser.next_frame()
    assert isinstance(frame, Transfer)
    assert frame.payload == b"x" * 10
    parser.feed(relayd.encode_transfer(b"a", b"b", b"x" * 11))
    with pytest.raises(FrameTooLarge, match="11 bytes"):
        parser.next_frame()


def test_decode_wants_exactly_one_frame() -> None:
    login = relayd.encode_login(b"a")
    with pytest.raises(RelaydError, match="ends inside"):
        relayd.decode(login[:-1])
    with pytest.raises(RelaydError, match="after the frame"):
        relayd.decode(login + b"R")
    with pytest.raises(FrameTooLarge):
        relayd.decode(relayd.encode_transfer(b"a", b"b", b"xy"), max_payload_bytes=1)


def test_encoders_refuse_bad_lengths() -> None:
    with pytest.raises(ValueError, match="client id"):
        relayd.encode_login(b"")
    with pytest.raises(ValueError, match="client id"):
        relayd.encode_login(b"x" * 256)
    with pytest.raises(ValueError, match="from"):
        relayd.encode_transfer(b"", b"b")
    with pytest.raises(ValueError, match="to"):
        relayd.encode_transfer(b"a", b"x" * 256)


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=600),
        # Valid streams with bytes flipped, cut or inserted: garbage that gets past the magic.
        st.builds(
            lambda frames, at, junk: b"".join(frames)[:at] + junk + b"".join(frames)[at:],
            streams,
            st.integers(0, 3000),
            st.binary(min_size=1, max_size=8),
        ),
    ),
    st.lists(st.integers(min_value=0), max_size=10),
    st.integers(0, 300),
)
def test_garbage_only_raises_relayd_error_and_stays_bounded(
    data: bytes, cuts: list[int], cap: int
) -> None:
    parser = Parser(max_payload_bytes=cap)
    try:
        for chunk in split(data, cuts):
            parser.feed(chunk)
            for frame in parser:
                if isinstance(frame, Transfer):
                    assert len(frame.payload) <= cap
            assert parser.buffered_bytes <= MAX_HEADER_BYTES + cap
    except RelaydError:
        assert parser.buffered_bytes == 0


# -- coalescing (the relay's fast path) ----------------------------------------------------------


def expand(frames: list[relayd.Frame]) -> list[relayd.Frame]:
    """Runs of transfers back to single frames."""
    single: list[relayd.Frame] = []
    for frame in frames:
        if isinstance(frame, Transfer) and frame.count > 1:
            parser = Parser(relayd.MAX_PAYLOAD_LEN)
            parser.feed(frame.raw)
            run = list(parser)
            assert len(run) == frame.count
            assert {(f.sender, f.to) for f in run if isinstance(f, Transfer)} == {
                (frame.sender, frame.to)
            }
            assert isinstance(run[0], Transfer)
            assert frame.payload == run[0].payload
            single.extend(run)
        else:
            single.append(frame)
    return single


runs = st.lists(
    st.one_of(
        logins,
        st.builds(
            lambda to, payloads: [relayd.encode_transfer(b"me", to, p) for p in payloads],
            st.sampled_from([b"a", b"b", b""]),
            st.lists(st.binary(max_size=300), min_size=1, max_size=30),
        ).map(b"".join),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200)
@given(runs, st.lists(st.integers(min_value=0), max_size=10))
def test_coalesced_runs_are_the_same_frames(chunks: list[bytes], cuts: list[int]) -> None:
    data = b"".join(chunks)
    plain = parse_all(Parser(), [data])
    coalesced = parse_all(Parser(coalesce=True), split(data, cuts))
    assert expand(coalesced) == plain
    # Together the pieces are the stream itself, byte for byte.
    assert b"".join(relayd.encode(f) for f in coalesced) == data


def test_a_run_is_bounded_and_never_swallows_an_error() -> None:
    frame = relayd.encode_transfer(b"me", b"you", b"x" * 1000)
    parser = Parser(max_payload_bytes=1000, coalesce=True)
    parser.feed(frame * 100)
    sizes = [f.count for f in parser if isinstance(f, Transfer)]
    assert sum(sizes) == 100
    assert max(sizes) * len(frame) <= relayd.RUN_BYTES + len(frame)
    too_big = relayd.encode_transfer(b"me", b"you", b"x" * 1001)
    parser.feed(frame * 3 + too_big)
    run = parser.next_frame()
    assert isinstance(run, Transfer)
    assert run.count == 3
    with pytest.raises(FrameTooLarge):
        parser.next_frame()


def test_a_run_is_a_view_of_its_chunk_only_when_it_is_most_of_it() -> None:
    to_a = relayd.encode_transfer(b"me", b"a", b"x" * 100)
    to_b = relayd.encode_transfer(b"me", b"b", b"y" * 1000)
    parser = Parser(coalesce=True)
    parser.feed(to_a * 10 + to_b)
    run, single = list(parser)
    assert isinstance(run, Transfer)
    assert isinstance(single, Transfer)
    # No copy for the larger part; the small one is copied out, so that a kept frame never
    # holds on to a chunk more than twice its size.
    assert isinstance(run.raw, memoryview)
    assert run.raw == to_a * 10
    assert run.count == 10
    assert isinstance(single.raw, bytes)
    assert single.raw == to_b


def test_run_bytes_bounds_a_run_but_not_a_frame() -> None:
    small = relayd.encode_transfer(b"me", b"you", b"x" * 100)
    large = relayd.encode_transfer(b"me", b"you", b"x" * 5000)
    parser = Parser(coalesce=True, run_bytes=1000)
    parser.feed(small * 25 + large + small)
    runs = [f for f in parser if isinstance(f, Transfer)]
    assert b"".join(relayd.encode(f) for f in runs) == small * 25 + large + small
    assert [f.count for f in runs] == [len(runs[0].raw) // len(small)] * 3 + [1, 1, 1]
    assert all(len(f.raw) <= 1000 for f in runs if f.count > 1)
    assert len(runs[4].raw) == len(large)


def test_a_frame_over_several_chunks() -> None:
    frame = relayd.encode_transfer(b"me", b"you", os.urandom(300_000))
    parser = Parser(coalesce=True)
    cut = len(frame) - 10
    for i in range(0, cut, 1000):
        parser.feed(frame[i : min(i + 1000, cut)])
        assert parser.next_frame() is None
        assert parser.buffered_bytes == min(i + 1000, cut)
    parser.feed(frame[cut:] + frame[:5])  # the end, and the start of the next frame
    whole = parser.next_frame()
    assert isinstance(whole, Transfer)
    assert whole.raw == frame
    assert parser.next_frame() is None
    assert parser.buffered_bytes == 5


@settings(max_examples=100)
@given(runs, st.lists(st.integers(min_value=0), max_size=10))
def test_split_run_gives_back_the_frames(chunks: list[bytes], cuts: list[int]) -> None:
    data = b"".join(chunks)
    plain = [relayd.encode(f) for f in parse_all(Parser(), [data]) if isinstance(f, Transfer)]
    coalesced = parse_all(Parser(coalesce=True), split(data, cuts))
    pieces = [p for f in coalesced if isinstance(f, Transfer) for p in relayd.split_run(f.raw)]
    assert [bytes(p) for p in pieces] == plain
