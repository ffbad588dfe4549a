"""PostgreSQL schema versions, kept in step with SQLite's (relay.storage.schema).

A fresh database gets schema.sql (SQLite's version 13) in one transaction. Each later SQLite
migration NNNN has its PostgreSQL counterpart `migrations/NNNN_*.sql`; a database runs the pending
ones in the same transaction, each recording its version in `schema_version`.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING, Any

from relay.storage.schema import LATEST_VERSION

if TYPE_CHECKING:
    import psycopg

BASE_VERSION = 13  # the SQLite version schema.sql matches
_LOCK_KEY = 0x72656C6179  # "relay": the advisory lock that serializes migrations
_NAME = re.compile(r"^(\d{4})_\w+\.sql$")


def _files() -> dict[int, str]:
    folder = resources.files("relay.storage.postgres") / "migrations"
    found: dict[int, str] = {}
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found[int(match.group(1))] = entry.read_text(encoding="utf-8")
    return found


MIGRATIONS = _files()


def schema_sql() -> str:
    return (resources.files("relay.storage.postgres") / "schema.sql").read_text(encoding="utf-8")


def version(conn: psycopg.Connection[Any]) -> int:
    """The schema version; 0 for an empty database. Raises RuntimeError for a database that
    has tables but no Relay schema."""
    found = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if found is not None and found[0]:
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0
    tables = conn.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
    ).fetchone()
    if tables is not None and tables[0]:
        raise RuntimeError("the database has tables but no Relay schema: give Relay its own")
    return 0


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the database to LATEST_VERSION (an autocommit connection); returns the version.
    A lock held for the run makes processes that start together migrate one at a time."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        current = version(conn)
        if current > LATEST_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this server ({LATEST_VERSION})"
            )
        if current == 0:
            conn.execute(schema_sql().encode())
            current = BASE_VERSION
        for step in range(current + 1, LATEST_VERSION + 1):
            if step not in MIGRATIONS:
                raise RuntimeError(f"no PostgreSQL migration {step:04d} (SQLite has one)")
            conn.execute(MIGRATIONS[step].encode())
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (step,))
            current = step
    return current
