"""The chat gateway's wire protocol (DESIGN §4), sans-I/O: opcodes, close codes, client frames
and the framing of server events.

Envelope: `{"op": int, "d": ..., "s": int | null, "t": str | null}` as JSON text frames, or the
same map as msgpack binary frames (`?encoding=msgpack`). A dispatched event's payload `d` is
encoded once per encoding (`Event`); each session then splices its own sequence number in front
of those bytes (`Event.frame`), so fan-out never re-encodes. A client posts a message with
MESSAGE_SEND (op 12, `MessageSend`); the server answers each one with MESSAGE_SEND_ACK (op 13,
`SendAck`) once it is committed or refused.

Intents: IDENTIFY may carry `intents`, a bitmask of `Intent`s, the classes of events the session
wants (absent: all). Each Event carries its own bits (`Event.intent`, given by the chat layer's
event classes, relay.chat.events); a session skips an event whose bits it does not share. READY
and RESUMED carry `ALWAYS_INTENT`, a bit no client may send that every session has.
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, Any, Literal

import msgspec

from relay.protocol import wsframe

# -- opcodes and close codes ---------------------------------------------------------------------


class Op(enum.IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11
    MESSAGE_SEND = 12
    MESSAGE_SEND_ACK = 13


class Close(enum.IntEnum):
    """Gateway close codes. Documented in docs/gateway.md; clients act on them."""

    UNKNOWN_OPCODE = 4001  # an op the server does not take from clients
    DECODE_ERROR = 4002  # a frame that is not a valid envelope for its op
    NOT_AUTHENTICATED = 4003  # anything but IDENTIFY/RESUME/HEARTBEAT before READY
    AUTHENTICATION_FAILED = 4004  # bad, expired or revoked token
    ALREADY_AUTHENTICATED = 4005  # a second IDENTIFY or RESUME
    INVALID_SEQ = 4007  # RESUME with a seq the session never sent
    RATE_LIMITED = 4008  # too many frames per window
    SESSION_TIMED_OUT = 4009  # no heartbeat within interval + grace
    SLOW_CONSUMER = 4010  # the outbox filled up; RESUME to get what was missed
    TOO_MANY_SESSIONS = 4011  # IDENTIFY while the user has max_sessions_per_user connected
    INVALID_ENCODING = 4012  # ?encoding= other than json or msgpack
    INVALID_INTENTS = 4013  # IDENTIFY's intents: not an integer, negative, or unknown bits
    RESYNC = 4014  # cluster mode: this node fell behind the broker; the session ended


class Intent(enum.IntFlag):
    """IDENTIFY's `intents` bits: the classes of events a session receives (docs/gateway.md)."""

    SERVERS = 1 << 0  # SERVER_*, ROLE_*, CHANNEL_CREATE/UPDATE/DELETE of server channels
    SERVER_MEMBERS = 1 << 1  # MEMBER_ADD/UPDATE/REMOVE
    SERVER_MESSAGES = 1 << 2  # MESSAGE_*, reactions, CHANNEL_PINS_UPDATE in server channels
    MESSAGE_TYPING = 1 << 3  # TYPING_START, in server channels and DMs
    PRESENCES = 1 << 4  # PRESENCE_UPDATE
    DIRECT_MESSAGES = 1 << 5  # the message events of DMs, and a new DM's CHANNEL_CREATE


ALL_INTENTS = int(sum(Intent))  # what a session without `intents` gets: everything
# Every session has this bit and no client may ask for it: READY and RESUMED carry it. Below 256,
# so every session's mask is one of CPython's cached small ints (nothing allocated per session).
ALWAYS_INTENT = 1 << 7
assert ALL_INTENTS < ALWAYS_INTENT

# -- client frames -------------------------------------------------------------------------------

Token = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
SessionId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class _Frame(msgspec.Struct, tag_field="op", frozen=True, forbid_unknown_fields=True, kw_only=True):
    # Clients often echo the envelope's other keys as null; accept and ignore them.
    s: int | None = None
    t: str | None = None


class Heartbeat(_Frame, tag=int(Op.HEARTBEAT), frozen=True):
    d: int | None = None  # the last sequence number the client saw


Intents = Annotated[int, msgspec.Meta(ge=0, le=ALL_INTENTS)]


class IdentifyData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: Token
    properties: dict[str, str] | None = None
    intents: Intents | None = None  # absent or null: every event (ALL_INTENTS)


class Identify(_Frame, tag=int(Op.IDENTIFY), frozen=True):
    d: IdentifyData


Status = Literal["online", "idle", "dnd", "invisible"]


class PresenceData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: Status
    activity: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class PresenceUpdate(_Frame, tag=int(Op.PRESENCE_UPDATE), frozen=True):
    d: PresenceData


class ResumeData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: Token
    session_id: SessionId
    seq: Annotated[int, msgspec.Meta(ge=0)]


class Resume(_Frame, tag=int(Op.RESUME), frozen=True):
    d: ResumeData


# Only the shape is checked here: a malformed send is a protocol error (the client cannot be
# answered without its nonce). What REST would refuse (empty or over-long content, an unknown
# channel, a reply_to that is no id) is the send's own error, answered with MESSAGE_SEND_ACK.
IdText = Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
Nonce = Annotated[str, msgspec.Meta(min_length=1, max_length=25)]


class AllowedMentionsData(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """REST's `allowed_mentions` (relay.chat.commands.AllowedMentions), for op 12."""

    parse: Annotated[list[Literal["users", "roles", "everyone"]], msgspec.Meta(max_length=3)] = []
    users: Annotated[list[IdText], msgspec.Meta(max_length=100)] = []
    roles: Annotated[list[IdText], msgspec.Meta(max_length=100)] = []
    replied_user: bool = False


class UploadRefData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An upload (REST's two-phase `POST /v1/api/channels/{id}/attachments`) a send claims."""

    id: IdText


class MessageSendData(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    channel_id: IdText
    content: str  # may be empty with attachments
    nonce: Nonce
    reply_to: IdText | None = None
    flags: Annotated[int, msgspec.Meta(ge=0, le=(1 << 31) - 1)] = 0  # SUPPRESS_EMBEDS (4) or 0
    allowed_mentions: AllowedMentionsData | None = None
    attachments: Annotated[list[UploadRefData], msgspec.Meta(max_length=10)] = []


class MessageSend(_Frame, tag=int(Op.MESSAGE_SEND), frozen=True):
    d: MessageSendData


class VoiceStateData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server_id: IdText
    channel_id: IdText | None = None  # None: leave voice in this server
    self_mute: bool = False
    self_deaf: bool = False


class VoiceStateUpdate(_Frame, tag=int(Op.VOICE_STATE_UPDATE), frozen=True):
    d: VoiceStateData


ClientFrame = Heartbeat | Identify | PresenceUpdate | Resume | MessageSend | VoiceStateUpdate


class FrameError(Exception):
    """A client frame the gateway refuses; `code` is the close code to use."""

    def __init__(self, code: Close, message: str) -> None:
        super().__init__(message)
        self.code = code


_json_decoder = msgspec.json.Decoder(ClientFrame)
_msgpack_decoder = msgspec.msgpack.Decoder(ClientFrame)
_KNOWN_OPS = {int(op) for op in Op}


def decode_client(data: str | bytes, encoding: str) -> ClientFrame:
    """Decode one client frame. Raises FrameError(UNKNOWN_OPCODE | DECODE_ERROR)."""
    try:
        if encoding == "msgpack":
            if isinstance(data, str):
                raise FrameError(Close.DECODE_ERROR, "msgpack encoding takes binary frames")
            frame: ClientFrame = _msgpack_decoder.decode(data)
        else:
            frame = _json_decoder.decode(data)
        return frame
    except msgspec.ValidationError as e:
        message = str(e)
        if message.endswith("- at `$.op`") and message.startswith("Invalid value"):
            op = message.split()[2]
            reason = "not a client opcode" if op.isdigit() and int(op) in _KNOWN_OPS else "unknown"
            raise FrameError(Close.UNKNOWN_OPCODE, f"op {op}: {reason}") from None
        if message.endswith("- at `$.d.intents`"):  # only IDENTIFY has it
            raise FrameError(Close.INVALID_INTENTS, message) from None
        raise FrameError(Close.DECODE_ERROR, message) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise FrameError(Close.DECODE_ERROR, f"not a valid frame: {e}") from None
    except RecursionError:  # msgspec's answer to nesting past the recursion limit, either encoding
        raise FrameError(Close.DECODE_ERROR, "not a valid frame: nested too deeply") from None


# -- server frames -------------------------------------------------------------------------------

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


def encode_control(op: Op, d: Any, encoding: str) -> bytes:
    """A non-dispatch server frame: {"op", "d", "s": null, "t": null}."""
    envelope = {"op": int(op), "d": d, "s": None, "t": None}
    return _msgpack.encode(envelope) if encoding == "msgpack" else _json.encode(envelope)


class SendError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Why a MESSAGE_SEND failed: REST's error object, plus `retry_after` (seconds) when
    waiting helps (`rate_limited`, `slowmode`)."""

    code: str
    message: str
    fields: dict[str, str] | None = None
    retry_after: float | None = None


class SendAck(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """MESSAGE_SEND_ACK's `d`: `id` and `channel_id` of the committed message, or `error`."""

    nonce: str
    id: str | None = None
    channel_id: str | None = None
    error: SendError | None = None


def encode_send_ack(ack: SendAck, encoding: str) -> bytes:
    """The MESSAGE_SEND_ACK frame (op 13) for one send."""
    return encode_control(Op.MESSAGE_SEND_ACK, ack, encoding)


class Event:
    """One dispatched event: its payload is encoded at most once per encoding, on first use.

    `intent`: the intent bits that receive it (any one of them is enough)."""

    __slots__ = ("_parts", "at", "d", "intent", "t")

    def __init__(self, t: str, d: Any, intent: int = ALWAYS_INTENT) -> None:
        self.t = t
        self.d = d
        self.intent = intent
        self.at = math.inf  # when it was first delivered (trio time), for replay's age bound
        # (frame header + start of the payload, rest of the payload) by the encoded seq's
        # length, negative for msgpack: a frame is then two concatenations (fan-out builds one
        # per session; the header's own packing was half of that cost).
        self._parts: dict[int, tuple[bytes, bytes]] = {}

    def _tail(self, encoding: str) -> bytes:
        if encoding == "msgpack":
            tail = _msgpack.encode("t") + _msgpack.encode(self.t)
            return tail + _msgpack.encode("d") + _msgpack.encode(self.d)
        return b',"t":' + _json.encode(self.t) + b',"d":' + _json.encode(self.d) + b"}"

    def _new_parts(self, key: int) -> tuple[bytes, bytes]:
        msgpack = key < 0
        # The payload is encoded once per encoding, whatever lengths the sessions' seqs have.
        tail = next((t for k, (_, t) in self._parts.items() if (k < 0) == msgpack), None)
        if tail is None:
            tail = self._tail("msgpack" if msgpack else "json")
        head = _MSGPACK_HEAD if msgpack else _JSON_HEAD
        first = wsframe.BINARY_FIN if msgpack else wsframe.TEXT_FIN
        front = wsframe.header(first, len(head) + abs(key) + len(tail)) + head
        parts = self._parts[key] = (front, tail)
        return parts

    def frame(self, seq: int, encoding: str) -> bytes:
        """The DISPATCH for one session as a whole WebSocket frame (text for JSON, binary for
        msgpack): the frame header and the session's seq spliced before the shared bytes."""
        if encoding == "msgpack":
            number = _msgpack.encode(seq)
            key = -len(number)
        else:
            number = b"%d" % seq
            key = len(number)
        front, tail = self._parts.get(key) or self._new_parts(key)
        return front + number + tail


_JSON_HEAD = b'{"op":0,"s":'
# fixmap of 4 entries, "op": 0, then the key "s"
_MSGPACK_HEAD = b"\x84" + _msgpack.encode("op") + b"\x00" + _msgpack.encode("s")
