"""SQLite's side of backup, restore and check: an online copy of a live database, the checks a
copy must pass, and the files that belong to a database (its `-wal`, `-shm` and `-journal`).

`copy_online` uses SQLite's backup API in steps, inside one read transaction on the source that
it holds for the whole copy. In WAL mode that transaction is a snapshot: the copy is the database
as of the moment the copy began, whatever commits meanwhile, and the server's writer never waits
for it. Without the held transaction each step takes a new snapshot, and a commit by another
connection between two steps restarts the copy from page 1: under a steady write load it may
never finish. The held snapshot also keeps checkpoints from passing it, so the server's WAL
grows for as long as a copy runs and shrinks back after.

Everything here is blocking file and SQLite work: call it from a worker thread in a Trio
process (`trio.to_thread.run_sync`), directly from the CLI.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
# Files SQLite keeps beside a database: the WAL, its shared-memory index, a rollback journal.
SIDECARS = ("-wal", "-shm", "-journal")
STEPS = 100  # a copy goes in about this many steps (progress in 1% strides)
MIN_STEP_PAGES = 16
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


@dataclass(frozen=True)
class Copied:
    pages: int
    page_size: int
    schema_version: int


def open_readonly(path: Path, *, immutable: bool = False) -> sqlite3.Connection:
    """A read-only connection, in autocommit mode (transactions are explicit).

    `immutable`: for a file no other process writes (a backup, a staged copy): no locks and no
    `-wal`/`-shm` files are made beside it. Raises sqlite3.OperationalError if it cannot open."""
    uri = f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def copy_online(
    source: Path, target: Path, *, progress: Callable[[int, int], None] | None = None
) -> Copied:
    """Copy the database at `source`, live or not, to a new file `target` as one consistent
    snapshot; `progress(pages_copied, pages_total)` is called as it goes.

    The copy is one self-contained file in rollback-journal mode (no `-wal` needed beside it);
    a server opening it switches it back to WAL. An exception from `progress` (Ctrl-C) stops
    the copy and propagates; the caller removes the partial target."""
    src = open_readonly(source)
    try:
        src.execute("BEGIN")
        # The first read starts the transaction: everything below sees this one snapshot.
        page_size = int(src.execute("PRAGMA page_size").fetchone()[0])
        total = int(src.execute("PRAGMA page_count").fetchone()[0])
        step = max(MIN_STEP_PAGES, -(-total // STEPS))
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            if progress is not None:
                progress(0, total)

            def report(status: int, remaining: int, pages_total: int) -> None:
                assert progress is not None
                progress(pages_total - remaining, pages_total)

            src.backup(dst, pages=step, progress=None if progress is None else report)
            # The copied header says WAL, like its source; make it a single-file database.
            dst.execute("PRAGMA journal_mode = DELETE")
            version = schema_version(dst)
        finally:
            dst.close()
    finally:
        src.close()  # ends the read transaction
    return Copied(pages=total, page_size=page_size, schema_version=version)


def is_sqlite_file(path: Path) -> bool:
    """Does the file start with SQLite's header? (Cheap; says nothing of what follows.)"""
    with open(path, "rb") as f:
        return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """What `PRAGMA integrity_check` finds (empty: the file is sound). A file too damaged to be
    checked at all gives SQLite's error as the one problem."""
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as e:
        return [str(e)]
    return [] if rows == [("ok",)] else [str(row[0]) for row in rows]


def foreign_key_problems(conn: sqlite3.Connection, limit: int = 100) -> list[str]:
    """Rows whose foreign key points at no row (`PRAGMA foreign_key_check`), up to `limit`."""
    found: list[str] = []
    try:
        cursor = conn.execute("PRAGMA foreign_key_check")
        for table, rowid, parent, _ in cursor:
            found.append(f"{table} row {rowid} refers to a missing {parent} row")
            if len(found) >= limit:
                break
    except sqlite3.DatabaseError as e:
        return [str(e)]
    return found


def sidecars(path: Path) -> list[Path]:
    """The `-wal`, `-shm` and `-journal` files of the database at `path` that exist now."""
    return [p for p in (path.with_name(path.name + s) for s in SIDECARS) if p.exists()]


def move_database(path: Path, to: Path) -> None:
    """Give the database at `path` a new name, with its `-wal` and `-journal` (commits not yet
    checkpointed into the file are in them). Its `-shm` is removed: SQLite rebuilds it from the
    WAL, and a stale one must not sit beside the next database to take this name.

    The database stays readable under `path` until the caller puts another file there (it is
    hard-linked to `to`, then `path`'s sidecars move), so a crash on the way never leaves
    `path` missing, where a starting server would create an empty database."""
    try:
        os.link(path, to)
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        os.rename(path, to)
    _move_sidecars(path, to)


def remove_sidecars(path: Path) -> None:
    """Remove the `-wal`, `-shm` and `-journal` of the database at `path`: they belong to the
    file there now, not to the one the caller puts in its place."""
    for sidecar in sidecars(path):
        sidecar.unlink()


def _move_sidecars(path: Path, to: Path) -> None:
    for suffix in SIDECARS:
        old = path.with_name(path.name + suffix)
        if not old.exists():
            continue
        if suffix == "-shm":
            old.unlink()
        else:
            os.rename(old, to.with_name(to.name + suffix))
