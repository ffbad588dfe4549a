"""The database's lock file, `<database>.lock`: held by every process that may replace or open the
database file for writing as its owner (a running server, `relay restore`), so a restore cannot
swap the file under a running server and a server cannot start in the middle of a restore.

SQLite's own locks cannot say this: in WAL mode a server idle between writes holds no lock that
another process's `BEGIN EXCLUSIVE` would meet, and a restore replaces the file rather than
writing through SQLite. An `flock` on a separate file is released by the kernel when its holder
exits, crash included, so a lock is never stale; the holder's pid is written inside only to name
it in messages. It is a separate file because opening and closing another descriptor of the
database file itself would drop SQLite's POSIX locks on it.

Resource handling: `database_lock` holds one descriptor of the lock file for its block and
closes it (releasing the lock) on the way out, after emptying the pid it wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class DatabaseInUse(Exception):
    """Another process holds the database's lock (`pid` is None when it could not be read)."""

    def __init__(self, db_path: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"{db_path} is in use by {holder} (a running server or a restore)")
        self.db_path = db_path
        self.pid = pid


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


@contextmanager
def database_lock(db_path: Path) -> Iterator[None]:
    """Hold the database's lock for the block; raise DatabaseInUse at once if it is held.

    The database's directory must exist."""
    fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseInUse(db_path, _read_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # while still held: nobody reads a pid that is gone
    finally:
        os.close(fd)


def lock_holder(db_path: Path) -> int | None:
    """The pid holding the database's lock (0 if it cannot be read), or None if nobody holds it.

    Takes a shared lock for an instant, so it never blocks a holder or creates the file."""
    try:
        fd = os.open(lock_path(db_path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None
