"""Blob stores: content-addressed, encrypted (relay.media.cipher), written atomically.

`BlobStore` is the interface the rest of Relay uses; `LocalBlobStore` keeps blobs under a
directory: `blobs/ab/<sha256 hex>` for committed blobs, `tmp/` for writes in progress. Its
methods block (disk, hashing, encryption): callers run them in worker threads. An
S3-compatible store would implement the same methods (a multipart upload for the writer, a
ranged GET of the chunks for `read`).

Resource handling: a writer owns one temp file until `commit` or `abort`; a temp file left by
a crash is never visible as a blob (only a rename makes it one) and `clean_temp` deletes it.
Error handling: a blob that fails authentication raises BlobCorrupt, never wrong bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from typing import TYPE_CHECKING, BinaryIO, Protocol

import msgspec

from relay.media import cipher

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class BlobRef(msgspec.Struct, frozen=True):
    digest: str  # SHA-256 of the plaintext, hex: the blob's address
    size: int  # plaintext bytes


class BlobWriter(Protocol):
    size: int
    head: bytes  # the first bytes written (up to relay.media.kinds.SNIFF_BYTES)

    def write(self, data: bytes) -> None: ...
    def read_back(self) -> bytes:
        """Everything written so far, decrypted (for image processing before commit)."""

    def commit(self) -> BlobRef: ...
    def abort(self) -> None: ...


class BlobReader(Protocol):
    size: int
    mtime: float

    def read(self, start: int, end: int) -> bytes: ...
    def close(self) -> None: ...


class BlobStore(Protocol):
    def writer(self) -> BlobWriter: ...
    def put(self, data: bytes) -> BlobRef: ...
    def open(self, digest: str) -> BlobReader | None: ...
    def delete(self, digest: str) -> bool: ...
    def digests(self, older_than_s: float) -> Iterator[str]: ...
    def clean_temp(self, older_than_s: float) -> int: ...


def is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class LocalBlobStore:
    def __init__(self, root: Path, key: bytes, chunk_size: int = cipher.DEFAULT_CHUNK) -> None:
        if len(key) != cipher.KEY_BYTES:
            raise ValueError("the media key must be 32 bytes")
        self.root = root
        self._key = key
        self._chunk = chunk_size
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise ValueError("not a blob digest")
        return self._blobs / digest[:2] / digest

    def writer(self) -> LocalWriter:
        return LocalWriter(self, self._key, self._chunk)

    def put(self, data: bytes) -> BlobRef:
        w = self.writer()
        try:
            w.write(data)
            return w.commit()
        except BaseException:
            w.abort()
            raise

    def open(self, digest: str) -> LocalReader | None:
        try:
            f = self.path(digest).open("rb")
        except (FileNotFoundError, ValueError):
            return None
        try:
            return LocalReader(f, self._key)
        except BaseException:
            f.close()
            raise

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except (FileNotFoundError, ValueError):
            return False
        return True

    def digests(self, older_than_s: float = 0.0) -> Iterator[str]:
        """Every committed blob last written more than `older_than_s` ago."""
        cutoff = time.time() - older_than_s
        for sub in self._blobs.iterdir():
            for entry in os.scandir(sub):
                if is_digest(entry.name) and entry.stat().st_mtime <= cutoff:
                    yield entry.name

    def clean_temp(self, older_than_s: float = 0.0) -> int:
        """Delete temp files older than that (a crash's leftovers); how many."""
        cutoff = time.time() - older_than_s
        count = 0
        for entry in os.scandir(self._tmp):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime <= cutoff:
                    os.unlink(entry.path)
                    count += 1
        return count

    def _install(self, tmp: Path, digest: str) -> None:
        final = self.path(digest)
        final.parent.mkdir(exist_ok=True)
        if final.exists():
            # Stored once: the same content is already there. Touch it so the orphan sweep
            # does not take it between now and the row that will refer to it.
            tmp.unlink()
            with contextlib.suppress(FileNotFoundError):
                os.utime(final)
            return
        os.replace(tmp, final)
        _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalWriter:
    def __init__(self, store: LocalBlobStore, key: bytes, chunk_size: int) -> None:
        self._store = store
        self._key = key
        self._path = store._tmp / f"{secrets.token_hex(12)}.part"
        self._file = self._path.open("xb")
        self._sealer = cipher.Sealer(key, self._file, chunk_size)
        self._hash = hashlib.sha256()
        self._finished = False
        self.size = 0
        self.head = b""

    def write(self, data: bytes) -> None:
        if len(self.head) < 512:
            self.head += data[: 512 - len(self.head)]
        self._hash.update(data)
        self._sealer.write(data)
        self.size += len(data)

    def _finish(self) -> None:
        if not self._finished:
            self._sealer.finish()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._finished = True

    def read_back(self) -> bytes:
        self._finish()
        return cipher.unseal_range(self._key, self._path.read_bytes())

    def commit(self) -> BlobRef:
        self._finish()
        digest = self._hash.hexdigest()
        self._store._install(self._path, digest)
        return BlobRef(digest, self.size)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()


class LocalReader:
    """An open blob: `read(start, end)` decrypts only the chunks that range touches."""

    def __init__(self, f: BinaryIO, key: bytes) -> None:
        self._f = f
        self._key = key
        self._head = f.read(cipher.HEADER_BYTES)
        self._chunk = cipher.parse_header(self._head)
        stat = os.fstat(f.fileno())
        self.size = cipher.plain_size(stat.st_size, self._chunk)
        self.mtime = stat.st_mtime
        self._chunks = cipher.chunk_count(self.size, self._chunk)

    def read(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        first, last = start // self._chunk, (end - 1) // self._chunk
        offset, _ = cipher.chunk_span(first, self.size, self._chunk)
        last_offset, last_length = cipher.chunk_span(last, self.size, self._chunk)
        # One read for every chunk of the range, then each decrypted in place (open_span).
        sealed = os.pread(self._f.fileno(), last_offset + last_length - offset, offset)
        plain = cipher.open_span(self._key, self._head, sealed, first, last, self.size, self._chunk)
        lo = start - first * self._chunk
        return bytes(memoryview(plain)[lo : lo + end - start])

    def close(self) -> None:
        self._f.close()
