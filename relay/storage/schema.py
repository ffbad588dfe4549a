"""Numbered schema migrations, tracked with PRAGMA user_version.

A fresh database is built from schema.sql in one step. An older one runs each pending
`migrations/NNNN_name.sql` in its own transaction, which also raises user_version to NNNN, so a
crash mid-upgrade leaves the database at the last completed version.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

from relay.storage import search

if TYPE_CHECKING:
    from sqlite_utils import Database

_NAME = re.compile(r"^(\d{4})_\w+\.sql$")


def _files() -> dict[int, str]:
    folder = resources.files("relay.storage") / "migrations"
    found: dict[int, str] = {}
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found[int(match.group(1))] = entry.read_text(encoding="utf-8")
    if sorted(found) != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps, found {sorted(found)}")
    return found


MIGRATIONS = _files()
LATEST_VERSION = max(MIGRATIONS)


def schema_sql() -> str:
    return (resources.files("relay.storage") / "schema.sql").read_text(encoding="utf-8")


def user_version(db: Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def is_empty(db: Database) -> bool:
    return int(db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]) == 0


def migrate(db: Database, target: int = LATEST_VERSION) -> int:
    """Bring `db` to `target`: schema.sql for an empty file, else the pending migrations.

    Returns the version reached. Raises RuntimeError for a database newer than this server.
    """
    current = user_version(db)
    if current > LATEST_VERSION:
        raise RuntimeError(
            f"database schema version {current} is newer than this server ({LATEST_VERSION})"
        )
    if current == 0 and is_empty(db) and target == LATEST_VERSION:
        _run_script(db, schema_sql())
        return user_version(db)
    for version in range(current + 1, target + 1):
        _run_script(db, f"{MIGRATIONS[version]}\nPRAGMA user_version = {version};")
    if user_version(db) == LATEST_VERSION:
        search.backfill(db)  # the search index of messages stored before it existed
    return user_version(db)


def _run_script(db: Database, sql: str) -> None:
    # executescript() would COMMIT first; wrapping in BEGIN/COMMIT makes each step atomic.
    try:
        db.conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nCOMMIT;")
    except BaseException:
        if db.conn.in_transaction:
            db.conn.rollback()
        raise
