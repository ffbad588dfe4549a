"""Frames built by relay.protocol.wsframe, read back by wsproto's client side: every length class
(7, 16 and 64-bit), text and binary, control frames and close codes."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from relay.protocol import wsframe
from relay.protocol.wsframe import Opcode


def open_client() -> WSConnection:
    """A wsproto client that finished its opening handshake with a wsproto server."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="relay.test", target="/")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    return client


def parse(data: bytes, *, cuts: list[int] | None = None) -> list[Event]:
    """Feed `data` to a fresh client (cut at the `cuts` offsets, if given); merge message parts."""
    client = open_client()
    bounds = sorted({0, len(data), *(c for c in cuts or [] if c < len(data))})
    pieces = [data[start:end] for start, end in pairwise(bounds)]
    events: list[Event] = []
    for piece in pieces:
        client.receive_data(piece)
        events.extend(client.events())
    merged: list[Event] = []
    for event in events:
        previous = merged[-1] if merged else None
        if isinstance(previous, TextMessage | BytesMessage) and not previous.message_finished:
            if isinstance(previous, TextMessage) and isinstance(event, TextMessage):
                merged[-1] = TextMessage(previous.data + event.data, True, event.message_finished)
            elif isinstance(previous, BytesMessage) and isinstance(event, BytesMessage):
                data = bytes(previous.data) + bytes(event.data)
                merged[-1] = BytesMessage(data, True, event.message_finished)
        else:
            merged.append(event)
    return merged


def repeated(length: int, pattern: bytes) -> bytes:
    return (pattern * (length // len(pattern) + 1))[:length]


# Lengths on both sides of each boundary of the three length encodings, and random ones.
BOUNDARIES = [0, 1, 125, 126, 127, 65535, 65536, 65537]
lengths = st.one_of(st.sampled_from(BOUNDARIES), st.integers(0, 300), st.integers(65_000, 70_000))
payloads = st.builds(repeated, lengths, st.binary(min_size=1, max_size=8))


def expected_length_field(length: int) -> int:
    return length if length <= 125 else 126 if length <= 0xFFFF else 127


@given(payloads)
def test_binary_frames_round_trip(payload: bytes) -> None:
    data = wsframe.binary_frame(payload)
    assert data[0] == 0x82  # FIN, no RSV bits, binary
    assert data[1] == expected_length_field(len(payload))  # unmasked, smallest length class
    assert parse(data) == [BytesMessage(data=payload)]


@given(st.text(), st.integers(0, 3000))
def test_text_frames_round_trip(text: str, repeat: int) -> None:
    text = text * repeat if len(text) * repeat <= 80_000 else text
    data = wsframe.text_frame(text)
    assert data[0] == 0x81
    assert data[1] == expected_length_field(len(text.encode()))
    assert parse(data) == [TextMessage(data=text)]


@given(payloads, st.lists(st.integers(1, 70_100), max_size=20))
def test_frames_parse_when_split_anywhere(payload: bytes, cuts: list[int]) -> None:
    assert parse(wsframe.binary_frame(payload), cuts=cuts) == [BytesMessage(data=payload)]


@given(st.lists(payloads, min_size=2, max_size=5))
def test_joined_frames_parse_as_separate_messages(messages: list[bytes]) -> None:
    """The writer joins queued frames into one write; they must still be separate messages."""
    data = b"".join(wsframe.binary_frame(m) for m in messages)
    assert parse(data) == [BytesMessage(data=m) for m in messages]


@given(st.binary(max_size=125))
def test_ping_and_pong(payload: bytes) -> None:
    assert parse(wsframe.ping_frame(payload)) == [Ping(payload=payload)]
    assert parse(wsframe.pong_frame(payload)) == [Pong(payload=payload)]


@given(
    st.one_of(
        st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013]),
        st.integers(3000, 4999),
    ),
    st.text(max_size=200),
)
def test_close_frame_code_and_reason(code: int, reason: str) -> None:
    data = wsframe.close_frame(code, reason)
    assert len(data) <= 2 + 125
    [event] = parse(data)
    assert isinstance(event, CloseConnection)
    assert event.code == code
    assert event.reason is not None
    assert reason.startswith(event.reason)  # cut at a character boundary, never mangled
    assert len(event.reason.encode()) <= 123
    if len(reason.encode()) <= 123:
        assert event.reason == reason


def test_close_frame_without_code() -> None:
    assert wsframe.close_frame(None) == b"\x88\x00"
    assert parse(wsframe.close_frame(None)) == [CloseConnection(code=1005, reason="")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_close_frame_refuses_codes_a_peer_would_reject(code: int) -> None:
    with pytest.raises(ValueError, match="not a close code"):
        wsframe.close_frame(code)


def test_close_reason_needs_a_code() -> None:
    with pytest.raises(ValueError, match="needs a close code"):
        wsframe.close_frame(None, "bye")


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frames_are_at_most_125_bytes(opcode: Opcode) -> None:
    assert len(wsframe.frame(opcode, bytes(125))) == 127
    with pytest.raises(ValueError, match="at most 125 bytes"):
        wsframe.frame(opcode, bytes(126))


def test_length_encodings_are_exact() -> None:
    assert wsframe.binary_frame(bytes(126))[:4] == b"\x82\x7e\x00\x7e"
    assert wsframe.binary_frame(bytes(65536))[:10] == b"\x82\x7f" + (65536).to_bytes(8, "big")
