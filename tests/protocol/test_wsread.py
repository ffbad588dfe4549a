"""relay.protocol.wsread: client frames built by wsproto's client side (and by the tests'
`masked`, for what wsproto refuses to send) read back at every cut of the byte stream; every
refusal's code."""

from __future__ import annotations

import os
import tracemalloc
from itertools import pairwise
from typing import TYPE_CHECKING

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.events import Ping as WsPing

from relay.protocol.wsread import Close, Event, FrameReader, Ping, Refusal
from tests.realtime.clients import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, masked

if TYPE_CHECKING:
    from collections.abc import Iterable

LIMIT = 64 * 1024


def read(data: bytes, cuts: Iterable[int] = (), limit: int = LIMIT) -> list[Event]:
    reader = FrameReader(limit)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    events: list[Event] = []
    for start, end in pairwise(bounds):
        events += reader.receive(data[start:end])
    return events


messages = st.lists(
    st.tuples(
        st.one_of(st.text(max_size=200), st.binary(max_size=200), st.none()),  # None: a ping
        st.integers(min_value=1, max_value=4),  # fragments
    ),
    max_size=6,
)


@given(messages, st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_any_messages_read_back_at_any_cut(
    sent: list[tuple[str | bytes | None, int]], cuts: list[int]
) -> None:
    client = Connection(ConnectionType.CLIENT)
    data = b""
    expected: list[Event] = []
    for message, fragments in sent:
        if message is None:
            data += client.send(WsPing(b"p"))
            expected.append(Ping(b"p"))
            continue
        step = max(1, len(message) // fragments)
        pieces = [message[i : i + step] for i in range(0, len(message), step)] or [message[:0]]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if isinstance(piece, str):
                data += client.send(TextMessage(piece, message_finished=last))
            else:
                data += client.send(BytesMessage(piece, message_finished=last))
            if i == 0 and not last:
                data += client.send(WsPing(b"mid"))  # control frames may come between parts
                expected.append(Ping(b"mid"))
        expected.append(message)
    data += client.send(CloseConnection(4000, "bye"))
    expected.append(Close(4000, "bye"))
    assert read(data, cuts) == expected


def test_every_length_class_reads_back() -> None:
    for size in (0, 125, 126, 0xFFFF, 0x10000, LIMIT):
        payload = os.urandom(size)
        assert read(masked(BINARY, payload), range(0, size + 14, 997)) == [payload]


def test_a_pong_is_consumed() -> None:
    assert read(masked(PONG, b"x") + masked(TEXT, b"after")) == ["after"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(masked(TEXT, b"x", rsv=4), 1002, id="rsv1"),
        pytest.param(masked(TEXT, b"x", rsv=2), 1002, id="rsv2"),
        pytest.param(masked(TEXT, b"x", rsv=1), 1002, id="rsv3"),
        pytest.param(bytes((0x81, 1)) + b"x", 1002, id="unmasked"),
        pytest.param(masked(3, b"x"), 1002, id="opcode 3"),
        pytest.param(masked(11, b"x"), 1002, id="opcode 11"),
        pytest.param(masked(PING, b"x", fin=False), 1002, id="fragmented ping"),
        pytest.param(masked(PING, b"x" * 126), 1002, id="long ping"),
        pytest.param(masked(CONTINUATION, b"x"), 1002, id="continuation first"),
        pytest.param(masked(TEXT, b"a", fin=False) + masked(TEXT, b"b"), 1002, id="new inside"),
        pytest.param(b"\x82\xff" + b"\x80" + bytes(7) + b"abcd", 1002, id="length top bit"),
        pytest.param(masked(TEXT, b"\xff"), 1007, id="bad utf-8"),
        pytest.param(masked(TEXT, b"\xc3\x28", fin=False), 1007, id="bad utf-8 in a fragment"),
        pytest.param(masked(CLOSE, b"\x03"), 1002, id="close of 1 byte"),
        pytest.param(masked(CLOSE, b"\x03\xe7"), 1002, id="close 999"),
        pytest.param(masked(CLOSE, b"\x03\xec"), 1002, id="close 1004"),
        pytest.param(masked(CLOSE, b"\x03\xed"), 1002, id="close 1005"),
        pytest.param(masked(CLOSE, b"\x03\xee"), 1002, id="close 1006"),
        pytest.param(masked(CLOSE, b"\x03\xf7"), 1002, id="close 1015"),
        pytest.param(masked(CLOSE, b"\x07\xcf"), 1002, id="close 1999"),
        pytest.param(masked(CLOSE, b"\x03\xf6"), 1002, id="close 1014"),
        pytest.param(masked(CLOSE, b"\x13\x88"), 1002, id="close 5000"),
        pytest.param(masked(CLOSE, b"\x03\xe8\xff"), 1007, id="close reason not utf-8"),
    ],
)
def test_refusals(frame: bytes, code: int) -> None:
    before = masked(TEXT, b"before")
    after = masked(TEXT, b"after")
    for cuts in ((), range(len(before) + len(frame) + 1)):
        reader = FrameReader(LIMIT)
        pieces = _pieces(before + frame + after, cuts)
        events = [event for piece in pieces for event in reader.receive(piece)]
        assert events[0] == "before"
        assert events[1:] == [Refusal(code, events[1].reason, fatal=True)]  # type: ignore[union-attr]
        assert reader.stopped
        assert reader.receive(after) == []


def _pieces(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    return [data[start:end] for start, end in pairwise(bounds)]


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 1012, 1013, 3000, 4999])
def test_the_peers_close_codes(code: int) -> None:
    frame = masked(CLOSE, code.to_bytes(2, "big") + "déjà".encode())
    assert read(frame + masked(TEXT, b"ignored")) == [Close(code, "déjà")]


def test_a_close_without_a_code_reads_as_1005() -> None:
    assert read(masked(CLOSE, b"")) == [Close(1005, "")]


def test_an_oversize_frame_is_refused_from_its_header_and_skipped() -> None:
    reader = FrameReader(1000)
    frame = masked(BINARY, bytes(5000))
    refusal = Refusal(1009, "messages are limited to 1000 bytes", fatal=False)
    assert reader.receive(frame[:4]) == [refusal]  # before any payload arrived
    for i in range(4, len(frame), 700):
        assert reader.receive(frame[i : i + 700]) == []
    assert not reader.stopped
    assert reader.receive(masked(CLOSE, b"\x03\xe8")) == [Close(1000, "")]


def test_an_oversize_fragmented_message_is_refused_and_its_other_frames_dropped() -> None:
    data = (
        masked(TEXT, b"a" * 600, fin=False)
        + masked(CONTINUATION, b"b" * 600, fin=False)  # 1200 > 1000: refused here
        + masked(PING, b"ping")  # a control frame is still read
        + masked(
            CONTINUATION, b"c" * 5000, fin=False
        )  # the same message: dropped, though over the limit
        + masked(CONTINUATION, b"d")
        + masked(BINARY, b"next")
    )
    for cuts in ((), range(0, len(data), 333)):
        events = read(data, cuts, limit=1000)
        assert events == [
            Refusal(1009, "messages are limited to 1000 bytes", fatal=False),
            Ping(b"ping"),
            b"next",
        ]


def test_a_message_at_the_limit_is_read() -> None:
    data = masked(TEXT, b"a" * 600, fin=False) + masked(CONTINUATION, b"b" * 400)
    assert read(data, limit=1000) == ["a" * 600 + "b" * 400]


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_tiny_fragments_cost_their_bytes_not_an_object_each(opcode: int) -> None:
    # 100,000 one-byte fragments and as many empty ones: the size limit stops neither. Kept as
    # an object each they held ~4 MB (and the empty ones grew the list without end).
    reader = FrameReader(1024 * 1024)
    one, empty = masked(CONTINUATION, b"a", fin=False), masked(CONTINUATION, b"", fin=False)
    assert reader.receive(masked(opcode, b"", fin=False)) == []
    tracemalloc.start()
    try:
        for _ in range(100):
            assert reader.receive((one + empty) * 1000) == []
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 512 * 1024
    message = reader.receive(masked(CONTINUATION, b"!"))
    assert message == ["a" * 100_000 + "!" if opcode == TEXT else b"a" * 100_000 + b"!"]


def test_a_character_split_between_fragments_is_read() -> None:
    data = masked(TEXT, b"ok\xc3", fin=False) + masked(CONTINUATION, b"\xa9")
    assert read(data, range(len(data))) == ["oké"]


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=0, max_value=500))
# A close frame with a 10-byte reason, cut short, under a limit of 0 (found by CI): control
# frames may carry 125 bytes whatever the message limit.
@example([b"\x88\x8a", bytes(11), b"\x00", b"\x00"], 0)
def test_any_bytes_give_events_or_a_refusal_never_an_exception(
    pieces: list[bytes], limit: int
) -> None:
    reader = FrameReader(limit)
    for piece in pieces:
        events = reader.receive(piece)
        for event in events:
            if isinstance(event, Refusal):
                assert event.code in (1002, 1007, 1009)
                assert event.fatal == (event.code != 1009)
            elif isinstance(event, str | bytes):
                assert len(event.encode() if isinstance(event, str) else event) <= limit
        # At most one frame is held: a header (14 bytes) and a payload of at most `limit`, or
        # of a control frame's 125.
        assert sum(map(len, reader._chunks)) <= 14 + max(limit, 125)
