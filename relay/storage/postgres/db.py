"""The storage facade on PostgreSQL: the SQLite store's group-commit writer over psycopg.

Same contract as relay.storage.sqlite.db.Store (it is a subclass and keeps `write`, `submit`,
`queued`, `run_writer` and `close`): every write of this process goes through one writer
connection, which takes everything queued, runs it as one transaction in a worker thread (a
SAVEPOINT per request, so one failing request does not undo the others), commits, and only then
wakes the callers. PostgreSQL commits about 1.7k single-row transactions/s on this machine but
45k rows/s at 100 rows per transaction, so group commit matters even more here than on SQLite.

psycopg 3's async API does not run under Trio; its sync API does, in worker threads. Reads take a
connection from a psycopg-pool pool (autocommit, so a read holds no transaction open).

The writer keeps a cache of permission rows as SQLite's does, emptied when another process
commits a change to them (relay.storage.postgres.writecache): its version is read in the same
round trip as BEGIN.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import psycopg
import trio
from psycopg_pool import ConnectionPool

from relay.ids import Snowflakes
from relay.storage.postgres.adapter import PgDatabase, prepare
from relay.storage.postgres.schema import migrate
from relay.storage.postgres.writecache import VERSION_SQL, PgWriterCache
from relay.storage.sqlite.db import WRITE_QUEUE, Pending, Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from relay.metrics import Metrics

log = logging.getLogger("relay.storage")
T = TypeVar("T")
CONNECT_TIMEOUT_S = 10


def connect(dsn: str) -> PgDatabase:
    """An autocommit connection (transactions are begun explicitly) wrapped for the queries."""
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    prepare(conn)
    return PgDatabase(conn)


class PgStore(Store):
    """Async access to a PostgreSQL database; see the module docstring."""

    def __init__(
        self,
        writer: PgDatabase,
        pool: ConnectionPool[Any],
        *,
        dsn: str,
        metrics: Metrics | None = None,
    ) -> None:
        # Not Store.__init__: it opens SQLite's writer cache. The attributes its methods use:
        self.ids = Snowflakes()
        self._metrics = metrics
        self._pg_writer = writer
        self._pg_cache = PgWriterCache(writer.conn)
        self._dsn = dsn  # to connect the writer again if its connection breaks
        self._pool = pool
        self._readers = trio.CapacityLimiter(pool.max_size)
        self._inline = False
        self._closed = False
        self._write_send, self._write_recv = trio.open_memory_channel[Pending[Any]](WRITE_QUEUE)
        self.batches = 0
        self.writes = 0

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(db, *args, **kwargs) on a pooled connection in a worker thread."""
        async with self._readers:
            return await trio.to_thread.run_sync(partial(self._read, fn, *args, **kwargs))

    def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._pool.connection() as conn:
            return fn(PgDatabase(conn), *args, **kwargs)

    def _commit(self, batch: list[Pending[Any]]) -> None:
        """Runs in a worker thread: fills in results only (trio.Event is not thread-safe)."""
        try:
            db = self._writer_connection()
        except psycopg.Error as e:
            log.error("cannot connect the writer to the database: %s", e)
            for request in batch:
                request.result = outcome.Error(e)
            return
        conn = db.conn.raw
        try:
            # Each round trip costs more than the statement itself here, so the transaction
            # and savepoint statements between two requests travel together (no parameters:
            # one simple query; never prepared, which a multi-statement query cannot be).
            # The first one also reads the cache's version (relay.storage.postgres.writecache).
            cursor = conn.execute(
                f"BEGIN; {VERSION_SQL}; SAVEPOINT request".encode(), prepare=False
            )
            cursor.nextset()  # BEGIN's result, then the version's
            version = cursor.fetchone()
            ended = "RELEASE SAVEPOINT request"  # what closes the previous request
            with self._pg_cache.open_for(None if version is None else int(version[0])):
                for i, request in enumerate(batch):
                    if i:  # the first request's savepoint is open already
                        conn.execute(f"{ended}; SAVEPOINT request".encode(), prepare=False)
                    try:
                        request.result = outcome.Value(
                            request.fn(db, *request.args, **request.kwargs)
                        )
                        ended = "RELEASE SAVEPOINT request"
                    except Exception as e:
                        request.result = outcome.Error(e)
                        ended = "ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request"
                        self._pg_cache.clear()  # it may hold rows only this request wrote
            conn.execute(f"{ended}; COMMIT".encode(), prepare=False)
        except Exception as e:
            log.error("write transaction failed", exc_info=True)
            self._pg_cache.clear()
            if not conn.broken and db.conn.in_transaction:
                conn.execute("ROLLBACK")
            for request in batch:
                request.result = outcome.Error(e)
        else:
            self.batches += 1
            self.writes += len(batch)

    def _writer_connection(self) -> PgDatabase:
        """The writer's connection, connected again if it broke (a database restart, a
        failover, an administrator's pg_terminate_backend): the batch that found it broken
        failed, the next ones need not."""
        if self._pg_writer.conn.raw.broken or self._pg_writer.conn.raw.closed:
            self._pg_writer.close()
            self._pg_writer = connect(self._dsn)
            self._pg_cache = PgWriterCache(self._pg_writer.conn)
            log.warning("writer connected to the database again")
        return self._pg_writer


@asynccontextmanager
async def open_pg_store(
    dsn: str, *, readers: int = 4, metrics: Metrics | None = None
) -> AsyncIterator[PgStore]:
    """Connect to the database at `dsn`, create or migrate its schema, and run the writer task;
    `metrics` gets each transaction's size and time."""
    if readers < 1:
        raise ValueError("a store needs at least one reader connection")
    writer = await trio.to_thread.run_sync(_open_writer, dsn)
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn,
        min_size=readers,
        max_size=readers,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
        configure=prepare,
        open=False,
        name="relay-readers",
    )
    store: PgStore | None = None
    try:
        await trio.to_thread.run_sync(partial(pool.open, wait=True, timeout=CONNECT_TIMEOUT_S))
        store = PgStore(writer, pool, dsn=dsn, metrics=metrics)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run_writer)
            try:
                yield store
            finally:
                store.close()
    finally:
        try:
            with trio.CancelScope(shield=True):  # closed even when the block was cancelled
                await trio.to_thread.run_sync(pool.close)
        finally:
            (store._pg_writer if store is not None else writer).close()


def _open_writer(dsn: str) -> PgDatabase:
    """In a worker thread: connect and migrate the writer."""
    writer = connect(dsn)
    try:
        version = migrate(writer.conn.raw)
    except BaseException:
        writer.close()
        raise
    log.info("database ready", extra={"database": "postgresql", "schema_version": version})
    return writer
