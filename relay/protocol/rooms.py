"""The app-room wire protocol (`/v1/websocket`), sans-I/O: client frames, server frames, the
binary relay header, and the error and close codes.

Text frames are JSON objects tagged by `"type"`. Binary frames carry relayed payloads behind a
5-byte header, the same shape in both directions:

    client -> server:  [u8 kind][u32 BE target client id][payload]
    server -> client:  [u8 kind][u32 BE sender client id][payload]

`kind` is 1 broadcast, 2 target, 3 host. A client fills the id field only for `target`; for
`broadcast` and `host` it is ignored (send 0). The server replaces it with the sender's id, so a
receiver always learns who really sent a payload. Relayed JSON works the same way: the client's
`data` is forwarded byte for byte inside `{"type": kind, "from": sender, "data": ...}`.

Every server frame is built once as a complete WebSocket frame (`relay.protocol.wsframe`), so
the room queues the same bytes to each receiver.
"""

from __future__ import annotations

import enum
import struct
from typing import Annotated, Literal

import msgspec

from relay.protocol import wsframe


class Kind(enum.IntEnum):
    """How a payload is addressed; also the `type` of a relayed JSON frame."""

    BROADCAST = 1  # everyone in the room but the sender
    TARGET = 2  # one client
    HOST = 3  # the room's host


KIND_NAMES = {Kind.BROADCAST: "broadcast", Kind.TARGET: "target", Kind.HOST: "host"}
HEADER = struct.Struct("!BI")  # kind, client id
HEADER_BYTES = HEADER.size
MAX_CLIENT_ID = 2**32 - 1


class Close(enum.IntEnum):
    """Close codes of `/v1/websocket`. Each close but SLOW_CONSUMER follows an `error` frame."""

    INTERNAL_ERROR = 4000  # the room failed; connect again
    JOIN_TIMEOUT = 4001  # no connect/reconnect in time
    INVALID_FRAME = 4002  # not a valid frame (JSON, type, fields, binary header)
    NOT_JOINED = 4003  # anything but connect/reconnect before joining
    JOIN_FAILED = 4004  # connect/reconnect refused; the error code says why
    ALREADY_JOINED = 4005  # a second connect/reconnect on one connection
    RATE_LIMITED = 4008  # more messages than the per-client rate allows
    SLOW_CONSUMER = 4010  # the connection's outbox filled up; reconnect to go on
    KICKED = 4011  # the host kicked this client
    ROOM_CLOSED = 4012  # the room's creator closed it
    REPLACED = 4013  # the same client reconnected on another connection
    ELSEWHERE = 4014  # cluster mode: the room lives on another node; a `moved` frame says where


MESSAGE_TOO_BIG = 1009  # RFC 6455: a message over the room's size limit

# Error code -> the close code that follows it; None: the connection stays open.
ERRORS: dict[str, int | None] = {
    "internal_error": Close.INTERNAL_ERROR,
    "join_timeout": Close.JOIN_TIMEOUT,
    "invalid_frame": Close.INVALID_FRAME,
    "not_joined": Close.NOT_JOINED,
    "unknown_room": Close.JOIN_FAILED,
    "invalid_secret": Close.JOIN_FAILED,
    "room_full": Close.JOIN_FAILED,
    "server_full": Close.JOIN_FAILED,
    "invalid_client": Close.JOIN_FAILED,
    "busy": None,  # the room did not take the message in time; it was dropped
    "already_joined": Close.ALREADY_JOINED,
    "rate_limited": Close.RATE_LIMITED,
    "message_too_big": MESSAGE_TOO_BIG,
    "kicked": Close.KICKED,
    "room_closed": Close.ROOM_CLOSED,
    "replaced": Close.REPLACED,
    "room_elsewhere": Close.ELSEWHERE,
    "forbidden": None,  # the room's protocol does not allow this send
    "not_host": None,  # a host power used by someone else
    "unknown_client": None,  # no such client in the room
    "not_connected": None,  # the client is away (within its reconnect grace)
}


class RoomError(Exception):
    """A refusal with a wire error code; `close` is the close code that follows, or None."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def close(self) -> int | None:
        return ERRORS[self.code]


class FrameError(RoomError):
    """A client frame that cannot be decoded (always `invalid_frame`, close 4002)."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_frame", message)


# -- client frames -------------------------------------------------------------------------------

ClientId = Annotated[int, msgspec.Meta(ge=1, le=MAX_CLIENT_ID)]
RoomIdText = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Reason = Annotated[str, msgspec.Meta(max_length=100)]


class _In(msgspec.Struct, tag_field="type", frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Connect(_In, tag="connect", frozen=True):
    room_id: RoomIdText
    secret: Secret


class Reconnect(_In, tag="reconnect", frozen=True):
    room_id: RoomIdText
    client_id: ClientId
    client_secret: Secret


class Broadcast(_In, tag="broadcast", frozen=True):
    data: msgspec.Raw  # any JSON value, forwarded as it was sent


class Target(_In, tag="target", frozen=True):
    to: ClientId
    data: msgspec.Raw


class ToHost(_In, tag="host", frozen=True):
    data: msgspec.Raw


class ListMembers(_In, tag="list", frozen=True):
    pass


class Kick(_In, tag="kick", frozen=True):
    client_id: ClientId
    reason: Reason | None = None


class GrantHost(_In, tag="grant_host", frozen=True):
    client_id: ClientId


class Leave(_In, tag="leave", frozen=True):
    pass


ClientFrame = (
    Connect | Reconnect | Broadcast | Target | ToHost | ListMembers | Kick | GrantHost | Leave
)
_decoder = msgspec.json.Decoder(ClientFrame)


def decode_text(data: str | bytes) -> ClientFrame:
    """Decode one JSON client frame.

    Raises:
        FrameError: not JSON, nested too deeply, an unknown type, or wrong/missing/extra fields.
    """
    try:
        frame: ClientFrame = _decoder.decode(data)
    except msgspec.ValidationError as e:
        raise FrameError(str(e)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise FrameError(f"not valid JSON: {e}") from None
    except RecursionError:
        raise FrameError("JSON nested too deeply") from None
    return frame


def decode_binary(data: bytes) -> tuple[Kind, int, bytes]:
    """Split a client's binary frame into (kind, target, payload); target is 0 unless TARGET.

    Raises:
        FrameError: shorter than the header, an unknown kind, or a target id of 0.
    """
    if len(data) < HEADER_BYTES:
        raise FrameError(f"a binary frame starts with a {HEADER_BYTES}-byte header")
    raw_kind, target = HEADER.unpack_from(data)
    try:
        kind = Kind(raw_kind)
    except ValueError:
        raise FrameError(f"unknown binary kind {raw_kind}") from None
    if kind is not Kind.TARGET:
        target = 0
    elif target == 0:
        raise FrameError("a target frame names a client id from 1")
    return kind, target, data[HEADER_BYTES:]


def encode_binary(kind: Kind, client_id: int, payload: bytes) -> bytes:
    """A binary room frame's bytes: client side (id = target) or server side (id = sender)."""
    return HEADER.pack(kind, client_id) + payload


# -- server frames -------------------------------------------------------------------------------


class _Out(msgspec.Struct, tag_field="type", frozen=True, kw_only=True):
    pass


class MemberInfo(msgspec.Struct, frozen=True, kw_only=True):
    client_id: int
    connected: bool  # False: away, within its reconnect grace


class Connected(_Out, tag="connected", frozen=True):
    room_id: str
    client_id: int
    client_secret: str
    host_id: int | None
    protocol: str
    max_clients: int
    metadata: msgspec.Raw
    members: list[MemberInfo]  # in join order: the first is the longest connected


class Error(_Out, tag="error", frozen=True):
    code: str
    message: str


class Moved(_Out, tag="moved", frozen=True):
    """Cluster mode: the room lives on another node; connect to `url` (then close 4014)."""

    room_id: str
    url: str


class Members(_Out, tag="members", frozen=True):
    host_id: int | None
    members: list[MemberInfo]


class ClientJoined(_Out, tag="client_joined", frozen=True):
    client_id: int


class ClientLeft(_Out, tag="client_left", frozen=True):
    client_id: int
    reason: Literal["left", "kicked", "timed_out"]


class ClientDisconnected(_Out, tag="client_disconnected", frozen=True):
    client_id: int


class ClientReconnected(_Out, tag="client_reconnected", frozen=True):
    client_id: int


class HostMigrating(_Out, tag="host_migrating", frozen=True):
    previous_host_id: int


class HostAssigned(_Out, tag="host_assigned", frozen=True):
    host_id: int | None


class RoomUpdated(_Out, tag="room_updated", frozen=True):
    max_clients: int
    public: bool
    metadata: msgspec.Raw


ServerFrame = (
    Connected
    | Error
    | Members
    | ClientJoined
    | ClientLeft
    | ClientDisconnected
    | ClientReconnected
    | HostMigrating
    | HostAssigned
    | RoomUpdated
    | Moved
)
_encoder = msgspec.json.Encoder()
_TEXT_HEADS = {
    kind: b'{"type":"' + name.encode() + b'","from":' for kind, name in KIND_NAMES.items()
}


def event_frame(event: ServerFrame) -> bytes:
    """A complete text WebSocket frame carrying one server event."""
    return wsframe.text_frame(_encoder.encode(event))


def error_frame(error: RoomError) -> bytes:
    return event_frame(Error(code=error.code, message=error.message))


def relay_text_frame(kind: Kind, sender: int, data: bytes) -> bytes:
    """`{"type": kind, "from": sender, "data": data}` as a text frame; `data` is raw JSON."""
    return wsframe.text_frame(
        b"".join((_TEXT_HEADS[kind], b"%d" % sender, b',"data":', data, b"}"))
    )


def relay_binary_frame(kind: Kind, sender: int, payload: bytes) -> bytes:
    """The binary frame receivers get: the header with the sender's id, then the payload."""
    return wsframe.binary_frame(encode_binary(kind, sender, payload))


def decode_server_binary(data: bytes) -> tuple[Kind, int, bytes]:
    """For clients: split a relayed binary frame into (kind, sender, payload).

    Raises:
        ValueError: shorter than the header or an unknown kind.
    """
    if len(data) < HEADER_BYTES:
        raise ValueError("shorter than the room header")
    raw_kind, sender = HEADER.unpack_from(data)
    return Kind(raw_kind), sender, data[HEADER_BYTES:]
