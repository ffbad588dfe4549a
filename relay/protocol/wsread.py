"""Incoming WebSocket frames (RFC 6455 §5), client to server, sans-I/O: bytes in, messages out.

`FrameReader.receive(data)` returns, in order, every complete message (`str` for text, `bytes`
for binary), ping (`Ping`), peer close (`Close`) and refusal (`Refusal`) the bytes completed;
pongs are consumed. Parsing the handshake stays wsproto's job (realtime/listener.py); this
replaces wsproto's frame parser, which took a quarter of the gateway's main-thread time per
message sent over op 12 (py-spy, `--gil`): generators, an object per frame and per event, and
an incremental decoder per message, where a whole small frame needs one header, one unmask and
one decode. Unmasking is websockets' C function (`websockets.speedups.apply_mask`).

What is refused (the close code in brackets):
- a frame that is not masked, has an RSV bit set (no extension is ever negotiated), has an
  unknown opcode, is a control frame over 125 bytes or without FIN, a continuation outside a
  fragmented message, a new message inside one, or a 64-bit length with the top bit set (1002);
- a close frame of 1 byte, or whose code is outside 1000-4999, local-only (1005, 1006, 1015) or
  unassigned below 3000, as 1004 and 1014 (1002); a close reason that is not UTF-8 (1007);
- a text message that is not UTF-8 (1007; a fragmented one as soon as a fragment shows it);
- a message over `max_message_bytes` (1009), decided from the frame header, before its
  payload is buffered.

After a refusal the reader returns nothing more, except after a 1009 (`Refusal.fatal` False):
it skips the rest of that message and goes on reading frames, so that the peer's close can
still end the handshake. After the peer's close, nothing is read (RFC 6455 §5.5.1).
Memory: at most one frame is buffered, and no frame over `max_message_bytes`; a fragmented
message holds at most `max_message_bytes` of payload, in one buffer whatever the number of
fragments (an object per fragment let empty or 1-byte fragments, which the size limit does
not stop, grow memory without bound: ~42 bytes per byte sent, more for empty ones).
"""

from __future__ import annotations

import codecs
from typing import NamedTuple, TypeAlias

from relay.protocol.wsframe import CLOSE_CODES

try:  # websockets' C unmasking: 64 KiB in ~1.3 us, where Python's int XOR takes ~150 us
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - no compiled extension for this platform
    from websockets.utils import apply_mask

_NO_CODE = 1005  # the peer's close carried no code
_PROTOCOL_ERROR = 1002
_INVALID_DATA = 1007
_TOO_BIG = 1009
_CONTROL_MAX = 125


class Ping(NamedTuple):
    payload: bytes


class Close(NamedTuple):
    """The peer's close frame: `code` 1005 if it carried none."""

    code: int
    reason: str


class Refusal(NamedTuple):
    """What the peer sent breaks the protocol or a limit: close with `code`. `fatal`: the
    stream cannot be read further (every refusal but 1009's)."""

    code: int
    reason: str
    fatal: bool


Event: TypeAlias = "str | bytes | Ping | Close | Refusal"


class FrameReader:
    """The reading half of one server-side WebSocket connection."""

    __slots__ = (
        "_chunks",
        "_decoder",
        "_discarding",
        "_have",
        "_need",
        "_parts",
        "_skip",
        "_stopped",
        "_text",
        "max_message_bytes",
    )

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        # Bytes of an incomplete frame: `_have` of the `_need` that complete it (or its header).
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0
        self._skip = 0  # payload bytes still to drop (the rest of a frame refused with 1009)
        self._stopped = False  # a fatal refusal or the peer's close: read nothing more
        # A fragmented message in progress: its payload so far (text too: its fragments are
        # checked as they come, and it is decoded once, whole).
        self._parts: bytearray | None = None
        self._text = False
        self._decoder: codecs.IncrementalDecoder | None = None
        self._discarding = False  # the message in progress was refused (1009): drop its frames

    @property
    def stopped(self) -> bool:
        """Nothing more will be read: a fatal refusal was returned, or the peer's close."""
        return self._stopped

    def receive(self, data: bytes) -> list[Event]:
        """Everything that `data`, after what came before, completes (see the module doc)."""
        events: list[Event] = []
        if self._stopped or not data:
            return events
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return events
            data = data[self._skip :]
            self._skip = 0
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return events
            data = b"".join(self._chunks)
            self._chunks, self._have = [], 0
        buf, pos, end = data, 0, len(data)
        self._need = 0
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            head = 6  # 2 bytes, then the 4-byte mask
            if length == 126:
                head = 8
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif length == 127:
                head = 14
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            refusal = self._check_header(first, second, length)
            if refusal is not None:  # decided before the mask and payload are read
                if refusal is not _DROP:
                    events.append(refusal)
                    if refusal.fatal:
                        self._stopped = True
                        return events
                # drop the frame (a 1009's, or more of its message), here and in later reads
                if end - pos < head + length:
                    self._skip = head + length - (end - pos)
                    return events
                pos += head + length
                continue
            if end - pos < head + length:
                self._need = head + length
                break
            start = pos + head
            payload = apply_mask(buf[start : start + length], buf[start - 4 : start])
            pos = start + length
            event = self._frame(first, payload)
            if event is not None:
                events.append(event)
                if self._stopped:
                    return events
        if pos < end:
            rest = buf[pos:]
            self._chunks, self._have = [rest], len(rest)
            if self._need <= len(rest):  # no header yet: any more bytes may complete it
                self._need = len(rest) + 1
        return events

    def _check_header(self, first: int, second: int, length: int) -> Refusal | None:
        opcode = first & 0x0F
        if first & 0x70:
            return _refuse(_PROTOCOL_ERROR, "reserved bits set")
        if not second & 0x80:
            return _refuse(_PROTOCOL_ERROR, "client frames must be masked")
        if length >> 63:
            return _refuse(_PROTOCOL_ERROR, "frame length out of range")
        if opcode >= 8:
            if opcode > 10:
                return _refuse(_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            if not first & 0x80:
                return _refuse(_PROTOCOL_ERROR, "fragmented control frame")
            if length > _CONTROL_MAX:
                return _refuse(_PROTOCOL_ERROR, "control frame over 125 bytes")
            return None
        if opcode > 2:
            return _refuse(_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        in_message = self._parts is not None or self._discarding
        if opcode == 0:
            if not in_message:
                return _refuse(_PROTOCOL_ERROR, "continuation frame without a message")
        elif in_message:
            return _refuse(_PROTOCOL_ERROR, "new message inside a fragmented one")
        if self._discarding:  # more of a message refused with 1009
            self._discarding = not first & 0x80
            return _DROP
        held = len(self._parts) if self._parts is not None else 0
        if held + length > self.max_message_bytes:
            self._parts, self._decoder = None, None
            self._discarding = not first & 0x80
            return Refusal(
                _TOO_BIG, f"messages are limited to {self.max_message_bytes} bytes", fatal=False
            )
        return None

    def _frame(self, first: int, payload: bytes) -> Event | None:
        """One complete, checked, unmasked frame; the event it completes, if any."""
        opcode = first & 0x0F
        fin = first & 0x80
        if opcode >= 8:
            if opcode == 9:
                return Ping(payload)
            if opcode == 8:
                return self._close(payload)
            return None  # pong
        if fin and opcode:  # a whole message in one frame: the usual case
            if opcode == 2:
                return payload
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                return self._invalid_text()
        if opcode:  # the first fragment
            self._text = opcode == 1
            self._parts = bytearray()
            self._decoder = codecs.getincrementaldecoder("utf-8")() if self._text else None
        parts = self._parts
        assert parts is not None
        if self._decoder is not None:
            try:  # only to refuse bad UTF-8 at the first fragment that shows it
                self._decoder.decode(payload, final=bool(fin))
            except UnicodeDecodeError:
                return self._invalid_text()
        parts += payload
        if not fin:
            return None
        self._parts, self._decoder = None, None
        if self._text:
            return parts.decode("utf-8")  # valid: the decoder saw every byte
        return bytes(parts)

    def _invalid_text(self) -> Refusal:
        self._stopped = True
        return _refuse(_INVALID_DATA, "text is not valid UTF-8")

    def _close(self, payload: bytes) -> Event:
        self._stopped = True
        if not payload:
            return Close(_NO_CODE, "")
        if len(payload) == 1:
            return _refuse(_PROTOCOL_ERROR, "close frame of 1 byte")
        code = int.from_bytes(payload[:2], "big")
        if code not in CLOSE_CODES and not 3000 <= code <= 4999:
            return _refuse(_PROTOCOL_ERROR, f"close code {code} may not be sent")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            return _refuse(_INVALID_DATA, "close reason is not valid UTF-8")
        return Close(code, reason)


_DROP = Refusal(_TOO_BIG, "", fatal=False)  # _check_header: skip the payload, say nothing


def _refuse(code: int, reason: str) -> Refusal:
    return Refusal(code, reason, fatal=True)
