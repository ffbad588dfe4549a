from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.media.form import Data, FormError, FormStream, Part, PartEnd, boundary_of

BOUNDARY = b"relayboundary1234"


def body(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n"
        out += data + b"\r\n"
    return out + b"--" + BOUNDARY + b"--\r\n"


def parse(raw: bytes, cuts: list[int]) -> list[tuple[str, str | None, bytes]]:
    stream = FormStream(BOUNDARY)
    events = []
    last = 0
    for cut in [*sorted({min(c, len(raw)) for c in cuts}), len(raw)]:
        events += stream.feed(raw[last:cut])
        last = cut
    stream.close()
    out: list[tuple[str, str | None, bytes]] = []
    current: list[bytes] = []
    for event in events:
        if isinstance(event, Part):
            head = (event.name, event.filename)
            current = []
        elif isinstance(event, Data):
            current.append(event.data)
        else:
            assert isinstance(event, PartEnd)
            out.append((*head, b"".join(current)))
    return out


names = st.text(alphabet="abcdefghij[]0123456789_", min_size=1, max_size=12)
# Contents that cannot contain the boundary line.
contents = st.binary(max_size=300).filter(lambda b: BOUNDARY not in b)


@given(
    st.lists(st.tuples(names, st.none() | names, contents), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
)
@settings(max_examples=150)
def test_any_parts_any_splits_round_trip(
    parts: list[tuple[str, str | None, bytes]], cuts: list[int]
) -> None:
    assert parse(body(parts), cuts) == parts


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=5))
@settings(max_examples=150)
def test_garbage_is_form_error_or_parts(raw: bytes, cuts: list[int]) -> None:
    with contextlib.suppress(FormError):
        parse(raw, cuts)


def test_too_many_parts_and_early_end() -> None:
    many = body([("f", None, b"x")] * 17)
    with pytest.raises(FormError):
        parse(many, [])
    with pytest.raises(FormError, match="early"):
        parse(body([("a", None, b"x")])[:-10], [])


def test_boundary_of() -> None:
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    for bad in (
        "application/json",
        "multipart/form-data",
        "multipart/form-data; boundary=" + "x" * 71,
    ):
        with pytest.raises(FormError):
            boundary_of(bad)
