"""Real sample files made in the tests: images written by Pillow, other formats by hand."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from PIL import Image

GPS_TAG = 0x8825
ORIENTATION_TAG = 0x0112


def image(fmt: str, size: tuple[int, int] = (64, 48), color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def jpeg_with_gps(size: tuple[int, int] = (80, 40), orientation: int = 6) -> bytes:
    """A JPEG carrying EXIF GPS coordinates and an orientation (6: rotate 90 to show)."""
    im = Image.new("RGB", size, "blue")
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    exif[0x010F] = "SpyCam Inc"  # Make
    exif.get_ifd(GPS_TAG).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    out = io.BytesIO()
    im.save(out, format="JPEG", exif=exif.tobytes(), comment=b"secret comment")
    return out.getvalue()


def animated_gif(frames: int = 3) -> bytes:
    ims = [Image.new("RGB", (32, 32), (i * 80 % 256, 0, 255 - i * 60)) for i in range(frames)]
    out = io.BytesIO()
    ims[0].save(out, format="GIF", save_all=True, append_images=ims[1:], duration=50, loop=0)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny IDAT: a decompression bomb's
    header without the bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2mp41" + b"\x00\x00\x00\x08free"
WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
)
# A GIF header that is also valid JavaScript (GIF89a=...): sniffed as a GIF, served as one.
POLYGLOT = b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00;*/=1;alert(document.domain);"
TEXT = "hello, ünïcode world\nsecond line\n".encode()


def zip_file() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("a.txt", "inside")
    return out.getvalue()
