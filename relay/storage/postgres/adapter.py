"""A psycopg connection offering what the shared query modules use of a sqlite_utils Database.

The modules of relay/storage/*.py take `db` and call `db.execute(sql, params)` (then fetchone,
fetchall, iteration, rowcount), `db.query(sql, params)` (dict rows), `db.atomic()` and
`db.conn.executemany`. `PgDatabase` offers exactly these, running each statement through
relay.storage.postgres.translate (once per distinct SQL string), so one set of query modules
serves both databases.

Three differences of PostgreSQL are made up for here:
- text with a NUL character, which PostgreSQL cannot store, is refused with BadRequest (400,
  invalid_field) before it reaches the database;
- an integrity error is raised as `sqlite3.IntegrityError`, which the modules catch;
- a failed statement aborts a PostgreSQL transaction (SQLite's goes on). A module that catches an
  IntegrityError and goes on (a bot's username taken: try the next) would then fail at its next
  statement, so a plain INSERT into a table with a secondary UNIQUE key runs in a savepoint of
  its own. Other failures end the request, whose savepoint the store rolls back anyway.

Two additions serve the writer: `PgConn.touched`, called after every statement that may change
a row of the writer's permission cache (relay.storage.postgres.writecache), and
`PgDatabase.execute_together`, which sends several statements in one round trip (psycopg's
pipeline mode; relay.storage.together).
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.rows import dict_row

from relay.errors import BadRequest
from relay.storage.postgres.translate import translate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence


class _BoolAsInteger(Dumper):
    """Python bools as 0/1 integers, as sqlite3 stores them: the schema's flags are integers."""

    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


def prepare(conn: psycopg.Connection[Any]) -> None:
    """Set up a new connection for the shared queries (also a psycopg-pool `configure`)."""
    conn.adapters.register_dumper(bool, _BoolAsInteger)


NUL_REFUSED = "holds a NUL character (U+0000), which the database (PostgreSQL) cannot store"


def _params(numbered: bool, params: Any) -> Any:
    if params is None:
        return ()  # never None: psycopg then reads '%' as a placeholder, as translate() expects
    values = params.values() if isinstance(params, dict) else params
    if any(type(v) is str and "\x00" in v for v in values):
        # PostgreSQL's text cannot hold NUL (SQLite's can): refused, never silently altered.
        # Which field it came from is the caller's knowledge: `text` stands for any of them.
        raise BadRequest(f"text: {NUL_REFUSED}", code="invalid_field", fields={"text": NUL_REFUSED})
    if numbered and not isinstance(params, dict):
        return {f"p{i}": value for i, value in enumerate(params, 1)}
    return params


class PgConn:
    """`db.conn`: executemany and the transaction state."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn
        # Called after a statement that may change a row the writer's cache holds (None: no
        # cache on this connection, as on readers).
        self.touched: Callable[[], None] | None = None

    def ran(self, touches_cache: bool) -> None:
        if touches_cache and self.touched is not None:
            self.touched()

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def executemany(self, sql: str, rows: Iterable[Any]) -> psycopg.Cursor[Any]:
        done = translate(sql)
        cursor = self.raw.cursor()
        try:
            with _integrity():
                cursor.executemany(done.sql, [_params(done.numbered, row) for row in rows])
        finally:
            self.ran(done.touches_cache)
        return cursor

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        return PgDatabase(self).execute(sql, params)


@contextmanager
def _integrity() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.IntegrityError as e:
        raise sqlite3.IntegrityError(str(e)) from e


class PgDatabase:
    """The sqlite_utils Database surface of one psycopg connection (see the module docstring)."""

    def __init__(self, conn: psycopg.Connection[Any] | PgConn) -> None:
        self.conn = conn if isinstance(conn, PgConn) else PgConn(conn)

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        done = translate(sql)
        raw = self.conn.raw
        cursor = raw.cursor()
        try:
            with _integrity():
                if done.savepoint and self.conn.in_transaction:
                    with raw.transaction():
                        cursor.execute(done.sql, _params(done.numbered, params))
                else:
                    cursor.execute(done.sql, _params(done.numbered, params))
        finally:
            self.conn.ran(done.touches_cache)
        return cursor

    def execute_together(self, statements: Sequence[tuple[str, Any]]) -> list[psycopg.Cursor[Any]]:
        """Run the statements in order, sent together and answered together (one round trip,
        psycopg's pipeline mode); their cursors, in order, once all have run. A failure is
        raised when the pipeline ends, as `execute` raises it; in a transaction, the
        statements after a failed one do not run (the request fails and rolls back anyway).
        Statements that need a savepoint of their own run one by one, as `execute` does."""
        translated = [(translate(sql), params) for sql, params in statements]
        alone = not self.conn.in_transaction and not all(done.reads for done, _ in translated)
        if alone or any(done.savepoint for done, _ in translated):
            # Outside a transaction a pipeline would make writes one (autocommit commits each).
            return [self.execute(sql, params) for sql, params in statements]
        raw = self.conn.raw
        cursors = []
        try:
            with _integrity(), raw.pipeline():
                for done, params in translated:
                    cursor = raw.cursor()
                    cursor.execute(done.sql, _params(done.numbered, params))
                    cursors.append(cursor)
        finally:
            self.conn.ran(any(done.touches_cache for done, _ in translated))
        return cursors

    def query(self, sql: str, params: Any = None) -> Iterator[dict[str, Any]]:
        done = translate(sql)
        cursor = self.conn.raw.cursor(row_factory=dict_row)
        try:
            with _integrity():
                cursor.execute(done.sql, _params(done.numbered, params))
        finally:
            self.conn.ran(done.touches_cache)
        yield from cursor

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction, or a savepoint inside one (as sqlite_utils' atomic)."""
        with _integrity(), self.conn.raw.transaction():
            yield

    def close(self) -> None:
        self.conn.raw.close()
