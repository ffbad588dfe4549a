from __future__ import annotations

import os
import stat
import threading
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.media import cipher
from relay.media.blobs import LocalBlobStore
from relay.media.cipher import BlobCorrupt
from relay.media.keys import KEY_FILE, MediaKeyError, load_or_create_key

if TYPE_CHECKING:
    from pathlib import Path

KEY = bytes(range(32))
CHUNK = 1000


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "media", KEY, chunk_size=CHUNK)


def test_range_reads_across_chunk_boundaries(store: LocalBlobStore) -> None:
    plain = os.urandom(5 * CHUNK + 123)
    ref = store.put(plain)
    reader = store.open(ref.digest)
    assert reader is not None
    try:
        assert reader.size == len(plain)
        for start, end in [
            (0, len(plain)),
            (999, 1001),
            (1000, 2000),
            (1, 4999),
            (5000, 5123),
            (5122, 9999),
            (2500, 2501),
            (0, 0),
        ]:
            assert reader.read(start, end) == plain[start:end]
    finally:
        reader.close()


def test_stored_blob_does_not_contain_plaintext(store: LocalBlobStore) -> None:
    plain = b"meet me at the old mill at midnight " * 200
    ref = store.put(plain)
    on_disk = store.path(ref.digest).read_bytes()
    assert b"old mill" not in on_disk
    assert len(on_disk) > len(plain)


def test_flipped_byte_on_disk_is_an_error(store: LocalBlobStore) -> None:
    plain = os.urandom(3 * CHUNK)
    ref = store.put(plain)
    path = store.path(ref.digest)
    data = bytearray(path.read_bytes())
    data[cipher.HEADER_BYTES + CHUNK + cipher.OVERHEAD + 30] ^= 0x01  # inside chunk 1
    path.write_bytes(bytes(data))
    reader = store.open(ref.digest)
    assert reader is not None
    assert reader.read(0, CHUNK) == plain[:CHUNK]  # chunk 0 is intact
    with pytest.raises(BlobCorrupt):
        reader.read(CHUNK - 5, CHUNK + 5)
    reader.close()


def test_identical_concurrent_writes_are_stored_once(store: LocalBlobStore, tmp_path: Path) -> None:
    plain = os.urandom(10 * CHUNK)
    refs = []
    barrier = threading.Barrier(4)

    def upload() -> None:
        w = store.writer()
        barrier.wait()
        for i in range(0, len(plain), 777):
            w.write(plain[i : i + 777])
        refs.append(w.commit())

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.digest for r in refs}) == 1
    assert list(store.digests()) == [refs[0].digest]
    assert not list((tmp_path / "media" / "tmp").iterdir())


def test_abort_and_crash_leftovers_are_never_blobs(store: LocalBlobStore, tmp_path: Path) -> None:
    w = store.writer()
    w.write(b"half a file")
    # A crash now leaves only the temp file: no blob is visible, and the sweep removes it.
    assert list(store.digests()) == []
    assert store.clean_temp(0) == 1
    w.abort()
    assert store.open("0" * 64) is None
    assert store.open("../../etc/passwd") is None


def test_read_back_before_commit(store: LocalBlobStore) -> None:
    w = store.writer()
    w.write(b"abc" * 1000)
    assert w.read_back() == b"abc" * 1000
    assert w.head == (b"abc" * 1000)[:512]
    ref = w.commit()
    assert ref.size == 3000


def test_key_file_made_once_with_mode_0600(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "data", None)
    assert len(key) == 32
    mode = stat.S_IMODE((tmp_path / "data" / KEY_FILE).stat().st_mode)
    assert mode == 0o600
    assert load_or_create_key(tmp_path / "data", None) == key
    assert load_or_create_key(tmp_path / "x", "ab" * 32) == bytes([0xAB]) * 32
    with pytest.raises(MediaKeyError):
        load_or_create_key(tmp_path / "x", "not hex")


@given(
    st.binary(max_size=3000),
    st.integers(min_value=1, max_value=700),
    st.integers(min_value=0, max_value=3100),
    st.integers(min_value=0, max_value=3100),
)
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_reader_any_content_chunk_size_and_range(
    tmp_path: Path, plain: bytes, chunk: int, a: int, b: int
) -> None:
    """The serving path (one pread, chunks decrypted in place: cipher.open_span)."""
    store = LocalBlobStore(tmp_path / f"media-{chunk}", KEY, chunk_size=chunk)
    reader = store.open(store.put(plain).digest)
    assert reader is not None
    try:
        start, end = min(a, b), max(a, b)
        assert reader.read(start, end) == plain[start:end]
        assert reader.read(0, len(plain)) == plain
    finally:
        reader.close()


@given(st.binary(min_size=1, max_size=400), st.integers(min_value=1, max_value=64), st.data())
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_reader_flipped_byte_is_an_error_never_wrong_bytes(
    tmp_path: Path, plain: bytes, chunk: int, data: st.DataObject
) -> None:
    store = LocalBlobStore(tmp_path / f"media-{chunk}", KEY, chunk_size=chunk)
    path = store.path(store.put(plain).digest)
    blob = bytearray(path.read_bytes())
    i = data.draw(st.integers(min_value=cipher.HEADER_BYTES, max_value=len(blob) - 1))
    original = bytes(blob)
    blob[i] ^= data.draw(st.integers(min_value=1, max_value=255))
    path.write_bytes(bytes(blob))
    reader = store.open(path.name)
    assert reader is not None
    try:
        with pytest.raises(BlobCorrupt):
            reader.read(0, len(plain))
    finally:
        reader.close()
        path.write_bytes(original)
