"""Raw WebSocket and HTTP/1.1 bytes for the load generator, sans-I/O.

The load generator must never be the bottleneck, so it does not run a WebSocket library on the
receiving side: `scan` walks the frame headers of what a server sent (servers never mask) and
looks into a payload only to find the bench marker. Client frames are masked, as RFC 6455
requires of clients.

Every bench message carries `bench|<send time, monotonic ns>|<sender>|<seq>|` in its text, so
a receiver can tell bench messages from other events (READY, PRESENCE_UPDATE) and compute the
end-to-end latency on receipt. CLOCK_MONOTONIC is one clock for every process of the machine.
"""

from __future__ import annotations

import base64
import os

MARK = b"bench|"
STAMP_BYTES = 64  # enough of a message, from the marker on, to hold the stamp, sender and seq

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def upgrade_request(host: str, port: int, path: str) -> bytes:
    """An HTTP/1.1 WebSocket upgrade request (no extensions offered: no compression)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def split_upgrade_response(buf: bytes) -> tuple[bool, bytes] | None:
    """(accepted, bytes after the head), or None while the head is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    return buf.startswith(b"HTTP/1.1 101"), buf[end + 4 :]


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One whole client frame (FIN set), masked with a random key."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + mask_bytes(payload, mask)


def mask_bytes(data: bytes, mask: bytes) -> bytes:
    """XOR `data` with the repeated 4-byte `mask` (one big-integer XOR: no Python loop)."""
    n = len(data)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def scan(
    data: bytes, pos: int, stamps: list[bytes] | None
) -> tuple[int, int, list[tuple[int, bytes]] | None]:
    """Walk the whole server frames in `data` from `pos`.

    Returns (position after the last whole frame, bench messages seen, control frames as
    (opcode, payload) or None if there were none). With `stamps`, appends the first
    STAMP_BYTES of each bench message from its marker on. A message split in fragments is
    counted once, by the fragment that holds the marker.
    """
    n = len(data)
    count = 0
    controls: list[tuple[int, bytes]] | None = None
    find = data.find
    while pos + 2 <= n:
        b0 = data[pos]
        length = data[pos + 1] & 0x7F
        if length < 126:
            start = pos + 2
        elif length == 126:
            if pos + 4 > n:
                break
            length = (data[pos + 2] << 8) | data[pos + 3]
            start = pos + 4
        else:
            if pos + 10 > n:
                break
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            start = pos + 10
        end = start + length
        if end > n:
            break
        if b0 & 0x0F < OP_CLOSE:
            mark = find(MARK, start, end)
            if mark >= 0:
                count += 1
                if stamps is not None:
                    stamps.append(data[mark : min(mark + STAMP_BYTES, end)])
        else:
            if controls is None:
                controls = []
            controls.append((b0 & 0x0F, data[start:end]))
        pos = end
    return pos, count, controls


def data_frames(data: bytes, pos: int) -> tuple[int, list[tuple[int, bytes]]]:
    """Every whole server frame from `pos` as (opcode, payload): the slow path, for handshakes."""
    frames: list[tuple[int, bytes]] = []
    n = len(data)
    while pos + 2 <= n:
        length = data[pos + 1] & 0x7F
        start = pos + 2
        if length == 126:
            if pos + 4 > n:
                break
            length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        elif length == 127:
            if pos + 10 > n:
                break
            length, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
        if start + length > n:
            break
        frames.append((data[pos] & 0x0F, data[start : start + length]))
        pos = start + length
    return pos, frames


def first_frame(buf: bytes) -> tuple[int, bytes, bytes] | None:
    """(opcode, payload, the bytes after it) of the first whole server frame in `buf`, or None
    while it is incomplete: for a handshake that must stop after one frame."""
    if len(buf) < 2:
        return None
    length, start = buf[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < start + length:  # also when the length itself is cut
        return None
    return buf[0] & 0x0F, buf[start : start + length], buf[start + length :]


def parse_stamp(stamp: bytes) -> tuple[int, int, int]:
    """(send time ns, sender, seq) from `bench|<t>|<sender>|<seq>|...`."""
    parts = stamp.split(b"|", 4)
    return int(parts[1]), int(parts[2]), int(parts[3])


def close_code(payload: bytes) -> int:
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


def bench_text(sent_ns: int, sender: int, seq: int, pad: int = 0) -> str:
    """The text of one bench message; `pad` characters make it as long as needed."""
    return f"bench|{sent_ns}|{sender}|{seq}|" + "x" * pad


def post_request(host: str, port: int, path: str, token: str, body: bytes) -> bytes:
    """A keep-alive HTTP/1.1 POST with a JSON body."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def split_response(buf: bytes) -> tuple[int, bytes, bytes] | None:
    """(status, body, rest) of the first whole HTTP/1.1 response in `buf` (Content-Length
    framing only: what hypercorn sends for these answers), or None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].lower()
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        if b"transfer-encoding" in head:
            raise ValueError("chunked responses are not expected from the bench's routes")
        return status, b"", buf[end + 4 :]
    line_end = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : line_end if line_end >= 0 else len(head)].strip())
    if len(buf) < end + 4 + length:
        return None
    return status, buf[end + 4 : end + 4 + length], buf[end + 4 + length :]
