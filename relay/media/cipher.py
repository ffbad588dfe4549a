"""Chunked XChaCha20-Poly1305: how a blob is laid out on disk.

    header: b"RLB1" + chunk_size (u32, big-endian)
    chunk i: nonce (24 random bytes) + ciphertext of up to chunk_size bytes + tag (16)

Every chunk but the last holds exactly chunk_size plaintext bytes, so a plaintext offset maps
to a chunk without reading any other: a range read decrypts only the chunks it touches. Each
chunk's associated data is the header, its index and whether it is the last one (the STREAM
construction): chunks cannot be swapped, reordered, or cut off at a chunk boundary without
an error. The plaintext length follows from the file size alone. A blob always has at least
one chunk (an empty file is one empty chunk), so even it is authenticated.
"""

from __future__ import annotations

import io
import struct
from typing import Protocol

from nacl import bindings
from nacl._sodium import ffi, lib  # type: ignore[import-not-found]
from nacl.exceptions import CryptoError
from nacl.utils import random

MAGIC = b"RLB1"
HEADER_BYTES = 8
NONCE_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
OVERHEAD = NONCE_BYTES + TAG_BYTES
KEY_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES  # 32
DEFAULT_CHUNK = 64 * 1024
MAX_CHUNK = 16 * 1024 * 1024


class BlobCorrupt(Exception):
    """A blob failed authentication or is malformed: never answered with its bytes."""


def header(chunk_size: int) -> bytes:
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk size must be 1 to {MAX_CHUNK}")
    return MAGIC + struct.pack(">I", chunk_size)


def parse_header(data: bytes) -> int:
    """The chunk size a header names (BlobCorrupt if it is not one)."""
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        raise BlobCorrupt("not a blob header")
    chunk_size: int = struct.unpack(">I", data[4:8])[0]
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise BlobCorrupt("bad chunk size")
    return chunk_size


def _ad(head: bytes, index: int, last: bool) -> bytes:
    return head + struct.pack(">QB", index, last)


def seal_chunk(key: bytes, head: bytes, index: int, last: bool, plain: bytes) -> bytes:
    nonce = random(NONCE_BYTES)
    sealed = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, _ad(head, index, last), nonce, key
    )
    return nonce + sealed


def open_chunk(key: bytes, head: bytes, index: int, last: bool, sealed: bytes) -> bytes:
    if len(sealed) < OVERHEAD:
        raise BlobCorrupt(f"chunk {index} is cut short")
    try:
        return bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[NONCE_BYTES:], _ad(head, index, last), sealed[:NONCE_BYTES], key
        )
    except CryptoError:
        raise BlobCorrupt(f"chunk {index} failed authentication") from None


def open_span(
    key: bytes, head: bytes, sealed: bytes, first: int, last: int, size: int, chunk_size: int
) -> bytearray:
    """The plaintext of chunks `first` to `last` of a blob of `size` plaintext bytes, from their
    sealed bytes as laid out on disk (`sealed`, read in one piece). Each chunk is decrypted
    straight into the result through libsodium (PyNaCl's own binding): `open_chunk` per chunk
    costs four more copies of the data (slicing, a zeroed buffer, its copy out, the join), most
    of a download's CPU time."""
    total = chunk_count(size, chunk_size)
    if not 0 <= first <= last < total:
        raise BlobCorrupt("range outside the blob")
    plains = [min(chunk_size, size - index * chunk_size) for index in range(first, last + 1)]
    if len(sealed) != sum(plains) + len(plains) * OVERHEAD:
        raise BlobCorrupt(f"chunks {first}-{last} are cut short")
    out = bytearray(sum(plains))
    src = ffi.from_buffer(sealed)
    dst = ffi.from_buffer(out)
    at_in = at_out = 0
    for i, plain in enumerate(plains):
        index = first + i
        ad = _ad(head, index, index == total - 1)
        ok = lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
            dst + at_out, ffi.NULL, ffi.NULL, src + at_in + NONCE_BYTES, plain + TAG_BYTES,
            ad, len(ad), src + at_in, key,
        )  # fmt: skip
        if ok != 0:
            raise BlobCorrupt(f"chunk {index} failed authentication")
        at_in += plain + OVERHEAD
        at_out += plain
    return out


def plain_size(file_size: int, chunk_size: int) -> int:
    """The plaintext length of a blob file of `file_size` bytes (BlobCorrupt if impossible)."""
    body = file_size - HEADER_BYTES
    if body < OVERHEAD:
        raise BlobCorrupt("blob is cut short")
    chunks = -(-body // (chunk_size + OVERHEAD))
    size = body - chunks * OVERHEAD
    if size < (chunks - 1) * chunk_size + (0 if chunks == 1 else 1):
        raise BlobCorrupt("blob is cut short")
    return size


def chunk_count(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def chunk_span(index: int, size: int, chunk_size: int) -> tuple[int, int]:
    """(file offset, sealed length) of chunk `index` in a blob of `size` plaintext bytes."""
    plain = min(chunk_size, size - index * chunk_size)
    return HEADER_BYTES + index * (chunk_size + OVERHEAD), plain + OVERHEAD


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Sealer:
    """Encrypts a stream written in pieces of any size; `finish` seals the last chunk.
    Output goes to `sink` as whole sealed chunks (the header first)."""

    def __init__(self, key: bytes, sink: Sink, chunk_size: int = DEFAULT_CHUNK) -> None:
        self._key = key
        self._write = sink.write
        self._head = header(chunk_size)
        self._chunk = chunk_size
        self._pending = bytearray()
        self._index = 0
        self.size = 0
        self._write(self._head)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += data
        self.size += len(data)
        # Keep the last full chunk back: only `finish` knows whether it is the last one.
        while len(self._pending) > self._chunk:
            piece = bytes(self._pending[: self._chunk])
            del self._pending[: self._chunk]
            self._write(seal_chunk(self._key, self._head, self._index, False, piece))
            self._index += 1

    def finish(self) -> None:
        self._write(seal_chunk(self._key, self._head, self._index, True, bytes(self._pending)))
        self._pending.clear()


def seal(key: bytes, plain: bytes, chunk_size: int = DEFAULT_CHUNK) -> bytes:
    """The whole blob file for `plain` (for tests and small blobs)."""
    out = io.BytesIO()
    sealer = Sealer(key, out, chunk_size)
    sealer.write(plain)
    sealer.finish()
    return out.getvalue()


def unseal_range(key: bytes, blob: bytes, start: int = 0, end: int | None = None) -> bytes:
    """Plaintext bytes [start, end) of a whole blob held in memory (for tests and small blobs)."""
    chunk_size = parse_header(blob)
    size = plain_size(len(blob), chunk_size)
    end = size if end is None else min(end, size)
    out = bytearray()
    spans = chunks_for(start, end, size, chunk_size) or [(0, 0, 0)]  # empty: still authenticate
    for index, lo, hi in spans:
        offset, length = chunk_span(index, size, chunk_size)
        last = index == chunk_count(size, chunk_size) - 1
        plain = open_chunk(key, blob[:HEADER_BYTES], index, last, blob[offset : offset + length])
        out += plain[lo:hi]
    return bytes(out)


def chunks_for(start: int, end: int, size: int, chunk_size: int) -> list[tuple[int, int, int]]:
    """(chunk index, slice start, slice end) of each chunk plaintext [start, end) touches."""
    if start >= end:
        return []
    out = []
    for index in range(start // chunk_size, (end - 1) // chunk_size + 1):
        base = index * chunk_size
        out.append((index, max(start, base) - base, min(end, base + chunk_size) - base))
    return out
