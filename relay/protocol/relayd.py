"""The relayd byte-relay wire format (DESIGN §4), sans-I/O: an incremental parser and encoders.

Every frame starts with `b"RELY"`, the version byte 0x01 and a command byte:

    login     RELY 01 01 [u8 id_len 1-255][id]
    transfer  RELY 01 09 [u8 from_len 1-255][from][u8 to_len 0-255][to][u32 BE len][payload]

A transfer with `to_len == 0` is a heartbeat. Client ids are opaque bytes (relayd suggests
UTF-8, e.g. a UUID, and checks nothing else), compared byte for byte.

Theory of operation: `Parser.feed(data)` takes bytes as they arrive; `next_frame()` (or
iterating the parser) returns complete frames in order, then None until more bytes come. The
header is checked field by field as soon as each field is there: a wrong magic fails on its
first byte, and a declared payload length over `max_payload_bytes` fails as soon as its four
bytes have arrived, before a single payload byte is kept. The only bytes ever held are those of
one unfinished frame, so `buffered_bytes` never exceeds `MAX_HEADER_BYTES + max_payload_bytes`
once the frames fed so far have been taken.

A frame that arrived in one chunk is sliced out of it once. A frame spread over several chunks
is kept as views of those chunks and joined once, when complete; the views keep alive at most
one chunk's worth of other bytes besides the frame's (the start of the chunk it began in).
Pieces under VIEW_MIN_BYTES are copied into one buffer instead, so a frame sent in tiny reads
costs its own bytes, not an object per read (a view and a chunk per read were ~320 bytes per
byte received: an 8 MiB frame sent a byte at a time could hold 2.6 GB).

`Transfer.raw` is the frame exactly as the client sent it: since `from` must be the sender's
own id, the relay forwards those bytes unchanged, without re-encoding.

`Parser(coalesce=True)` is the relay's fast path: complete transfers that follow each other in
one chunk and repeat the first one's header up to `to` (the same `from` and `to`) come back as
one `Transfer` whose `raw` holds all of them (`count` frames, at most `run_bytes` in all, or
one larger frame). Each one's length is still checked against the cap, but no object is built
per frame: a sender streaming to one receiver costs a few operations per frame, not a dozen
calls. Such a `raw` is a `memoryview` of the chunk, not a copy, when it covers at least half
of the chunk (so a kept view never holds on to more than twice its own size); a smaller one is
copied out.

Error handling: any malformed input raises RelaydError (FrameTooLarge for a length over the
cap). A parser that raised is dead: it keeps raising the same error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

MAGIC = b"RELY"
VERSION = 0x01
CMD_LOGIN = 0x01
CMD_TRANSFER = 0x09
MAX_ID_BYTES = 255
MAX_PAYLOAD_LEN = 0xFFFF_FFFF  # what the u32 length field can say
DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
# magic, version, cmd, from_len, from, to_len, to, payload_len: the longest possible header.
MAX_HEADER_BYTES = 4 + 1 + 1 + 1 + MAX_ID_BYTES + 1 + MAX_ID_BYTES + 4
_PREFIX = 6  # magic, version, cmd
RUN_BYTES = 256 * 1024  # the longest coalesced run of transfers (one frame may be longer)
VIEW_MIN_BYTES = 4096  # a smaller piece of an unfinished frame is copied, not viewed

# A frame (or run) as it arrived: its own bytes, or a view of the chunk it came in.
Bytes: TypeAlias = bytes | memoryview


class RelaydError(Exception):
    """The bytes are not a valid relayd frame; the connection they came from must be closed."""


class FrameTooLarge(RelaydError):
    """A transfer declared a payload longer than the configured cap."""


@dataclass(frozen=True, slots=True)
class Login:
    client_id: bytes


@dataclass(frozen=True, slots=True)
class Transfer:
    """A transfer as received: `raw` is the whole frame, forwarded unchanged.

    From a `Parser(coalesce=True)`, `raw` may hold `count` consecutive frames that share the
    same `from` and `to`, and may be a view of the chunk they arrived in (see Parser);
    `payload` is then that of the first.
    """

    sender: bytes
    to: bytes  # b"" for a heartbeat
    raw: Bytes
    payload_offset: int
    count: int = 1

    @property
    def heartbeat(self) -> bool:
        return not self.to

    @property
    def payload(self) -> bytes:
        if self.count == 1:
            return bytes(self.raw[self.payload_offset :])
        length = int.from_bytes(self.raw[self.payload_offset - 4 : self.payload_offset], "big")
        return bytes(self.raw[self.payload_offset : self.payload_offset + length])


Frame = Login | Transfer


def encode_login(client_id: bytes) -> bytes:
    """A login frame.

    Raises:
        ValueError: the id is empty or longer than 255 bytes.
    """
    _check_id(client_id, "client id", empty_ok=False)
    return MAGIC + bytes((VERSION, CMD_LOGIN, len(client_id))) + client_id


def encode_transfer(sender: bytes, to: bytes, payload: bytes = b"") -> bytes:
    """A transfer frame; `to=b""` makes a heartbeat.

    Raises:
        ValueError: an id of the wrong length, or a payload longer than a u32 can say.
    """
    _check_id(sender, "from", empty_ok=False)
    _check_id(to, "to", empty_ok=True)
    if len(payload) > MAX_PAYLOAD_LEN:
        raise ValueError(f"a payload is at most {MAX_PAYLOAD_LEN} bytes")
    return b"".join(
        (
            MAGIC,
            bytes((VERSION, CMD_TRANSFER, len(sender))),
            sender,
            bytes((len(to),)),
            to,
            len(payload).to_bytes(4, "big"),
            payload,
        )
    )


def encode_heartbeat(sender: bytes) -> bytes:
    return encode_transfer(sender, b"")


def encode(frame: Frame) -> bytes:
    if isinstance(frame, Login):
        return encode_login(frame.client_id)
    return bytes(frame.raw)


def decode(message: bytes, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Frame:
    """Exactly one frame (a WebSocket binary message carries one).

    Raises:
        RelaydError: not a frame, an unfinished frame, or bytes after the frame.
    """
    header = _parse_header(message, 0, len(message), max_payload_bytes)
    if header is None or header.total > len(message):
        raise RelaydError("the message ends inside a frame")
    if header.total < len(message):
        raise RelaydError("bytes after the frame")
    return header.frame(message)


def split_run(raw: Bytes) -> list[Bytes]:
    """The frames of a `Transfer.raw` (one, or a coalesced run), each as a slice of it.

    `raw` must come from a Parser (complete, valid frames); nothing is checked again.
    """
    frames: list[Bytes] = []
    pos, end = 0, len(raw)
    while pos < end:
        to_at = pos + 7 + raw[pos + 6]
        payload_at = to_at + 1 + raw[to_at] + 4
        after = payload_at + int.from_bytes(raw[payload_at - 4 : payload_at], "big")
        if pos == 0 and after >= end:
            return [raw]
        frames.append(raw[pos:after])
        pos = after
    return frames


def _check_id(value: bytes, name: str, *, empty_ok: bool) -> None:
    if len(value) > MAX_ID_BYTES or (not value and not empty_ok):
        low = 0 if empty_ok else 1
        raise ValueError(f"{name} must be {low}-{MAX_ID_BYTES} bytes, not {len(value)}")


@dataclass(slots=True)  # not frozen: built for every frame, and a frozen __init__ costs more
class _Header:
    """Where the fields of one frame are, relative to its first byte."""

    cmd: int
    total: int  # the whole frame's length
    id_end: int  # login: end of the id; transfer: end of `from`
    to_end: int = 0
    payload_offset: int = 0

    def frame(self, raw: bytes) -> Frame:
        if self.cmd == CMD_LOGIN:
            return Login(raw[7 : self.id_end])
        return Transfer(
            sender=raw[7 : self.id_end],
            to=raw[self.id_end + 1 : self.to_end],
            raw=raw,
            payload_offset=self.payload_offset,
        )


def _parse_header(
    buf: bytes | bytearray, start: int, end: int, max_payload_bytes: int
) -> _Header | None:
    """The header of the frame at buf[start:end], or None if it is not all there yet.

    Every field is checked as soon as its bytes are present, so bad input fails early.
    """
    avail = end - start
    if avail < _PREFIX:
        known = min(avail, 4)
        if buf[start : start + known] != MAGIC[:known]:
            raise RelaydError("not a relayd frame (bad magic)")
        if avail == 5 and buf[start + 4] != VERSION:
            raise RelaydError(f"unsupported version {buf[start + 4]}")
        return None
    if buf[start : start + 4] != MAGIC:
        raise RelaydError("not a relayd frame (bad magic)")
    if buf[start + 4] != VERSION:
        raise RelaydError(f"unsupported version {buf[start + 4]}")
    cmd = buf[start + 5]
    if cmd not in (CMD_LOGIN, CMD_TRANSFER):
        raise RelaydError(f"unknown command 0x{cmd:02x}")
    if avail < 7:
        return None
    id_len = buf[start + 6]
    if id_len == 0:
        raise RelaydError("an empty client id" if cmd == CMD_LOGIN else "an empty `from`")
    id_end = 7 + id_len
    if cmd == CMD_LOGIN:
        return _Header(CMD_LOGIN, id_end, id_end)
    if avail <= id_end:
        return None
    to_end = id_end + 1 + buf[start + id_end]
    payload_offset = to_end + 4
    if avail < payload_offset:
        return None
    length = int.from_bytes(buf[start + to_end : start + payload_offset], "big")
    if length > max_payload_bytes:
        raise FrameTooLarge(f"a payload of {length} bytes is over the {max_payload_bytes} cap")
    return _Header(CMD_TRANSFER, payload_offset + length, id_end, to_end, payload_offset)


class Parser:
    """Incremental parser for one connection's byte stream (see the module docstring)."""

    def __init__(
        self,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        *,
        coalesce: bool = False,
        run_bytes: int = RUN_BYTES,
    ) -> None:
        if not 0 <= max_payload_bytes <= MAX_PAYLOAD_LEN:
            raise ValueError(f"max_payload_bytes must be 0-{MAX_PAYLOAD_LEN}")
        self.max_payload_bytes = max_payload_bytes
        self.coalesce = coalesce
        self.run_bytes = run_bytes
        self._chunk: bytes = b""  # the latest data fed, read from `_pos` on
        self._view = memoryview(self._chunk)
        self._pos = 0
        self._head = bytearray()  # the start of a frame whose header is not complete yet
        self._header: _Header | None = None  # the unfinished frame's header, once complete
        self._parts: list[Bytes | bytearray] = []  # ... and its bytes so far (see _keep)
        self._have = 0  # len() of the parts together
        self._error: RelaydError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: the unfinished frame, plus fed bytes not yet parsed."""
        return len(self._head) + self._have + len(self._chunk) - self._pos

    def feed(self, data: Bytes) -> None:
        """Add bytes from the stream (any split is fine)."""
        if self._pos < len(self._chunk):
            self._chunk = self._chunk[self._pos :] + data
        else:
            self._chunk = bytes(data)
        self._view = memoryview(self._chunk)
        self._pos = 0

    def __iter__(self) -> Parser:
        return self

    def __next__(self) -> Frame:
        frame = self.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes are fed.

        Raises:
            RelaydError: the stream is not valid relayd (also on every later call).
        """
        if self._error is not None:
            raise self._error
        try:
            if self._header is not None or self._head:
                return self._continue_partial()
            return self._from_chunk()
        except RelaydError as e:
            self._error = e
            self._head = bytearray()
            self._header, self._parts, self._have = None, [], 0
            self._chunk, self._pos = b"", 0
            self._view = memoryview(self._chunk)
            raise

    def _from_chunk(self) -> Frame | None:
        chunk, pos = self._chunk, self._pos
        end = len(chunk)
        if pos >= end:
            return None
        header = _parse_header(chunk, pos, end, self.max_payload_bytes)
        if header is not None and pos + header.total <= end:
            if self.coalesce and header.cmd == CMD_TRANSFER:
                return self._run(header)
            self._pos = pos + header.total
            return header.frame(chunk[pos : self._pos])
        # The frame goes on in later chunks: keep its start (the header is checked so far).
        if header is None:  # shorter than a header: copy it
            self._head = bytearray(chunk[pos:])
        else:
            self._header = header
            self._parts, self._have = [], 0
            self._keep(pos, end)
        self._pos = end
        return None

    def _keep(self, start: int, end: int) -> None:
        """Add chunk[start:end] to the unfinished frame: as a view if it is large, else copied
        into the buffer at the end of the parts."""
        parts = self._parts
        size = end - start
        if size >= VIEW_MIN_BYTES:
            parts.append(self._view[start:end])
        elif parts and isinstance(parts[-1], bytearray):
            parts[-1] += self._view[start:end]
        else:
            parts.append(bytearray(self._view[start:end]))
        self._have += size

    def _run(self, first: _Header) -> Transfer:
        """The complete transfer at `_pos`, with the complete ones right after it that repeat
        its header up to `to` (so: the same `from` and `to`), up to `run_bytes` in all.

        Only the length field of each following frame is read; a length over the cap ends the
        run, so that the frames before it are still delivered and the error comes next.
        """
        chunk, start = self._chunk, self._pos
        to_end = first.to_end
        prefix = chunk[start : start + to_end]
        pos = start + first.total
        end = min(len(chunk), start + max(self.run_bytes, first.total))
        stop = end - to_end - 4
        count = 1
        while pos <= stop and chunk.startswith(prefix, pos):
            length = int.from_bytes(chunk[pos + to_end : pos + to_end + 4], "big")
            total = to_end + 4 + length
            if length > self.max_payload_bytes or pos + total > end:
                break
            pos += total
            count += 1
        self._pos = pos
        # A view keeps the whole chunk alive: worth it (no copy) only for a large part of it.
        raw = self._view[start:pos] if 2 * (pos - start) >= len(chunk) else chunk[start:pos]
        return Transfer(
            sender=prefix[7 : first.id_end],
            to=prefix[first.id_end + 1 :],
            raw=raw,
            payload_offset=first.payload_offset,
            count=count,
        )

    def _continue_partial(self) -> Frame | None:
        chunk, pos = self._chunk, self._pos
        header = self._header
        if header is None:
            # The header itself was cut: move at most a maximal header's worth of bytes over.
            head = self._head
            take = min(len(chunk) - pos, MAX_HEADER_BYTES - len(head))
            head += chunk[pos : pos + take]
            pos += take
            header = _parse_header(head, 0, len(head), self.max_payload_bytes)
            if header is None:
                self._pos = pos
                return None
            if len(head) > header.total:  # a short frame: give back what follows it
                pos -= len(head) - header.total
                del head[header.total :]
            self._header = header
            self._parts, self._have = [head], len(head)  # more small pieces join it
            self._head = bytearray()
        take = min(len(chunk) - pos, header.total - self._have)
        if take > 0:
            self._keep(pos, pos + take)
            pos += take
        self._pos = pos
        if self._have < header.total:
            return None
        parts = self._parts
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        self._header, self._parts, self._have = None, [], 0
        return header.frame(bytes(raw))
