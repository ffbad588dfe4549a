"""Ogg Opus demuxing (RFC 3533 pages, RFC 7845 Opus mapping): the Opus packets of an `.opus`
file, for the bundled voice client to send as they are (the server never decodes audio, and
neither does this: no codec is needed to split a file into frames).

Only the first logical stream is read (an Ogg Opus file has one); its first two packets are
the OpusHead and OpusTags headers, checked and skipped. Every page's CRC is checked.

Error handling: anything that is not a well-formed Ogg Opus stream raises OggError.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

CAPTURE = b"OggS"
HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, type, granule, serial, seq, crc, segments
CONTINUED = 0x01  # header type: the page's first packet continues the previous page's last
MAX_PACKET_BYTES = 1 << 20  # far above any Opus packet (at most 120 ms at 510 kbit/s: ~7.7 KB)


class OggError(ValueError):
    pass


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def crc32(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04c11db7, no reflection, no final xor)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[(crc >> 24) ^ byte]
    return crc


def packets(data: bytes) -> Iterator[bytes]:
    """Every packet of the first logical stream in `data`, in order (headers included)."""
    serial: int | None = None
    pending = b""
    at = 0
    while at < len(data):
        if len(data) - at < HEADER.size:
            raise OggError("truncated page header")
        capture, version, kind, _, page_serial, _, crc, count = HEADER.unpack_from(data, at)
        if capture != CAPTURE or version != 0:
            raise OggError(f"no Ogg page at byte {at}")
        lacing = data[at + HEADER.size : at + HEADER.size + count]
        body_at = at + HEADER.size + count
        end = body_at + sum(lacing)
        if len(lacing) < count or end > len(data):
            raise OggError("truncated page")
        page = bytearray(data[at:end])
        page[22:26] = bytes(4)  # the CRC is computed with its own field zeroed
        if crc32(bytes(page)) != crc:
            raise OggError(f"bad CRC in the page at byte {at}")
        at = end
        if serial is None:
            serial = page_serial
        if page_serial != serial:
            continue  # another logical stream (chained or multiplexed): not ours
        if not kind & CONTINUED and pending:
            raise OggError("a packet was cut off by the next page")
        offset = body_at
        for size in lacing:
            pending += data[offset : offset + size]
            offset += size
            if len(pending) > MAX_PACKET_BYTES:
                raise OggError("packet too large")
            if size < 255:
                yield pending
                pending = b""
    if pending:
        raise OggError("the stream ends inside a packet")


def opus_frames(data: bytes) -> Iterator[bytes]:
    """The Opus packets of an Ogg Opus file (OpusHead and OpusTags checked and left out)."""
    found = packets(data)
    head = next(found, b"")
    if not head.startswith(b"OpusHead") or len(head) < 19:
        raise OggError("not an Ogg Opus stream (no OpusHead)")
    if not next(found, b"").startswith(b"OpusTags"):
        raise OggError("no OpusTags header")
    yield from found
