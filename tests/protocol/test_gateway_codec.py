"""The chat gateway codec without sockets: MESSAGE_SEND (op 12) decoded from JSON and msgpack,
malformed sends refused with the decode-error code, garbage that only ever raises FrameError,
and MESSAGE_SEND_ACK (op 13) frames read back."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.protocol import gateway
from relay.protocol.gateway import (
    Close,
    FrameError,
    MessageSend,
    MessageSendData,
    Op,
    SendAck,
    SendError,
)

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
