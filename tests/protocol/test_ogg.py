"""The Ogg Opus demuxer (relay.protocol.ogg): against files libogg wrote (PyAV), round trips of
any packets through pages built here, and garbage or damaged files refused with OggError."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.protocol import ogg
from tests.voice.opusfile import write_opus_file

if TYPE_CHECKING:
    from pathlib import Path

HEAD = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", 312, 48000, 0, 0)
TAGS = b"OpusTags" + struct.pack("<I", 0) + struct.pack("<I", 0)


def page(segments: list[int], body: bytes, kind: int, serial: int, seq: int) -> bytes:
    header = ogg.HEADER.pack(b"OggS", 0, kind, 0, serial, seq, 0, len(segments))
    raw = bytearray(header + bytes(segments) + body)
    raw[22:26] = struct.pack("<I", ogg.crc32(bytes(raw)))
    return bytes(raw)


def mux(packets: list[bytes], serial: int = 7, per_page: int = 3) -> bytes:
    """Pages of at most `per_page` lacing values each, so packets span pages."""
    lacing: list[tuple[int, bytes]] = []
    for packet in packets:
        rest = packet
        while len(rest) >= 255:
            lacing.append((255, rest[:255]))
            rest = rest[255:]
        lacing.append((len(rest), rest))
    out = b""
    continued = False
    for seq, at in enumerate(range(0, len(lacing), per_page)):
        chunk = lacing[at : at + per_page]
        out += page(
            [n for n, _ in chunk], b"".join(b for _, b in chunk), int(continued), serial, seq
        )
        continued = chunk[-1][0] == 255
    return out


def test_reads_what_libogg_wrote(tmp_path: Path) -> None:
    path = tmp_path / "tone.opus"
    theirs = write_opus_file(path, 12)
    assert len(theirs) >= 12
    assert list(ogg.opus_frames(path.read_bytes())) == theirs


@settings(max_examples=60)
@given(st.lists(st.binary(max_size=700), max_size=12), st.integers(1, 6))
def test_any_packets_round_trip_through_pages(packets: list[bytes], per_page: int) -> None:
    data = mux([HEAD, TAGS, *packets], per_page=per_page)
    assert list(ogg.opus_frames(data)) == packets


def test_other_streams_are_skipped() -> None:
    other = page([3], b"xyz", 0, 2, 0)
    first = mux([HEAD], serial=1)
    rest = mux([TAGS, b"a"], serial=1)
    assert list(ogg.opus_frames(first + other + rest)) == [b"a"]


@settings(max_examples=60)
@given(st.data())
def test_any_damaged_byte_is_refused(data: st.DataObject) -> None:
    good = mux([HEAD, TAGS, b"frame one", b"frame two" * 40])
    at = data.draw(st.integers(0, len(good) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(good)
    bad[at] ^= flip
    with pytest.raises(ogg.OggError):
        list(ogg.opus_frames(bytes(bad)))


@settings(max_examples=100)
@given(st.binary(max_size=300))
def test_garbage_is_refused_with_ogg_error(garbage: bytes) -> None:
    with pytest.raises(ogg.OggError):
        list(ogg.opus_frames(garbage))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (mux([b"not a head", TAGS]), "OpusHead"),
        (mux([HEAD, b"no tags"]), "OpusTags"),
        (mux([HEAD, TAGS, b"x" * 600])[:-10], "truncated"),
        (mux([HEAD, TAGS, b"x" * 255], per_page=10)[:-28], "truncated page"),
        (mux([HEAD, TAGS, b"x" * 300], per_page=3)[: -(27 + 1 + 45)], "ends inside a packet"),
    ],
)
def test_refusals_say_why(data: bytes, message: str) -> None:
    with pytest.raises(ogg.OggError, match=message):
        list(ogg.opus_frames(data))
