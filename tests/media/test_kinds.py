from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.media.kinds import OCTET, sniff
from relay.media.names import MAX_NAME_CHARS, clean_filename
from tests.media import samples

TABLE = [
    ("png", lambda: samples.image("PNG"), "image/png", True),
    ("jpeg+gps", samples.jpeg_with_gps, "image/jpeg", True),
    ("gif", samples.animated_gif, "image/gif", True),
    ("webp", lambda: samples.image("WEBP"), "image/webp", True),
    ("mp4", lambda: samples.MP4, "video/mp4", True),
    ("webm", lambda: samples.WEBM, "video/webm", True),
    ("pdf", lambda: samples.PDF, "application/pdf", True),
    ("text", lambda: samples.TEXT, "text/plain; charset=utf-8", True),
    ("html", lambda: samples.HTML, OCTET, False),
    ("svg", lambda: samples.SVG, OCTET, False),
    ("polyglot", lambda: samples.POLYGLOT, "image/gif", True),
    ("zip", samples.zip_file, "application/zip", False),
    ("empty", lambda: b"", OCTET, False),
    ("binary", lambda: bytes(range(256)), OCTET, False),
]


@pytest.mark.parametrize(
    ("name", "make", "content_type", "inline"), TABLE, ids=[t[0] for t in TABLE]
)
def test_type_from_content(name: str, make: object, content_type: str, inline: bool) -> None:
    assert callable(make)
    kind = sniff(make()[:512])
    assert (kind.content_type, kind.inline) == (content_type, inline)


def test_text_with_markup_later_is_not_inline() -> None:
    assert sniff(b"just some notes\n" * 3 + b"<script>alert(1)</script>").content_type == OCTET


@given(st.binary(max_size=600))
@settings(max_examples=200)
def test_sniff_never_fails_and_markup_never_inline(head: bytes) -> None:
    kind = sniff(head)
    if kind.inline and kind.content_type.startswith("text/"):
        assert b"<script" not in head.lower()


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\system32\\evil.exe", "evil.exe"),
        ("photo\u202egnp.exe", "photognp.exe"),  # a right-to-left override, dropped
        ("a\x00b\x1fc\r\n.txt", "abc.txt"),
        ("...hidden", "hidden"),
        ("..", "file"),
        ("", "file"),
        ("   ", "file"),
        ("zero\u200bwidth.png", "zerowidth.png"),
        ("CON.txt", "file_CON.txt"),
        ('what?<is>"this".txt', "what__is__this_.txt"),
    ],
)
def test_hostile_file_names(given_name: str, expected: str) -> None:
    assert clean_filename(given_name) == expected


def test_long_name_keeps_extension() -> None:
    name = clean_filename("x" * 500 + ".jpeg")
    assert len(name) == MAX_NAME_CHARS
    assert name.endswith(".jpeg")


@given(st.text(max_size=300))
@settings(max_examples=200)
def test_clean_filename_always_safe(name: str) -> None:
    cleaned = clean_filename(name)
    assert 0 < len(cleaned) <= MAX_NAME_CHARS
    assert "/" not in cleaned
    assert "\\" not in cleaned
    assert not cleaned.startswith(".")
    assert all(ord(c) >= 0x20 and c not in "\u202e\u200b\u2066" for c in cleaned)
