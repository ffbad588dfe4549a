"""The PostgreSQL writer's cache of permission rows: what relay.storage.sqlite.writecache keeps
for SQLite's writer (the rows a post's permission check reads, and its author's name), kept
across transactions while nothing they came from changed.

Several processes write one PostgreSQL database, so a value may go stale three ways, and each
empties the cache:

- another process (or an operator's command) commits a change to a watched row: triggers
  deferred to the commit add one to `writer_cache_version` (migration 0015), which the writer
  reads in the round trip that begins each transaction (`open_for`). A transaction reading that
  counter unchanged knows that no watched row changed since the cached values were read;
- this writer changes one: the adapter calls `clear` after every statement the translator
  marked as touching a watched table or column, or reaching one through ON DELETE actions
  (relay.storage.postgres.translate);
- a request rolled back to its savepoint, or a transaction that failed (as on SQLite).

Why not LISTEN/NOTIFY: a notification reaches a listening connection some time after the commit
that sent it is visible, so a writer could begin, see the new rows' commit in its snapshot, and
still use what it cached before. The counter is read in the transaction itself: what it says
holds for that moment. At PostgreSQL's read committed level, a check answered from the cache is
what the query would have returned at a moment of the write's own transaction (its start, or
when the row was first read in it); without the cache each statement sees its own moment, also
within the transaction (docs/postgresql.md). A missing counter row (a TRUNCATE of every table,
say) makes every transaction start with an empty cache.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from relay.storage.sqlite.writecache import CacheBase

if TYPE_CHECKING:
    from collections.abc import Iterator

    from relay.storage.postgres.adapter import PgConn

# Sent with BEGIN and the first savepoint, in one round trip (PgStore._commit).
VERSION_SQL = "SELECT version FROM writer_cache_version WHERE id = 1"


class PgWriterCache(CacheBase):
    """The cache of one PostgreSQL writer connection; see the module docstring."""

    def __init__(self, conn: PgConn) -> None:
        super().__init__(conn.raw)
        conn.touched = self.clear
        self._version: int | None = None

    @contextmanager
    def open_for(self, version: int | None) -> Iterator[None]:
        """Use the cache in this thread for the transaction just begun, which read `version`
        (None: the counter's row is missing, so nothing cached can be trusted)."""
        if version is None or version != self._version:  # a watched row changed (or first)
            self._version = version
            self.clear()
        with self._in_use():
            yield
