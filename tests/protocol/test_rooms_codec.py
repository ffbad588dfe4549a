"""The app-room codec without sockets: client frames, the binary header both ways, server frames
read back by wsproto, and garbage that only ever raises FrameError."""

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.events import BytesMessage, TextMessage

from relay.protocol import rooms
from relay.protocol.rooms import ERRORS, Close, FrameError, Kind
from tests.protocol.test_wsframe import parse

client_ids = st.integers(1, rooms.MAX_CLIENT_ID)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(st.sampled_from(list(Kind)), client_ids, st.binary(max_size=300))
def test_binary_round_trip(kind: Kind, client_id: int, payload: bytes) -> None:
    data = rooms.encode_binary(kind, client_id, payload)
    assert len(data) == rooms.HEADER_BYTES + len(payload)
    got_kind, target, got_payload = rooms.decode_binary(data)
    assert (got_kind, got_payload) == (kind, payload)
    assert target == (client_id if kind is Kind.TARGET else 0)  # only TARGET names anyone
    assert rooms.decode_server_binary(data) == (kind, client_id, payload)


def test_binary_header_is_big_endian() -> None:
    assert rooms.encode_binary(Kind.TARGET, 0x01020304, b"x") == b"\x02\x01\x02\x03\x04x"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00\x00\x00",
        b"\x00\x00\x00\x00\x01",
        b"\x04\x00\x00\x00\x01",
        b"\x02" + bytes(4),
    ],
    ids=["empty", "short", "kind 0", "kind 4", "target 0"],
)
def test_bad_binary_headers(data: bytes) -> None:
    with pytest.raises(FrameError):
        rooms.decode_binary(data)


@given(st.binary(max_size=64))
def test_random_binary_decodes_or_raises_frame_error(data: bytes) -> None:
    error: FrameError | None = None
    try:
        kind, _, payload = rooms.decode_binary(data)
    except FrameError as e:
        error = e
    if error is None:
        assert kind in Kind
        assert payload == data[5:]
    else:
        assert (error.code, error.close) == ("invalid_frame", Close.INVALID_FRAME)


@given(json_values, client_ids)
def test_text_frames_keep_data_byte_for_byte(value: object, to: int) -> None:
    data = json.dumps(value, separators=(" ,", ": "))  # odd spacing must survive untouched
    frame = rooms.decode_text(f'{{"type": "target", "to": {to}, "data": {data}}}')
    assert isinstance(frame, rooms.Target)
    assert frame.to == to
    assert bytes(frame.data) == data.encode()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"type":"connect","room_id":"1","secret":"s"}', rooms.Connect),
        ('{"type":"reconnect","room_id":"1","client_id":2,"client_secret":"c"}', rooms.Reconnect),
        ('{"type":"broadcast","data":null}', rooms.Broadcast),
        ('{"type":"host","data":[1]}', rooms.ToHost),
        ('{"type":"list"}', rooms.ListMembers),
        ('{"type":"kick","client_id":3,"reason":"spam"}', rooms.Kick),
        ('{"type":"grant_host","client_id":3}', rooms.GrantHost),
        ('{"type":"leave"}', rooms.Leave),
    ],
)
def test_every_client_frame_decodes(text: str, kind: type[object]) -> None:
    assert isinstance(rooms.decode_text(text), kind)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "[]",
        '{"type":"shout","data":1}',
        '{"data":1}',
        '{"type":"broadcast"}',
        '{"type":"broadcast","data":1,"from":7}',  # a client cannot name the sender
        '{"type":"target","to":0,"data":1}',
        '{"type":"target","to":4294967296,"data":1}',
        '{"type":"kick","client_id":"3"}',
        '{"type":"connect","room_id":"1","secret":""}',
        '{"type":"broadcast","data":' + "[" * 5000 + "]" * 5000 + "}",
        '{"type":"broadcast","data":\xff}',
    ],
)
def test_bad_text_frames(text: str) -> None:
    with pytest.raises(FrameError):
        rooms.decode_text(text)


@given(st.text(max_size=80) | st.binary(max_size=80))
def test_random_text_decodes_or_raises_frame_error(data: str | bytes) -> None:
    with contextlib.suppress(FrameError):
        rooms.decode_text(data)


def test_relayed_text_frame_stamps_the_sender() -> None:
    frame = rooms.relay_text_frame(Kind.BROADCAST, 42, b'{"a": [1, 2]}')
    (message,) = parse(frame)
    assert isinstance(message, TextMessage)
    assert json.loads(message.data) == {"type": "broadcast", "from": 42, "data": {"a": [1, 2]}}


def test_relayed_binary_frame_stamps_the_sender() -> None:
    (message,) = parse(rooms.relay_binary_frame(Kind.HOST, 7, b"\x00payload"))
    assert isinstance(message, BytesMessage)
    assert rooms.decode_server_binary(bytes(message.data)) == (Kind.HOST, 7, b"\x00payload")


def test_event_frames_are_json_with_their_type() -> None:
    event = rooms.Connected(
        room_id="9",
        client_id=1,
        client_secret="s",
        host_id=1,
        protocol="peer",
        max_clients=4,
        metadata=msgspec.Raw(b'{"map":"x"}'),
        members=[rooms.MemberInfo(client_id=1, connected=True)],
    )
    (message,) = parse(rooms.event_frame(event))
    assert isinstance(message, TextMessage)
    decoded = json.loads(message.data)
    assert decoded["type"] == "connected"
    assert decoded["metadata"] == {"map": "x"}
    assert decoded["members"] == [{"client_id": 1, "connected": True}]


def test_every_fatal_error_has_a_close_code_in_range() -> None:
    for code, close in ERRORS.items():
        assert code.islower()
        if close is not None:
            assert close == rooms.MESSAGE_TOO_BIG or 4000 <= close <= 4999
