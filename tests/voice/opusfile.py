"""Ogg Opus files for tests, written by libopus and libogg through PyAV (not by our code)."""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any

import av

if TYPE_CHECKING:
    from pathlib import Path


def write_opus_file(path: Path, frames: int) -> list[bytes]:
    """`frames` 20 ms frames of a 440 Hz tone as an Ogg Opus file; returns the Opus packets
    PyAV's own demuxer reads back from it."""
    with av.open(str(path), "w", format="ogg") as out:
        stream: Any = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        for i in range(frames):
            frame = av.AudioFrame(format="s16", layout="mono", samples=960)
            samples = (
                int(8000 * math.sin(2 * math.pi * 440 * (i * 960 + n) / 48000)) for n in range(960)
            )
            frame.planes[0].update(b"".join(struct.pack("<h", s) for s in samples))
            frame.sample_rate, frame.pts = 48000, i * 960
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with av.open(str(path)) as back:
        return [bytes(p) for p in back.demux() if p.size]
