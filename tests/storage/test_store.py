"""The Store against real SQLite files: pragmas, commit-before-ack, group commit, failure
isolation inside a batch, concurrent reads, ordering, shutdown and inline mode.

Batches are made deterministic with a Gate: a write that holds the writer thread until the test
releases it, so every write started meanwhile queues up and goes into the next transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from relay.storage.schema import LATEST_VERSION
from relay.storage.sqlite.db import StoreClosed, open_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from sqlite_utils import Database

    from relay.storage.sqlite.db import Store


# -- write and read functions (run in the store's threads) ----------------------------------------


def create_notes(db: Database) -> None:
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL UNIQUE)")


def insert_note(db: Database, body: str) -> int:
    cursor = db.execute("INSERT INTO notes (body) VALUES (?)", (body,))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


class Boom(Exception):
    pass


def insert_then_fail(db: Database, body: str) -> None:
    insert_note(db, body)
    raise Boom(body)


def list_notes(db: Database) -> list[str]:
    return [row[0] for row in db.execute("SELECT body FROM notes ORDER BY id").fetchall()]


def committed_notes(path: Path) -> dict[str, int]:
    """What a brand-new, independent connection sees in the file."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT body, id FROM notes ORDER BY id").fetchall())


class Gate:
    """A write function that holds the writer thread until `release()`."""

    def __init__(self, note: str | None = None) -> None:
        self.note = note
        self._entered = threading.Event()
        self._released = threading.Event()

    def __call__(self, db: Database) -> str:
        if self.note is not None:
            insert_note(db, self.note)
        self._entered.set()
        if not self._released.wait(timeout=10):
            raise TimeoutError("the test never released the gate")
        return "gate"

    async def entered(self) -> None:
        """Wait until the writer thread is inside the gate."""
        assert await trio.to_thread.run_sync(self._entered.wait, 10)

    def release(self) -> None:
        self._released.set()


async def record(
    results: dict[str, Any], name: str, store: Store, fn: Callable[..., Any], *args: Any
) -> None:
    """Run one write and keep what its caller got: the result or the exception."""
    try:
        results[name] = await store.write(fn, *args)
    except Exception as e:
        results[name] = e


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "relay.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[Store]:
    async with open_store(path) as opened:
        await opened.write(create_notes)
        yield opened


# -- connections ---------------------------------------------------------------------------------


def pragmas(db: Database) -> dict[str, Any]:
    names = ("journal_mode", "foreign_keys", "busy_timeout")
    return {name: db.execute(f"PRAGMA {name}").fetchone()[0] for name in names}


RELAY_PRAGMAS = {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000}


async def test_writer_and_every_reader_have_relay_pragmas(path: Path) -> None:
    readers = 3
    # Every read waits until all `readers` reads are running: they only finish if they run on
    # distinct connections at the same time.
    barrier = threading.Barrier(readers, timeout=5)

    def reader_pragmas(db: Database) -> tuple[int, dict[str, Any]]:
        barrier.wait()
        return id(db), pragmas(db)

    seen: list[tuple[int, dict[str, Any]]] = []

    async def read_one(store: Store) -> None:
        seen.append(await store.read(reader_pragmas))

    async with open_store(path, readers=readers) as store:
        writer = await store.write(pragmas)
        synchronous = await store.write(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(readers):
                    nursery.start_soon(read_one, store)

    assert writer == RELAY_PRAGMAS
    assert synchronous == 1  # NORMAL
    assert len({conn for conn, _ in seen}) == readers
    assert [reader for _, reader in seen] == [RELAY_PRAGMAS] * readers


async def test_open_store_creates_the_directory_and_the_schema(path: Path) -> None:
    async with open_store(path) as store:
        version = await store.read(lambda db: db.execute("PRAGMA user_version").fetchone()[0])
    assert version == LATEST_VERSION
    assert await trio.Path(path).is_file()


@pytest.mark.parametrize("folder", ["plain", "with space", "hash#1", "what?", "percent%41"])
async def test_open_store_uses_exactly_the_given_path(tmp_path: Path, folder: str) -> None:
    path = tmp_path / folder / "relay.db"
    async with open_store(path) as store:
        await store.write(create_notes)
        await store.write(insert_note, "here")
        assert await store.read(list_notes) == ["here"]

    assert committed_notes(path) == {"here": 1}
    # and no stray database elsewhere
    assert [p.name for p in await trio.Path(tmp_path).iterdir()] == [folder]


async def test_readers_cannot_write(store: Store) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.read(insert_note, "sneaky")


# -- writes --------------------------------------------------------------------------------------


async def test_a_write_is_committed_when_it_returns(store: Store, path: Path) -> None:
    note_id = await store.write(insert_note, "durable")
    assert committed_notes(path) == {"durable": note_id}


async def test_concurrent_writes_are_group_committed(store: Store, path: Path) -> None:
    count = 200
    batches, writes = store.batches, store.writes
    results: dict[str, Any] = {}

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(record, results, f"w{i}", store, insert_note, f"w{i}")

    assert committed_notes(path) == results  # every row is there, each caller got its own id
    assert len(results) == count
    assert store.writes - writes == count
    assert store.batches - batches < count


async def test_a_failing_write_fails_alone_and_its_batch_commits(store: Store, path: Path) -> None:
    await store.write(insert_note, "taken")
    gate = Gate()
    results: dict[str, Any] = {}

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.write, gate)
            await gate.entered()
            batches = store.batches
            nursery.start_soon(record, results, "before", store, insert_note, "before")
            nursery.start_soon(record, results, "boom", store, insert_then_fail, "boom")
            nursery.start_soon(record, results, "duplicate", store, insert_note, "taken")
            nursery.start_soon(record, results, "after", store, insert_note, "after")
            await trio.testing.wait_all_tasks_blocked()
            gate.release()

    assert store.batches == batches + 2  # the gate's transaction, then the other four together
    assert isinstance(results["boom"], Boom)
    assert isinstance(results["duplicate"], sqlite3.IntegrityError)
    assert committed_notes(path) == {
        "taken": 1,
        "before": results["before"],
        "after": results["after"],
    }


async def test_a_batch_runs_its_writes_in_queue_order(store: Store, path: Path) -> None:
    gate = Gate()
    names = [f"q{i}" for i in range(10)]
    results: dict[str, Any] = {}

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.write, gate)
            await gate.entered()
            for name in names:
                nursery.start_soon(record, results, name, store, insert_note, name)
                await trio.testing.wait_all_tasks_blocked()  # queued before the next one starts
            gate.release()

    assert list(committed_notes(path)) == names


async def test_writes_from_one_task_commit_in_order(store: Store, path: Path) -> None:
    ids = [await store.write(insert_note, f"n{i}") for i in range(30)]
    assert ids == sorted(ids)
    assert committed_notes(path) == {f"n{i}": note_id for i, note_id in enumerate(ids)}


def echo(db: Database, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


@pytest.mark.parametrize("inline", [False, True])
async def test_fn_gets_the_arguments_and_its_result_reaches_the_caller(
    path: Path, inline: bool
) -> None:
    async with open_store(path, inline=inline) as store:
        written = await store.write(echo, 1, "two", three=[3])
        read = await store.read(echo, 4, five=5)
    assert written == ((1, "two"), {"three": [3]})
    assert read == ((4,), {"five": 5})


# -- reads ---------------------------------------------------------------------------------------


async def test_reads_run_while_a_write_is_in_flight(store: Store) -> None:
    await store.write(insert_note, "committed")
    gate = Gate(note="uncommitted")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.write, gate)
            await gate.entered()
            try:
                during = await store.read(list_notes)  # would time out if reads waited
            finally:
                gate.release()

    assert during == ["committed"]  # a reader sees the last commit, not the open transaction
    assert await store.read(list_notes) == ["committed", "uncommitted"]


# -- shutdown ------------------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [False, True])
async def test_write_after_close_raises_store_closed(path: Path, inline: bool) -> None:
    async with open_store(path, inline=inline) as store:
        await store.write(create_notes)
    with pytest.raises(StoreClosed):
        await store.write(insert_note, "too late")


class Leave(Exception):
    pass


@pytest.mark.parametrize("ending", ["return", "raise", "cancel"])
async def test_writes_queued_at_close_commit_or_raise_store_closed(path: Path, ending: str) -> None:
    """Writes from tasks outside the store's block, queued behind a batch in flight when the
    block ends: each one commits or raises StoreClosed, none hangs."""
    gate = Gate(note="in flight")
    queued = [f"q{i}" for i in range(5)]
    results: dict[str, Any] = {}

    left: list[BaseException] = []

    with trio.fail_after(10):
        async with trio.open_nursery() as callers:
            with trio.CancelScope() as scope:
                try:
                    async with open_store(path) as store:
                        await store.write(create_notes)
                        callers.start_soon(record, results, "gate", store, gate)
                        await gate.entered()
                        for name in queued:
                            callers.start_soon(record, results, name, store, insert_note, name)
                        await trio.testing.wait_all_tasks_blocked()
                        gate.release()
                        if ending == "raise":
                            raise Leave
                        if ending == "cancel":
                            scope.cancel()
                            await trio.lowlevel.checkpoint()
                except* Leave as group:
                    left.extend(group.exceptions)

    assert len(left) == (ending == "raise")
    assert scope.cancelled_caught == (ending == "cancel")
    committed = committed_notes(path)
    assert results["gate"] == "gate"  # the batch in flight always finishes
    assert "in flight" in committed
    for name in queued:
        if isinstance(results[name], StoreClosed):
            assert name not in committed
        else:
            assert committed[name] == results[name]
    # What db.py documents: a normal exit drains the queue, an abnormal one fails what is left.
    closed = [name for name in queued if isinstance(results[name], StoreClosed)]
    assert closed == ([] if ending == "return" else queued)


# -- inline mode ---------------------------------------------------------------------------------


async def test_inline_store_writes_and_reads_on_the_trio_thread(path: Path) -> None:
    async with open_store(path, inline=True) as store:
        await store.write(create_notes)
        note_id = await store.write(insert_note, "inline")
        assert committed_notes(path) == {"inline": note_id}

        with pytest.raises(Boom):
            await store.write(insert_then_fail, "rolled back")
        assert await store.read(list_notes) == ["inline"]

        here = threading.get_ident()
        assert await store.write(lambda db: threading.get_ident()) == here
        assert await store.read(lambda db: threading.get_ident()) == here

    assert (store.batches, store.writes) == (4, 4)


async def test_submit_queues_without_a_checkpoint_while_there_is_room(
    store: Store, path: Path
) -> None:
    with trio.testing.assert_no_checkpoints():
        pending = await store.submit(insert_note, "queued")
    note_id = await pending.wait()
    assert committed_notes(path) == {"queued": note_id}
