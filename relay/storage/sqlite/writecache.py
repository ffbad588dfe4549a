"""Rows the writer's permission checks read, kept across transactions until one of them changes.

Every message write checks in its own transaction that its author may still post in the channel:
seven queries (the channel, the member and their roles, the server, its roles, the channel's and
its category's overwrites) for an answer that almost never changes. Those reads were half of the
writer's time under load. The writer connection keeps their results here instead, and a value
found here is always what the query would return at that moment:

- temporary triggers on the writer connection, on every table these reads depend on, empty the
  cache whenever a statement inserts, deletes or updates one of those rows (cascades included);
- `PRAGMA data_version`, read at the start of each transaction (after its write lock is taken),
  tells whether another connection committed since, such as an operator's command in another
  process; then the cache is emptied;
- a request rolled back to its savepoint, and a transaction that failed, empty it, since they may
  have cached rows that were never committed.

Only the writer uses it, and only inside `Store._commit` (`open_for`), so readers and their
snapshots never see it. It is bounded: past MAX_ENTRIES the cache starts over empty. The
PostgreSQL writer keeps the same values (relay.storage.postgres.writecache), emptied by its own
means: several processes write that database.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Hashable, Iterator

    from sqlite_utils import Database

T = TypeVar("T")
MAX_ENTRIES = 10_000
_CLEAR = "relay_writer_cache_clear"
# Table -> the columns whose update matters (None: any). channels.last_message_id moves with
# every message, so only the columns permissions and posting read are watched there.
WATCHED: dict[str, tuple[str, ...] | None] = {
    "users": ("username", "display_name", "avatar"),  # avatar: messages' authors
    "servers": ("id", "owner_id"),
    "channels": (
        "id",
        "server_id",
        "type",
        "parent_id",
        "permissions_synced",
        "rate_limit_per_user",
        "locked",  # a locked thread takes posts from MANAGE_THREADS only
    ),
    "members": ("server_id", "user_id", "communication_disabled_until"),
    "member_roles": None,
    "roles": None,
    "overwrites": None,
    "dm_recipients": None,
}
_local = threading.local()


def trigger_sql() -> list[str]:
    """The temporary triggers that empty the cache (insert, delete and update of each table)."""
    statements = []
    for table, columns in WATCHED.items():
        update = "UPDATE" if columns is None else f"UPDATE OF {', '.join(columns)}"
        for action, event in (("ins", "INSERT"), ("del", "DELETE"), ("upd", update)):
            statements.append(
                f"CREATE TEMP TRIGGER IF NOT EXISTS relay_cache_{table}_{action}"
                f" AFTER {event} ON main.{table} BEGIN SELECT {_CLEAR}(); END"
            )
    return statements


class CacheBase:
    """The values and their use, whatever tells the cache to empty (see WriterCache and
    relay.storage.postgres.writecache.PgWriterCache). `owner` is the connection it serves."""

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self._values: dict[Hashable, Any] = {}
        self.clears = 0  # times emptied (for tests)

    def clear(self) -> None:
        self._values.clear()
        self.clears += 1

    @contextmanager
    def _in_use(self) -> Iterator[None]:
        _local.cache = self
        try:
            yield
        finally:
            _local.cache = None

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        try:
            return self._values[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        value = load()
        if len(self._values) >= MAX_ENTRIES:
            self._values.clear()
        self._values[key] = value
        return value


class WriterCache(CacheBase):
    """The cache of one SQLite writer connection; see the module docstring."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self._conn = conn
        conn.create_function(_CLEAR, 0, self.clear)
        for sql in trigger_sql():
            conn.execute(sql)
        self._version = self._data_version()

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @contextmanager
    def open_for(self) -> Iterator[None]:
        """Use the cache in this thread for the transaction that was just begun."""
        version = self._data_version()
        if version != self._version:  # another connection committed since the last one
            self._version = version
            self.clear()
        with self._in_use():
            yield


def cached(db: Database, key: Hashable, load: Callable[[], T]) -> T:
    """`load()`, or what it returned before on this connection if nothing it reads has changed
    since. Outside the writer's transaction (any reader) this is just `load()`."""
    cache: CacheBase | None = getattr(_local, "cache", None)
    # PostgreSQL's adapter wraps its psycopg connection (`db.conn.raw`); SQLite's is db.conn.
    if cache is None or cache.owner is not getattr(db.conn, "raw", db.conn):
        return load()
    return cache.get(key, load)
