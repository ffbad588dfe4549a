"""What a file is, decided by its first bytes, never by the client's Content-Type or the name.

A table of our own rather than a library (filetype, puremagic): the decision that matters is
not "which of 800 formats" but "may a browser show this inline", and that needs a short, exact
list we can read whole. Anything not in it is `application/octet-stream`, served as a download.
Text is inline only when it is valid UTF-8 and does not start like markup: an HTML or SVG file
is never given a type a browser would render.
"""

from __future__ import annotations

import msgspec

OCTET = "application/octet-stream"
SNIFF_BYTES = 512  # the most any rule below looks at


class Kind(msgspec.Struct, frozen=True):
    content_type: str
    inline: bool  # shown in the browser (the short safe list), else served as an attachment
    image: bool = False  # decoded, cleaned and previewed by relay.media.images


# (offset, magic, kind) in the order tried; the first match wins.
_MAGIC: tuple[tuple[int, bytes, Kind], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", Kind("image/png", True, True)),
    (0, b"\xff\xd8\xff", Kind("image/jpeg", True, True)),
    (0, b"GIF87a", Kind("image/gif", True, True)),
    (0, b"GIF89a", Kind("image/gif", True, True)),
    (0, b"%PDF-", Kind("application/pdf", True)),
    (0, b"ID3", Kind("audio/mpeg", True)),
    (0, b"fLaC", Kind("audio/flac", True)),
    (0, b"OggS", Kind("audio/ogg", True)),
    (0, b"\x1a\x45\xdf\xa3", Kind("video/webm", True)),
    (0, b"PK\x03\x04", Kind("application/zip", False)),
    (0, b"PK\x05\x06", Kind("application/zip", False)),
)
_MP4_BRANDS = (b"isom", b"iso2", b"mp41", b"mp42", b"avc1", b"dash", b"M4V ", b"MSNV")
_MARKUP = ("<!doctype", "<html", "<svg", "<?xml", "<head", "<script", "<body", "<iframe")


def sniff(head: bytes) -> Kind:
    """The kind of a file from its first bytes (at least SNIFF_BYTES of them, or all it has)."""
    for offset, magic, kind in _MAGIC:
        if head.startswith(magic, offset):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Kind("image/webp", True, True)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return Kind("audio/wav", True)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"M4A ":
            return Kind("audio/mp4", True)
        if brand in _MP4_BRANDS:
            return Kind("video/mp4", True)
        return Kind(OCTET, False)
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF2:
        return Kind("audio/mpeg", True)  # an MPEG audio frame without an ID3 tag
    if _plain_text(head):
        return Kind("text/plain; charset=utf-8", True)
    return Kind(OCTET, False)


def _plain_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        # The sniffed head may end inside a multi-byte character: allow that one cut.
        text = head.decode("utf-8") if len(head) < SNIFF_BYTES else _decode_cut(head)
    except UnicodeDecodeError:
        return False
    # Markup anywhere in the head: a browser that ignored nosniff could render it.
    lowered = text.lower()
    return not any(marker in lowered for marker in _MARKUP)


def _decode_cut(head: bytes) -> str:
    for cut in range(4):
        try:
            return head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    raise UnicodeDecodeError("utf-8", head, 0, len(head), "not text")


_INLINE = frozenset(kind.content_type for _, _, kind in _MAGIC if kind.inline) | {
    "image/webp",
    "audio/wav",
    "audio/mp4",
    "video/mp4",
    "text/plain; charset=utf-8",
}


def is_inline(content_type: str) -> bool:
    """Whether a stored file of this (sniffed) type may be shown inline."""
    return content_type in _INLINE
