"""The voice connection's control protocol (`/v1/voice`, docs/voice.md), sans-I/O: opcodes,
close codes and client frames, shaped like Discord's voice gateway.

Control frames are JSON text messages `{"op": int, "d": ...}`. Binary messages on the same
WebSocket are media (RTP packets, relay.protocol.rtp) once the client selected the
`websocket` protocol.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import msgspec

from relay.protocol.rtp import MODE


class VoiceOp(enum.IntEnum):
    IDENTIFY = 0
    SELECT_PROTOCOL = 1
    READY = 2
    HEARTBEAT = 3
    SESSION_DESCRIPTION = 4
    SPEAKING = 5
    HEARTBEAT_ACK = 6
    RESUME = 7
    HELLO = 8
    RESUMED = 9
    CLIENT_CONNECT = 11
    SOURCES = 12  # a member's video sources (camera, screen, app)
    CLIENT_DISCONNECT = 13
    SELECT_SOURCES = 15  # the video sources a receiver wants
    E2EE_KEY = 20  # a member's public key for end-to-end encryption, relayed unread
    E2EE_SEALED = 21  # media keys sealed to each member, each delivered to its member only


class VoiceClose(enum.IntEnum):
    """Voice connection close codes (docs/voice.md)."""

    UNKNOWN_OPCODE = 4001
    DECODE_ERROR = 4002
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004  # unknown, used, expired or mismatched token
    ALREADY_AUTHENTICATED = 4005
    SESSION_NO_LONGER_VALID = 4006  # RESUME of a voice session that is gone
    RATE_LIMITED = 4008  # too many control frames
    SESSION_TIMEOUT = 4009  # no heartbeat in time
    UNKNOWN_PROTOCOL = 4012  # SELECT_PROTOCOL with a protocol or address the server refuses
    DISCONNECTED = 4014  # the voice state ended: left, moved, kicked, disconnected by a mod
    VOICE_SERVER_CRASHED = 4015  # the channel's voice actor restarted: IDENTIFY again
    UNKNOWN_ENCRYPTION_MODE = 4016
    CHANNEL_FULL = 4017  # voice_max_members_per_channel connections already
    SOURCE_NOT_PERMITTED = 4018  # a camera without VIDEO, a screen or app without STREAM
    E2EE_REQUIRED = 4019  # the channel requires E2EE: SELECT_PROTOCOL without `e2ee: true`
    VOICE_SERVER_MOVED = 4020  # cluster: another node serves the channel now; op 4 again


Snowflake = Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=r"^[0-9]+$")]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
SessionId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class _Frame(msgspec.Struct, tag_field="op", frozen=True, forbid_unknown_fields=True):
    pass


class IdentifyData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server_id: Snowflake
    user_id: Snowflake
    session_id: SessionId
    token: Token


class Identify(_Frame, tag=int(VoiceOp.IDENTIFY), frozen=True):
    d: IdentifyData


class ProtocolData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    mode: str = MODE
    address: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # udp: from discovery
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    e2ee: bool = False  # media payloads are end-to-end encrypted (ops 20, 21)


class SelectProtocolData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    protocol: Literal["udp", "websocket"]
    data: ProtocolData = ProtocolData()


class SelectProtocol(_Frame, tag=int(VoiceOp.SELECT_PROTOCOL), frozen=True):
    d: SelectProtocolData


class Heartbeat(_Frame, tag=int(VoiceOp.HEARTBEAT), frozen=True):
    d: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None  # a nonce, echoed by the ack


class SpeakingData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    speaking: Annotated[int, msgspec.Meta(ge=0, le=7)]  # bit 0 voice, 1 soundshare, 2 priority
    delay: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    ssrc: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)] | None = None


class Speaking(_Frame, tag=int(VoiceOp.SPEAKING), frozen=True):
    d: SpeakingData


class ResumeData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server_id: Snowflake
    session_id: SessionId
    token: Token


class Resume(_Frame, tag=int(VoiceOp.RESUME), frozen=True):
    d: ResumeData


SourceType = Literal["camera", "screen", "app"]
MAX_SOURCES = 4  # video sources per member


class SourceIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: SourceType


class SourcesData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sources: Annotated[list[SourceIn], msgspec.Meta(max_length=MAX_SOURCES)]


class Sources(_Frame, tag=int(VoiceOp.SOURCES), frozen=True):
    d: SourcesData


Ssrc = Annotated[int, msgspec.Meta(ge=1, le=0xFFFFFFFF)]


class SelectSourcesData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ssrcs: Annotated[list[Ssrc], msgspec.Meta(max_length=64)]


class SelectSources(_Frame, tag=int(VoiceOp.SELECT_SOURCES), frozen=True):
    d: SelectSourcesData


Opaque = Annotated[str, msgspec.Meta(max_length=512)]  # base64 of what the server never reads


class E2eeKeyData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    public_key: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]  # X25519, base64
    signature: Annotated[str, msgspec.Meta(max_length=128)] | None = None  # Ed25519, base64


class E2eeKey(_Frame, tag=int(VoiceOp.E2EE_KEY), frozen=True):
    d: E2eeKeyData


class E2eeSealedData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    epoch: Annotated[int, msgspec.Meta(ge=0, le=2**32)]
    keys: Annotated[dict[Snowflake, Opaque], msgspec.Meta(max_length=100)]  # user id -> sealed


class E2eeSealed(_Frame, tag=int(VoiceOp.E2EE_SEALED), frozen=True):
    d: E2eeSealedData


VoiceClientFrame = (
    Identify
    | SelectProtocol
    | Heartbeat
    | Speaking
    | Resume
    | Sources
    | SelectSources
    | E2eeKey
    | E2eeSealed
)


class VoiceFrameError(Exception):
    def __init__(self, code: VoiceClose, message: str) -> None:
        super().__init__(message)
        self.code = code


_decoder = msgspec.json.Decoder(VoiceClientFrame)
_encoder = msgspec.json.Encoder()
_KNOWN = {int(op) for op in VoiceOp}


def decode_voice(data: str | bytes) -> VoiceClientFrame:
    """One client control frame. Raises VoiceFrameError(UNKNOWN_OPCODE | DECODE_ERROR)."""
    try:
        frame: VoiceClientFrame = _decoder.decode(data)
        return frame
    except msgspec.ValidationError as e:
        message = str(e)
        if message.endswith("- at `$.op`") and message.startswith("Invalid value"):
            op = message.split()[2]
            known = op.isdigit() and int(op) in _KNOWN
            reason = "not a client opcode" if known else "unknown"
            raise VoiceFrameError(VoiceClose.UNKNOWN_OPCODE, f"op {op}: {reason}") from None
        raise VoiceFrameError(VoiceClose.DECODE_ERROR, message[:200]) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        raise VoiceFrameError(VoiceClose.DECODE_ERROR, f"not a valid frame: {e}"[:200]) from None


def encode_voice(op: VoiceOp, d: Any) -> bytes:
    """A server control frame `{"op", "d"}` as JSON bytes (sent as a text message)."""
    return _encoder.encode({"op": int(op), "d": d})
