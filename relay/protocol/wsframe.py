"""Outgoing WebSocket frames (RFC 6455 §5.2), built once as bytes, sans-I/O.

The server encodes an event once and queues the same bytes to every receiver, so frames are
plain `bytes`: unmasked (server to client), FIN set, no RSV bits (no extension is ever
negotiated). Parsing what clients send and the opening handshake are wsproto's job, not this
module's.
"""

from __future__ import annotations

import enum
import struct

MAX_CONTROL_PAYLOAD = 125  # RFC 6455 §5.5: control frames carry at most 125 bytes
_FIN = 0x80
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")
# Close codes below 3000 that may be sent (either way): RFC 6455 §7.4.1 plus 1012/1013 (IANA).
# 1005, 1006 and 1015 only report what happened locally; unassigned ones fail the connection.
CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})


class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


def frame(opcode: Opcode, payload: bytes) -> bytes:
    """One complete, unmasked server-to-client frame with FIN set.

    Raises:
        ValueError: a control frame (close, ping, pong) with more than 125 payload bytes.
    """
    length = len(payload)
    if length > MAX_CONTROL_PAYLOAD and opcode >= Opcode.CLOSE:
        raise ValueError(f"a {opcode.name} frame carries at most 125 bytes, not {length}")
    return header(_FIN | opcode, length) + payload


TEXT_FIN = _FIN | Opcode.TEXT  # first byte of a whole text frame
BINARY_FIN = _FIN | Opcode.BINARY


def header(first: int, length: int) -> bytes:
    """The header of an unmasked frame whose first byte is `first` (FIN | opcode) and whose
    payload is `length` bytes; the payload follows it unchanged."""
    if length <= MAX_CONTROL_PAYLOAD:
        return bytes((first, length))
    if length <= 0xFFFF:
        return _LEN16.pack(first, 126, length)
    return _LEN64.pack(first, 127, length)


def text_frame(text: str | bytes) -> bytes:
    """A text frame; `bytes` must already be UTF-8 (e.g. encoded JSON) and are not checked."""
    return frame(Opcode.TEXT, text.encode("utf-8") if isinstance(text, str) else text)


def binary_frame(data: bytes) -> bytes:
    return frame(Opcode.BINARY, data)


def ping_frame(payload: bytes = b"") -> bytes:
    return frame(Opcode.PING, payload)


def pong_frame(payload: bytes = b"") -> bytes:
    return frame(Opcode.PONG, payload)


def close_frame(code: int | None = 1000, reason: str = "") -> bytes:
    """A close frame; `code=None` sends none (the peer then sees 1005).

    The reason is cut to the 123 bytes that fit, at a character boundary, so that closing never
    fails because of a long message.

    Raises:
        ValueError: a code a peer would refuse (local-only like 1005, unassigned like 1004,
            or outside 1000-4999), or a reason without a code.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return frame(Opcode.CLOSE, b"")
    if code not in CLOSE_CODES and not 3000 <= code <= 4999:
        raise ValueError(f"{code} is not a close code an endpoint may send")
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CONTROL_PAYLOAD - 2:
        encoded = encoded[: MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode("utf-8")
    return frame(Opcode.CLOSE, code.to_bytes(2, "big") + encoded)
