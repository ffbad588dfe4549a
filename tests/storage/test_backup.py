"""The online copy on real files: one snapshot even when other connections commit between its
steps."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

from relay.storage.sqlite.backup import MIN_STEP_PAGES, copy_online, integrity_problems
from relay.storage.sqlite.db import connect

if TYPE_CHECKING:
    from pathlib import Path


def rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM notes").fetchone()[0])


def test_the_copy_is_the_snapshot_of_its_start_whatever_commits_between_steps(
    tmp_path: Path,
) -> None:
    """A commit by another connection after every step. Without the read transaction the copy
    holds, each such commit sends SQLite's backup back to page 1 and it never ends; with it,
    the copy goes through once, in order, and holds the rows of the moment it began."""
    source = tmp_path / "live.db"
    db = connect(source)  # WAL, as the server has it
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    db.conn.executemany("INSERT INTO notes (body) VALUES (?)", [("x" * 200,)] * 4000)
    db.conn.commit()
    seen: list[tuple[int, int]] = []

    def commit_between_steps(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) > 1000:
            raise RuntimeError("the copy keeps starting again")
        db.execute("INSERT INTO notes (body) VALUES ('written during the copy')")
        db.conn.commit()

    copied = copy_online(source, tmp_path / "copy.db", progress=commit_between_steps)
    db.close()

    total = copied.pages
    assert total >= 10 * MIN_STEP_PAGES
    assert seen[0] == (0, total)
    assert seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})  # never went back
    assert len(seen) > 10
    assert rows(tmp_path / "copy.db") == 4000
    assert rows(source) == 4000 + len(seen)
    with contextlib.closing(sqlite3.connect(tmp_path / "copy.db")) as conn:
        assert integrity_problems(conn) == []
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not (tmp_path / "copy.db-wal").exists()
