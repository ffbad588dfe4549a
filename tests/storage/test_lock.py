"""The database's lock on real files: a store holds it while open, so a second store (or a
restore) is refused at once, and it never outlives its holder."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from relay.storage.sqlite.db import open_store
from relay.storage.sqlite.lock import DatabaseInUse, database_lock, lock_holder, lock_path

if TYPE_CHECKING:
    from pathlib import Path


async def test_a_store_holds_the_database_lock(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    async with open_store(path, readers=1):
        assert lock_holder(path) == os.getpid()
        with pytest.raises(DatabaseInUse, match=rf"in use by process {os.getpid()} "):
            async with open_store(path, readers=1):
                pytest.fail("a second store opened a database in use")
        with pytest.raises(DatabaseInUse), database_lock(path):
            pytest.fail("a restore took the lock of a database in use")
    assert lock_holder(path) is None
    assert lock_path(path).read_text() == ""  # no pid left behind
    with database_lock(path):
        assert lock_holder(path) == os.getpid()


async def test_a_pid_left_in_the_lock_file_does_not_hold_it(tmp_path: Path) -> None:
    """The kernel drops a crashed holder's flock; the pid it wrote is only text."""
    path = tmp_path / "relay.db"
    lock_path(path).write_text("999999\n")
    assert lock_holder(path) is None
    async with open_store(path, readers=1):
        assert lock_holder(path) == os.getpid()
