"""The storage facade: one SQLite file, one writer task with group commit, pooled readers.

SQLite allows one writer at a time, so every write goes through `Store.write`, which queues the
request for the writer task. The writer takes everything queued, runs it in one transaction in a
worker thread (each request in its own savepoint, so one failing request does not undo the
others), commits, and only then wakes the callers: a write that returned is durable. Reads run on
their own connections in worker threads (WAL lets them proceed during a write).

Resource handling: `open_store` owns the database's lock (relay.storage.sqlite.lock: one store
per database file, and no `relay restore` while it is open), the writer task (in its own nursery)
and every connection; leaving it closes the queue, lets the writer commit what was already
queued, closes the connections, then releases the lock. If the block is cancelled or raises, the
writer stops after the batch in flight and requests still queued fail with StoreClosed. Later
writes raise StoreClosed.

Error handling: an exception raised by a write function reaches its caller only; the rest of the
batch commits. A failing COMMIT fails every request of the batch.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import ExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import outcome
import trio
from sqlite_utils import Database

from relay.ids import Snowflakes
from relay.storage.schema import migrate
from relay.storage.sqlite.lock import DatabaseInUse, database_lock
from relay.storage.sqlite.writecache import WriterCache

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from relay.metrics import Metrics

log = logging.getLogger("relay.storage")
T = TypeVar("T")

WRITE_QUEUE = 1024  # pending write requests; a full queue makes callers wait (backpressure)
MAX_BATCH = 256  # requests per transaction


class StoreClosed(Exception):
    """The store shut down before this request ran."""


class Pending(Generic[T]):
    """A queued write: `await pending.result()` returns (or raises) once its batch committed."""

    __slots__ = ("args", "done", "fn", "kwargs", "result")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.done = trio.Event()
        self.result: outcome.Outcome[Any] | None = None

    async def wait(self) -> T:
        await self.done.wait()
        return self.result_now()

    def result_now(self) -> T:
        """The result of a write whose `done` is set (raises the write's error)."""
        assert self.result is not None, "the write has not finished"
        return self.result.unwrap()  # type: ignore[no-any-return]


def connect(path: Path | str, *, readonly: bool = False) -> Database:
    """A connection with Relay's pragmas: WAL, foreign keys, a busy timeout."""
    # Percent-encoded: a '#', '?' or '%' in the path must not be read as URI syntax.
    uri = f"file:{quote(str(path))}" + ("?mode=ro" if readonly else "")
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives a process crash (the DESIGN's promise); only a power
        # loss may drop the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
    return Database(conn, execute_plugins=False)


class Store:
    """Async access to the database. `write` is serialized and batched; `read` is concurrent."""

    def __init__(
        self,
        writer: Database,
        readers: list[Database],
        *,
        inline: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.ids = Snowflakes()
        self._metrics = metrics  # each transaction's size and time
        self._writer = writer
        # What permission checks read, kept between transactions (relay.storage.sqlite.writecache).
        self._cache = WriterCache(writer.conn)
        self._inline = inline
        self._closed = False
        self._write_send, self._write_recv = trio.open_memory_channel[Pending[Any]](WRITE_QUEUE)
        self._reader_send, self._reader_recv = trio.open_memory_channel[Database](len(readers))
        for db in readers:
            self._reader_send.send_nowait(db)
        self.batches = 0  # committed transactions, for /metrics and the group-commit test
        self.writes = 0  # committed write requests

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(db, *args, **kwargs) in the next transaction; return its result once committed."""
        return await (await self.submit(fn, *args, **kwargs)).wait()

    @property
    def queued(self) -> int:
        """Writes submitted and not yet taken into a transaction by the writer."""
        return self._write_send.statistics().current_buffer_used

    async def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Pending[T]:
        """Queue a write and return with its handle (at once if the queue has room). Writes run
        and commit in the order they were submitted, so a caller that must publish in order (a
        channel actor) can queue several and await them in turn without waiting for one commit
        per write."""
        request: Pending[T] = Pending(fn, args, kwargs)
        if self._inline:
            if self._closed:
                raise StoreClosed("the store is closed")
            self._commit([request])
            request.done.set()
            return request
        try:
            try:
                self._write_send.send_nowait(request)  # no checkpoint while there is room
            except trio.WouldBlock:
                await self._write_send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreClosed("the store is closed") from None
        return request

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(db, *args, **kwargs) on a reader connection in a worker thread."""
        if self._inline:
            return fn(self._writer, *args, **kwargs)
        db = await self._reader_recv.receive()
        try:
            return await trio.to_thread.run_sync(partial(fn, db, *args, **kwargs))
        finally:
            self._reader_send.send_nowait(db)

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Take every queued request, commit them as one transaction, wake their callers."""
        task_status.started()
        try:
            async for first in self._write_recv:
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._write_recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                # abandon_on_cancel=False: a started transaction always finishes.
                started = time.perf_counter()
                await trio.to_thread.run_sync(self._commit, batch)
                if self._metrics is not None:
                    self._metrics.write_batch(len(batch), time.perf_counter() - started)
                for request in batch:
                    request.done.set()
        finally:
            self._fail_queued()  # before closing: close() discards whatever is still queued
            self._write_recv.close()

    def _fail_queued(self) -> None:
        while True:
            try:
                request = self._write_recv.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                return
            request.result = outcome.Error(StoreClosed("the store closed before this write"))
            request.done.set()

    def _commit(self, batch: list[Pending[Any]]) -> None:
        """Runs in a worker thread: fills in results only (trio.Event is not thread-safe)."""
        conn = self._writer.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            with self._cache.open_for():
                for request in batch:
                    conn.execute("SAVEPOINT request")
                    try:
                        request.result = outcome.Value(
                            request.fn(self._writer, *request.args, **request.kwargs)
                        )
                    except Exception as e:
                        request.result = outcome.Error(e)
                        conn.execute("ROLLBACK TO request")
                        self._cache.clear()  # it may hold rows only this request wrote
                    conn.execute("RELEASE request")
            conn.execute("COMMIT")
        except Exception as e:
            log.error("write transaction failed", exc_info=True)
            self._cache.clear()
            if conn.in_transaction:
                conn.rollback()
            for request in batch:
                request.result = outcome.Error(e)
        else:
            self.batches += 1
            self.writes += len(batch)

    def close(self) -> None:
        self._closed = True
        self._write_send.close()


@asynccontextmanager
async def open_store(
    path: Path, *, readers: int = 4, inline: bool = False, metrics: Metrics | None = None
) -> AsyncIterator[Store]:
    """Open (creating or migrating) the database at `path` and run its writer task; `metrics`
    gets each transaction's size and time."""
    if readers < 1 and not inline:
        raise ValueError("a threaded store needs at least one reader connection")
    with ExitStack() as lock:
        # Held until every connection is closed: `relay restore` waits for nothing else.
        await trio.to_thread.run_sync(_lock, path, lock)
        writer, reader_dbs = await trio.to_thread.run_sync(
            _open_all, path, 0 if inline else readers
        )
        store = Store(writer, reader_dbs, inline=inline, metrics=metrics)
        try:
            async with trio.open_nursery() as nursery:
                if not inline:
                    await nursery.start(store.run_writer)
                try:
                    yield store
                finally:
                    store.close()
        finally:
            # The writer closes last: the last connection out checkpoints and removes the WAL.
            for db in [*reader_dbs, writer]:
                db.close()


def _lock(path: Path, stack: ExitStack) -> None:
    """In a worker thread: create the directory and take the database's lock (DatabaseInUse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        stack.enter_context(database_lock(path))
    except DatabaseInUse as e:
        log.error("database not opened: %s", e)
        raise


def _open_all(path: Path, readers: int) -> tuple[Database, list[Database]]:
    """In a worker thread: open and migrate the writer, open the readers."""
    writer = connect(path)
    try:
        version = migrate(writer)
    except BaseException:
        writer.close()
        raise
    log.info("database ready", extra={"path": str(path), "schema_version": version})
    return writer, [connect(path, readonly=True) for _ in range(readers)]
