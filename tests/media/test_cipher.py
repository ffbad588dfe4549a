from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.media import cipher
from relay.media.cipher import BlobCorrupt, seal, unseal_range

KEY = bytes(range(32))


@given(
    st.binary(max_size=3000),
    st.integers(min_value=1, max_value=700),
    st.integers(min_value=0, max_value=3100),
    st.integers(min_value=0, max_value=3100),
)
@settings(max_examples=150)
def test_any_content_chunk_size_and_range_round_trips(
    plain: bytes, chunk: int, a: int, b: int
) -> None:
    blob = seal(KEY, plain, chunk)
    start, end = min(a, b), max(a, b)
    assert unseal_range(KEY, blob) == plain
    assert unseal_range(KEY, blob, start, end) == plain[start:end]


@given(st.binary(min_size=0, max_size=400), st.integers(min_value=1, max_value=64), st.data())
@settings(max_examples=100)
def test_a_flipped_byte_is_an_error_never_wrong_bytes(
    plain: bytes, chunk: int, data: st.DataObject
) -> None:
    blob = bytearray(seal(KEY, plain, chunk))
    i = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    blob[i] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(BlobCorrupt):
        unseal_range(KEY, bytes(blob))


def test_chunks_cannot_be_swapped_or_cut() -> None:
    chunk = 16
    blob = seal(KEY, bytes(range(64)), chunk)
    span = chunk + cipher.OVERHEAD
    h = cipher.HEADER_BYTES
    swapped = blob[:h] + blob[h + span : h + 2 * span] + blob[h : h + span] + blob[h + 2 * span :]
    with pytest.raises(BlobCorrupt):
        unseal_range(KEY, swapped)
    with pytest.raises(BlobCorrupt):
        unseal_range(KEY, blob[: h + 2 * span])  # the last two chunks dropped
    with pytest.raises(BlobCorrupt):
        unseal_range(bytes(32), blob)  # another key


def test_ciphertext_does_not_contain_plaintext() -> None:
    plain = b"the secret plan " * 1000
    assert b"secret plan" not in seal(KEY, plain, 4096)
