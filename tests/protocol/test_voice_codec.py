"""The voice connection's control frames: every client op decodes, bad ones raise the close
code to use, and arbitrary input never raises anything else (hypothesis)."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.protocol.voice import (
    Heartbeat,
    Identify,
    SelectProtocol,
    Speaking,
    VoiceClose,
    VoiceFrameError,
    VoiceOp,
    decode_voice,
    encode_voice,
)


def test_client_ops_decode() -> None:
    identify = {"server_id": "1", "user_id": "2", "session_id": "s", "token": "t"}
    assert isinstance(decode_voice(msgspec.json.encode({"op": 0, "d": identify})), Identify)
    frame = decode_voice('{"op": 1, "d": {"protocol": "websocket"}}')
    assert isinstance(frame, SelectProtocol)
    assert frame.d.protocol == "websocket"
    assert isinstance(decode_voice('{"op": 3, "d": 5}'), Heartbeat)
    assert isinstance(decode_voice('{"op": 5, "d": {"speaking": 1}}'), Speaking)
    assert encode_voice(VoiceOp.HEARTBEAT_ACK, 5) == b'{"op":6,"d":5}'


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"op": 2, "d": {}}', VoiceClose.UNKNOWN_OPCODE),
        ('{"op": 99, "d": {}}', VoiceClose.UNKNOWN_OPCODE),
        ('{"op": 1, "d": {"protocol": "tcp"}}', VoiceClose.DECODE_ERROR),
        ('{"op": 0, "d": {"server_id": "x"}}', VoiceClose.DECODE_ERROR),
        ("[" * 10_000, VoiceClose.DECODE_ERROR),
        ("not json", VoiceClose.DECODE_ERROR),
    ],
)
def test_bad_frames_say_their_close_code(text: str, code: VoiceClose) -> None:
    with pytest.raises(VoiceFrameError) as refused:
        decode_voice(text)
    assert refused.value.code == code


@settings(max_examples=200)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_raises_only_frame_errors(data: str | bytes) -> None:
    with contextlib.suppress(VoiceFrameError):
        decode_voice(data)
