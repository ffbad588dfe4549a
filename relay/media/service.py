"""`Media`: the blob store, the image workers and the URL signer, as the rest of Relay uses them.

Uploads arrive as chunks (`Spool.write`) and are written, encrypted, to a temp file as they
come: nothing holds a whole file in memory except an image being decoded (bounded by
max_upload_bytes and the pixel limits). `Spool.finish` decides the kind from the first bytes;
an image is cleaned (relay.media.images) and its cleaned bytes, preview and thumbnail stored;
anything else is committed as written. Every disk step runs in a worker thread behind
`disk_limiter`; image work behind the image pool's own.

Error handling: limits raise PayloadTooLarge (413) at the first byte over; a bad image
BadRequest("bad_image"); a nearly full disk InsufficientStorage (507). A spool that does not
finish is aborted (its temp file deleted) by whoever owns it (`open_spool`).
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import trio

from relay.errors import BadRequest, InsufficientStorage, PayloadTooLarge, RequestTimeout
from relay.media import images, urls
from relay.media.blobs import BlobRef, LocalBlobStore
from relay.media.keys import load_or_create_key
from relay.media.kinds import SNIFF_BYTES, Kind, sniff
from relay.media.names import clean_filename

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable

    import outcome

    from relay.config import Settings
    from relay.media.blobs import BlobReader, BlobStore, BlobWriter

T = TypeVar("T")
DISK_THREADS = 4
READ_STEP = 1024 * 1024  # plaintext bytes decrypted per worker-thread trip when serving
SWEEP_BATCH = 200  # blobs checked per turn of the blob lock


class Stored(msgspec.Struct, frozen=True, kw_only=True):
    """A stored upload: the blob, what it is, and for an image its size and previews."""

    blob: BlobRef
    filename: str
    content_type: str
    inline: bool
    width: int | None = None
    height: int | None = None
    preview: BlobRef | None = None
    thumbnail: BlobRef | None = None

    @property
    def digests(self) -> list[str]:
        return [b.digest for b in (self.blob, self.preview, self.thumbnail) if b is not None]


class Budget:
    """One request's upload limits, checked as bytes arrive: the bytes left of the user's
    daily quota, and the slow-upload floor (as a deadline for the next bytes)."""

    def __init__(self, quota_left: int, min_rate: int, grace_s: float) -> None:
        self.quota_left = quota_left
        self.received = 0
        self._min_rate = min_rate
        self._grace_s = grace_s
        self._start = trio.current_time()

    def take(self, n: int) -> None:
        self.received += n
        if self.received > self.quota_left:
            raise PayloadTooLarge(
                "this upload would pass your daily upload quota", code="upload_quota"
            )

    def deadline(self) -> float:
        """When more bytes must have arrived: the average since the start stays >= the floor."""
        return self._start + max(self._grace_s, self.received / self._min_rate)

    def too_slow(self) -> RequestTimeout:
        return RequestTimeout(
            f"the upload stayed slower than {self._min_rate} bytes a second", code="upload_too_slow"
        )


async def bounded_chunks(
    chunks: AsyncGenerator[bytes, None], budget: Budget
) -> AsyncGenerator[bytes, None]:
    """The body's chunks, cut with 408 upload_too_slow when the next one is late. Use it
    under `contextlib.aclosing`: it closes `chunks` when it is closed."""
    try:
        while True:
            with trio.move_on_at(budget.deadline()) as scope:
                try:
                    data = await anext(chunks)
                except StopAsyncIteration:
                    return
            if scope.cancelled_caught:
                raise budget.too_slow()
            yield data
    finally:
        await chunks.aclose()


class Media:
    def __init__(self, store: BlobStore, key: bytes, settings: Settings, root: Path) -> None:
        self.store = store
        self.settings = settings
        self.root = root
        self.workers = images.ImageWorkers(settings.image_threads)
        self.disk_limiter = trio.CapacityLimiter(DISK_THREADS)
        self._url_key = urls.signing_key(key)
        self._blob_lock = trio.Lock()
        self._pending: collections.Counter[str] = collections.Counter()

    @classmethod
    def open(cls, settings: Settings) -> Media:
        """The media service of a data directory (its key made on first start)."""
        data = Path(settings.data_dir)
        key = load_or_create_key(data, settings.media_key)
        root = data / "media"
        return cls(LocalBlobStore(root, key), key, settings, root)

    # -- disk -----------------------------------------------------------------------------------

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def disk_low(self) -> bool:
        return self.free_bytes() < self.settings.min_free_disk_bytes

    def require_disk(self) -> None:
        if self.disk_low():
            raise InsufficientStorage(
                "the server is low on disk space; uploads are refused", code="insufficient_storage"
            )

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.disk_limiter)

    # -- uploads --------------------------------------------------------------------------------

    def budget(self, quota_left: int) -> Budget:
        s = self.settings
        return Budget(quota_left, s.upload_min_rate, s.upload_grace_s)

    async def spool(self, filename: str, budget: Budget) -> Spool:
        writer = await trio.to_thread.run_sync(self.store.writer, limiter=self.disk_limiter)
        return Spool(self, writer, clean_filename(filename), budget)

    async def put(self, data: bytes) -> BlobRef:
        """Store bytes as a blob, held as pending until `settled` (see `release`)."""
        w = await self.blocking(self.store.writer)
        try:
            await self.blocking(w.write, data)
        except BaseException:
            await self.blocking(w.abort)
            raise
        return await self.commit(w)

    async def commit(self, writer: BlobWriter) -> BlobRef:
        """Commit a written blob, held as pending until `settled`: from here until the row
        that names it is written, `release` will not delete it."""
        async with self._blob_lock:
            try:
                ref = await self.blocking(writer.commit)
            except BaseException:
                await self.blocking(writer.abort)
                raise
            self._pending[ref.digest] += 1
        return ref

    def settled(self, digests: Iterable[str]) -> None:
        """The rows naming these blobs are written (or will not be): no longer pending."""
        for digest in digests:
            self._pending[digest] -= 1
            if self._pending[digest] <= 0:
                del self._pending[digest]

    async def release(
        self, digests: list[str], unreferenced: Callable[[list[str]], Awaitable[list[str]]]
    ) -> int:
        """Delete those of `digests` that no row names (`unreferenced` asks the database)
        and no upload is about to; how many went. Under the same lock as `commit`, so a blob
        cannot be deleted between an identical upload finding it and its row being written."""
        deleted = 0
        async with self._blob_lock:
            candidates = [d for d in dict.fromkeys(digests) if d not in self._pending]
            for digest in await unreferenced(candidates) if candidates else []:
                deleted += await self.blocking(self.store.delete, digest)
        return deleted

    async def sweep(
        self, unreferenced: Callable[[list[str]], Awaitable[list[str]]], older_than_s: float
    ) -> int:
        """Delete orphan blobs (written more than `older_than_s` ago, named by no row) and
        temp files a crash left; how many blobs went."""
        await self.blocking(self.store.clean_temp, older_than_s)
        old = await self.blocking(lambda: list(self.store.digests(older_than_s)))
        deleted = 0
        for i in range(0, len(old), SWEEP_BATCH):
            deleted += await self.release(old[i : i + SWEEP_BATCH], unreferenced)
        return deleted

    # -- serving --------------------------------------------------------------------------------

    def sign(self, path: str) -> str:
        expires = int(time.time()) + self.settings.file_url_ttl_s
        # Rounded up to the hour: one URL per file per hour, so browsers can cache it.
        expires += -expires % 3600
        return urls.sign(self._url_key, path, expires)

    def verify(self, path: str, ex: str | None, sig: str | None) -> bool:
        return urls.verify(self._url_key, path, ex, sig, time.time())

    async def open_blob(self, digest: str) -> BlobReader | None:
        return await trio.to_thread.run_sync(self.store.open, digest, limiter=self.disk_limiter)

    async def stream(self, reader: BlobReader, start: int, end: int) -> AsyncIterator[bytes]:
        """Plaintext [start, end), decrypted a step at a time; closes the reader at the end.
        The next step is read and decrypted in a worker thread while the current one is being
        sent (one step ahead, no more), so the disk and decryption overlap the socket writes
        instead of taking turns with them."""
        steps = [(at, min(end, at + READ_STEP)) for at in range(start, end, READ_STEP)]
        outstanding: list[_Read] = []
        try:
            for i in range(len(steps)):
                if not outstanding:
                    outstanding.append(await self._read_soon(reader, *steps[i]))
                current = outstanding[0]
                await current.done.wait()
                outstanding.pop(0)
                if i + 1 < len(steps):
                    outstanding.append(await self._read_soon(reader, *steps[i + 1]))
                assert current.result is not None
                yield current.result.unwrap()
        finally:
            # A read still running uses the reader: wait for it (one step) before closing.
            with trio.CancelScope(shield=True):
                for pending in outstanding:
                    await pending.done.wait()
            reader.close()

    async def _read_soon(self, reader: BlobReader, start: int, end: int) -> _Read:
        """Start `reader.read(start, end)` in a worker thread (behind disk_limiter) without
        waiting for it: trio.to_thread.run_sync would hold the generator until it is done."""
        pending = _Read()
        await self.disk_limiter.acquire_on_behalf_of(pending)
        token = trio.lowlevel.current_trio_token()

        def finished(result: outcome.Outcome[bytes]) -> None:
            def in_trio() -> None:
                self.disk_limiter.release_on_behalf_of(pending)
                pending.result = result
                pending.done.set()

            token.run_sync_soon(in_trio)

        trio.lowlevel.start_thread_soon(lambda: reader.read(start, end), finished)
        return pending


class _Read:
    """A read started by `Media._read_soon`: `done` is set once `result` is in."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: outcome.Outcome[bytes] | None = None


class Spool:
    """One file being received: written encrypted to a temp file as its bytes arrive."""

    def __init__(self, media: Media, writer: BlobWriter, filename: str, budget: Budget) -> None:
        self._media = media
        self._writer = writer
        self.filename = filename
        self._budget = budget
        self._buffer = bytearray()
        self.size = 0

    async def write(self, data: bytes) -> None:
        limit = self._media.settings.max_upload_bytes
        if self.size + len(data) > limit:
            raise PayloadTooLarge(f"a file may be at most {limit} bytes", code="file_too_large")
        self._budget.take(len(data))
        self.size += len(data)
        # Small pieces are gathered: a thread trip per network read would cost more than it moves.
        self._buffer += data
        if len(self._buffer) >= 64 * 1024:
            await self._flush()

    async def _flush(self) -> None:
        if self._buffer:
            piece = bytes(self._buffer)
            self._buffer.clear()
            await self._media.blocking(self._writer.write, piece)

    async def finish(self) -> Stored:
        """Store the file (an image cleaned first) and return what was stored."""
        await self._flush()
        kind = sniff(self._writer.head[:SNIFF_BYTES])
        if kind.image:
            return await self._finish_image(kind)
        blob = await self._media.commit(self._writer)
        return Stored(
            blob=blob, filename=self.filename, content_type=kind.content_type, inline=kind.inline
        )

    async def _finish_image(self, kind: Kind) -> Stored:
        media = self._media
        data = await media.blocking(self._writer.read_back)
        await media.blocking(self._writer.abort)  # the original, with its metadata, is not kept
        try:
            cleaned = await media.workers.clean(data, kind.content_type)
        except images.BadImage as e:
            raise BadRequest(f"{self.filename}: {e}", code="bad_image") from None
        del data
        blob = await media.put(cleaned.data)
        preview = await media.put(cleaned.preview) if cleaned.preview is not None else None
        return Stored(
            blob=blob,
            filename=self.filename,
            content_type=kind.content_type,
            inline=True,
            width=cleaned.width,
            height=cleaned.height,
            preview=preview,
            thumbnail=await media.put(cleaned.thumbnail),
        )

    async def abort(self) -> None:
        with trio.CancelScope(shield=True), contextlib.suppress(OSError):
            await self._media.blocking(self._writer.abort)
