"""The chat gateway codec without sockets: MESSAGE_SEND (op 12) decoded from JSON and msgpack,
malformed sends refused with the decode-error code, garbage that only ever raises FrameError,
MESSAGE_SEND_ACK (op 13) and dispatch frames read back, and IDENTIFY's intents (a mask, or
4013) with the intent bits of every event as docs/gateway.md lists them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.events import BytesMessage, TextMessage

from relay.protocol import gateway
from relay.protocol.gateway import (
    ALL_INTENTS,
    ALWAYS_INTENT,
    Close,
    FrameError,
    Identify,
    IdentifyData,
    Intent,
    MessageSend,
    MessageSendData,
    Op,
    SendAck,
    SendError,
)
from tests.protocol.test_wsframe import parse

ROOT = Path(__file__).resolve().parents[2]

ids = st.text(min_size=1, max_size=20)
nonces = st.text(min_size=1, max_size=25)
sends = st.builds(
    MessageSendData,
    channel_id=ids,
    content=st.text(max_size=300),
    nonce=nonces,
    reply_to=st.none() | ids,
)
encodings = st.sampled_from(["json", "msgpack"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


def encode(envelope: dict[str, Any], encoding: str) -> str | bytes:
    if encoding == "msgpack":
        return msgspec.msgpack.encode(envelope)
    return json.dumps(envelope)


def decode_error(data: str | bytes, encoding: str) -> FrameError:
    with pytest.raises(FrameError) as caught:
        gateway.decode_client(data, encoding)
    return caught.value


@given(sends, encodings, st.booleans())
def test_send_round_trip(d: MessageSendData, encoding: str, envelope_nulls: bool) -> None:
    envelope: dict[str, Any] = {"op": 12, "d": msgspec.to_builtins(d)}
    if d.reply_to is None and envelope_nulls:
        del envelope["d"]["reply_to"]  # optional: absent is null
    if envelope_nulls:
        envelope.update(s=None, t=None)  # clients may echo the envelope's other keys
    frame = gateway.decode_client(encode(envelope, encoding), encoding)
    assert frame == MessageSend(d=d)


@pytest.mark.parametrize(
    "d",
    [
        None,
        [],
        "hi",
        {},
        {"channel_id": "1", "content": "x"},
        {"channel_id": "1", "content": "x", "nonce": ""},
        {"channel_id": "1", "content": "x", "nonce": "n" * 26},
        {"channel_id": "1", "content": "x", "nonce": 7},
        {"channel_id": "", "content": "x", "nonce": "n"},
        {"channel_id": "1" * 21, "content": "x", "nonce": "n"},
        {"channel_id": 1, "content": "x", "nonce": "n"},
        {"channel_id": "1", "content": 1, "nonce": "n"},
        {"channel_id": "1", "content": "x", "nonce": "n", "reply_to": ""},
        {"channel_id": "1", "content": "x", "nonce": "n", "reply_to": 5},
        {"channel_id": "1", "content": "x", "nonce": "n", "tts": False},
    ],
)
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_malformed_sends_are_decode_errors(d: Any, encoding: str) -> None:
    error = decode_error(encode({"op": 12, "d": d}, encoding), encoding)
    assert error.code is Close.DECODE_ERROR


@given(json_values, encodings)
def test_any_d_decodes_to_a_valid_send_or_a_decode_error(d: Any, encoding: str) -> None:
    data = encode({"op": 12, "d": d}, encoding)
    error: FrameError | None = None
    try:
        frame = gateway.decode_client(data, encoding)
    except FrameError as e:
        error = e
    if error is not None:
        assert error.code is Close.DECODE_ERROR
        return
    assert isinstance(frame, MessageSend)
    assert 1 <= len(frame.d.nonce) <= 25
    assert 1 <= len(frame.d.channel_id) <= 20


@given(st.binary(max_size=80) | st.text(max_size=80), encodings)
def test_garbage_only_raises_frame_error(data: str | bytes, encoding: str) -> None:
    error: FrameError | None = None
    try:
        gateway.decode_client(data, encoding)
    except FrameError as e:
        error = e
    assert error is None or error.code in (Close.DECODE_ERROR, Close.UNKNOWN_OPCODE)


DEEP = 1000  # msgspec raises RecursionError (neither of its own errors) well before this


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        ('{"a":' * DEEP + "1" + "}" * DEEP, "json"),  # objects nested 1000 deep, 6 KB
        ('{"d":' + "[" * DEEP + "]" * DEEP + ',"op":1}', "json"),  # skipped to find the op
        (b"\x81\xa1a" * DEEP + b"\x01", "msgpack"),  # the same as fixmaps {"a": ...}
        (b"\x82\xa1d" + b"\x91" * DEEP + b"\x01\xa2op\x01", "msgpack"),
    ],
)
def test_deeply_nested_frames_are_decode_errors(data: str | bytes, encoding: str) -> None:
    error = decode_error(data, encoding)
    assert error.code is Close.DECODE_ERROR
    assert "nested too deeply" in str(error)


def test_the_ack_op_is_not_a_client_op() -> None:
    error = decode_error('{"op": 13, "d": {"nonce": "n"}}', "json")
    assert error.code is Close.UNKNOWN_OPCODE
    assert (Op.MESSAGE_SEND, Op.MESSAGE_SEND_ACK) == (12, 13)


errors = st.builds(
    SendError,
    code=st.from_regex(r"[a-z_]{1,24}", fullmatch=True),
    message=st.text(max_size=60),
    fields=st.none() | st.dictionaries(st.text(max_size=10), st.text(max_size=20), min_size=1),
    retry_after=st.none() | st.floats(0, 86_400, allow_nan=False),
)
acks = st.builds(SendAck, nonce=nonces, id=ids, channel_id=ids) | st.builds(
    SendAck, nonce=nonces, error=errors
)


@given(acks, encodings)
def test_acks_read_back(ack: SendAck, encoding: str) -> None:
    data = gateway.encode_send_ack(ack, encoding)
    frame = msgspec.msgpack.decode(data) if encoding == "msgpack" else json.loads(data)
    assert set(frame) == {"op", "d", "s", "t"}
    assert (frame["op"], frame["s"], frame["t"]) == (13, None, None)
    d = frame["d"]
    assert d["nonce"] == ack.nonce
    if ack.error is None:
        assert d == {"nonce": ack.nonce, "id": ack.id, "channel_id": ack.channel_id}
        return
    assert set(d) == {"nonce", "error"}  # absent parts are left out, not null
    error = d["error"]
    assert (error["code"], error["message"]) == (ack.error.code, ack.error.message)
    assert error.get("fields") == ack.error.fields
    assert error.get("retry_after") == ack.error.retry_after


# -- IDENTIFY's intents ---------------------------------------------------------------------------

intent_masks = st.integers(0, ALL_INTENTS)


@given(st.none() | intent_masks, encodings, st.booleans())
def test_identify_intents_round_trip(intents: int | None, encoding: str, absent: bool) -> None:
    d: dict[str, Any] = {"token": "t", "intents": intents}
    if intents is None and absent:
        del d["intents"]  # absent and null are the same: every event
    frame = gateway.decode_client(encode({"op": 2, "d": d}, encoding), encoding)
    assert frame == Identify(d=IdentifyData(token="t", intents=intents))


@given(
    st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)  # json.dumps(inf) is not JSON
    | st.booleans()
    | st.text(max_size=4)
    | st.lists(st.integers(0, 3), max_size=2),
    encodings,
)
def test_any_intents_value_is_a_mask_or_4013(value: Any, encoding: str) -> None:
    data = encode({"op": 2, "d": {"token": "t", "intents": value}}, encoding)
    error: FrameError | None = None
    try:
        frame = gateway.decode_client(data, encoding)
    except FrameError as e:
        error = e
    if error is not None:
        assert error.code is Close.INVALID_INTENTS
        assert not (type(value) is int and 0 <= value <= ALL_INTENTS)
        return
    assert isinstance(frame, Identify)
    assert type(value) is int
    assert frame.d.intents == value
    assert 0 <= value <= ALL_INTENTS


@pytest.mark.parametrize("value", [2**70, -(2**70)])
def test_intents_beyond_64_bits_are_4013(value: int) -> None:
    data = json.dumps({"op": 2, "d": {"token": "t", "intents": value}})
    assert decode_error(data, "json").code is Close.INVALID_INTENTS


def test_other_identify_errors_stay_decode_errors() -> None:
    data = json.dumps({"op": 2, "d": {"token": "", "intents": 1}})
    assert decode_error(data, "json").code is Close.DECODE_ERROR


def test_intent_bits() -> None:
    assert [int(i) for i in Intent] == [1, 2, 4, 8, 16, 32]
    assert ALL_INTENTS == 63
    assert ALWAYS_INTENT & ALL_INTENTS == 0  # no client can ask for (or refuse) READY


@given(
    json_values,
    st.lists(st.tuples(st.integers(1, 2**63 - 1), encodings), min_size=1, max_size=8),
)
def test_event_frames_read_back_for_any_seq_and_encoding(
    d: Any, frames: list[tuple[int, str]]
) -> None:
    """One event framed for sessions whose seqs have different lengths, in either encoding
    (the parts are cached per seq length): each frame is one whole WebSocket frame of the
    right type holding the envelope with that session's seq."""
    event = gateway.Event("MESSAGE_CREATE", d)
    for seq, encoding in frames:
        [message] = parse(event.frame(seq, encoding))
        assert isinstance(message, BytesMessage | TextMessage)
        assert message.message_finished
        if isinstance(message, BytesMessage):
            assert encoding == "msgpack"
            envelope = msgspec.msgpack.decode(bytes(message.data))
        else:
            assert encoding == "json"
            envelope = json.loads(message.data)
        assert envelope == {"op": 0, "s": seq, "t": "MESSAGE_CREATE", "d": d}
