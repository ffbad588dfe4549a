"""The writer's cache of permission rows (relay.storage.sqlite.writecache, and on PostgreSQL
relay.storage.postgres.writecache), through a threaded store on a real database of each kind: a
cached answer never outlives the rows it came from, whether they change in the same transaction,
in a later one, in a request that is rolled back, or from another connection (on PostgreSQL,
another process's writer: tests/rest/test_postgres.py has two servers)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio
import trio.testing

from relay.errors import Forbidden, NotFound, RelayError
from relay.permissions import P
from relay.storage import messages
from relay.storage.postgres.db import open_pg_store
from relay.storage.sqlite.db import open_store
from tests.storage.conftest import BACKENDS
from tests.storage.test_messages import BOB, NOW, SERVER, TEXT, Ids, populate
from tests.storage.test_store import Gate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from sqlite_utils import Database

    from relay.storage.sqlite.db import Store

SEND, VIEW = int(P.SEND_MESSAGES), int(P.VIEW_CHANNEL)
CATEGORY, ROLE = 105, 106


@pytest.fixture(params=BACKENDS)
async def opened(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Callable[[str], None]]]:
    """A populated store of each kind, and a function committing a statement through another
    connection (another process's, for all the writer can tell)."""
    if request.param == "sqlite":
        path = tmp_path / "relay.db"

        def elsewhere(statement: str) -> None:
            with contextlib.closing(sqlite3.connect(path)) as other:
                other.execute(statement)
                other.commit()

        async with open_store(path) as store:
            await store.write(populate)
            yield store, elsewhere
        return
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("a test of SQLite's own behaviour")
    dsn, empty = request.getfixturevalue("pg_reused")  # emptied: faster than a new database
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(empty.encode())

    def pg_elsewhere(statement: str) -> None:
        with psycopg.connect(dsn) as other:
            other.execute(statement.encode())

    async with open_pg_store(dsn, readers=1) as pg:
        await pg.write(populate)
        yield pg, pg_elsewhere


@pytest.fixture
def store(opened: tuple[Store, Callable[[str], None]]) -> Store:
    return opened[0]


def post(db: Database, message_id: int, author_id: int = BOB) -> int:
    row, _ = messages.create(db, message_id, TEXT, author_id, "hi", None, None, [], NOW)
    return row.id


def later_ms(minutes: int) -> int:
    return time.time_ns() // 1_000_000 + minutes * 60_000


def sql(*statements: str) -> Callable[[Database], None]:
    def run(db: Database) -> None:
        for statement in statements:
            db.execute(statement)

    return run


EVERYONE_CANNOT_SEND = f"UPDATE roles SET permissions = permissions & ~{SEND} WHERE id = {SERVER}"
# (set-up, change): after the set-up Bob may post in TEXT; after the change he may not.
CHANGES: dict[str, tuple[list[str], list[str], type[RelayError]]] = {
    "member overwrite": (
        [],
        [f"INSERT INTO overwrites VALUES ({TEXT}, {BOB}, 'member', 0, {SEND})"],
        Forbidden,
    ),
    "@everyone's permissions": ([], [EVERYONE_CANNOT_SEND], Forbidden),
    "role taken away": (
        [
            EVERYONE_CANNOT_SEND,
            f"INSERT INTO roles (id, server_id, name, permissions, position, created_at)"
            f" VALUES ({ROLE}, {SERVER}, 'talker', {SEND}, 1, 0)",
            f"INSERT INTO member_roles VALUES ({SERVER}, {BOB}, {ROLE})",
        ],
        [f"DELETE FROM member_roles WHERE user_id = {BOB}"],
        Forbidden,
    ),
    "role deleted": (
        [
            EVERYONE_CANNOT_SEND,
            f"INSERT INTO roles (id, server_id, name, permissions, position, created_at)"
            f" VALUES ({ROLE}, {SERVER}, 'talker', {SEND}, 1, 0)",
            f"INSERT INTO member_roles VALUES ({SERVER}, {BOB}, {ROLE})",
        ],
        [f"DELETE FROM roles WHERE id = {ROLE}"],  # member_roles go by cascade
        Forbidden,
    ),
    "timed out": (
        [],
        [f"UPDATE members SET communication_disabled_until = {later_ms(60)} WHERE user_id = {BOB}"],
        Forbidden,
    ),
    "kicked": ([], [f"DELETE FROM members WHERE user_id = {BOB}"], NotFound),
    "server deleted": ([], [f"DELETE FROM servers WHERE id = {SERVER}"], NotFound),
    "channel deleted": ([], [f"DELETE FROM channels WHERE id = {TEXT}"], NotFound),
    "moved into a hidden category": (
        [
            f"INSERT INTO channels (id, server_id, type, created_at)"
            f" VALUES ({CATEGORY}, {SERVER}, 'category', 0)",
            f"INSERT INTO overwrites VALUES ({CATEGORY}, {SERVER}, 'role', 0, {VIEW})",
        ],
        [f"UPDATE channels SET parent_id = {CATEGORY}, permissions_synced = 1 WHERE id = {TEXT}"],
        NotFound,
    ),
}


async def outcome_of(store: Store, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return await store.write(fn, *args)
    except Exception as e:
        return e


@pytest.mark.parametrize("name", list(CHANGES))
async def test_a_change_is_seen_by_the_next_write_in_a_later_transaction(
    store: Store, name: str
) -> None:
    setup, change, refusal = CHANGES[name]
    ids = Ids()
    await store.write(sql(*setup))
    assert await store.write(post, ids.next()) > 0  # the answer is cached now
    assert await store.write(post, ids.next()) > 0
    await store.write(sql(*change))
    with pytest.raises(refusal):
        await store.write(post, ids.next())


@pytest.mark.parametrize("name", list(CHANGES))
async def test_a_change_is_seen_by_the_next_write_in_the_same_transaction(
    store: Store, name: str
) -> None:
    setup, change, refusal = CHANGES[name]
    ids = Ids()
    await store.write(sql(*setup))
    await store.write(post, ids.next())
    gate = Gate()
    results: list[Any] = [None, None, None]

    async def run(i: int, fn: Callable[..., Any], *args: Any) -> None:
        results[i] = await outcome_of(store, fn, *args)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.write, gate)
            await gate.entered()
            batches = store.batches
            nursery.start_soon(run, 0, post, ids.next())
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(run, 1, sql(*change))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(run, 2, post, ids.next())
            await trio.testing.wait_all_tasks_blocked()
            gate.release()

    assert store.batches == batches + 2  # the gate's transaction, then the three together
    assert isinstance(results[0], int)
    assert results[1] is None
    assert isinstance(results[2], refusal)


@pytest.mark.parametrize("name", list(CHANGES))
async def test_a_change_committed_by_another_connection_is_seen(
    opened: tuple[Store, Callable[[str], None]], name: str
) -> None:
    store, elsewhere = opened
    setup, change, refusal = CHANGES[name]
    ids = Ids()
    await store.write(sql(*setup))
    await store.write(post, ids.next())
    await store.write(post, ids.next())  # answered from the cache
    for statement in change:
        elsewhere(statement)
    with pytest.raises(refusal):
        await store.write(post, ids.next())


class Regret(Exception):
    pass


def grant_post_then_fail(db: Database, message_id: int) -> None:
    """Give @everyone SEND_MESSAGES, post as Bob (so the cache learns he may), then fail: the
    request is rolled back, grant and all."""
    db.execute(f"UPDATE roles SET permissions = permissions | {SEND} WHERE id = {SERVER}")
    post(db, message_id)
    raise Regret


async def test_what_a_rolled_back_request_cached_is_forgotten(store: Store) -> None:
    ids = Ids()
    await store.write(sql(EVERYONE_CANNOT_SEND))
    with pytest.raises(Regret):
        await store.write(grant_post_then_fail, ids.next())
    with pytest.raises(Forbidden):
        await store.write(post, ids.next())


def traced(fn: Callable[..., Any]) -> Callable[..., list[str]]:
    """`fn`, returning the statements it ran instead of its result."""

    def run(db: Database, *args: Any) -> list[str]:
        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        try:
            fn(db, *args)
        finally:
            db.conn.set_trace_callback(None)
        return statements

    return run


@pytest.mark.sqlite_only
async def test_the_permission_check_is_not_read_again_while_nothing_changed(store: Store) -> None:
    ids = Ids()
    first = await store.write(traced(post), ids.next())
    second = await store.write(traced(post), ids.next())
    reads = [s for s in first if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) >= 7
    # Left: the nonce-less post's own reads (none) and writes (message, channel, read state).
    assert [s for s in second if s.lstrip().upper().startswith("SELECT")] == []
    assert len(second) == len(first) - len(reads)


def permission_scans(db: Any) -> int:
    """Rows read so far in this transaction from the tables only permission checks read
    (PostgreSQL's own per-transaction counters)."""
    row = db.execute(
        "SELECT sum(seq_scan + coalesce(idx_scan, 0)) FROM pg_stat_xact_user_tables"
        " WHERE relname IN ('members', 'member_roles', 'roles', 'overwrites', 'servers')"
    ).fetchone()
    return int(row[0] or 0)


def scanned_by_post(db: Any, message_id: int) -> int:
    before = permission_scans(db)
    post(db, message_id)
    return permission_scans(db) - before


async def test_the_pg_permission_check_is_not_read_again_while_nothing_changed(
    store: Store,
) -> None:
    if not hasattr(store, "_pg_writer"):
        pytest.skip("PostgreSQL's counters (SQLite's case is the test above)")
    ids = Ids()
    assert await store.write(scanned_by_post, ids.next()) >= 4  # loaded: cached from now on
    assert await store.write(scanned_by_post, ids.next()) == 0
    await store.write(sql(f"UPDATE members SET nickname = 'b' WHERE user_id = {BOB}"))
    assert await store.write(scanned_by_post, ids.next()) == 0  # not a watched column
    await store.write(sql(EVERYONE_CANNOT_SEND.replace("& ~", "| ")))  # a watched row
    assert await store.write(scanned_by_post, ids.next()) > 0


async def test_without_its_counter_row_the_pg_cache_trusts_nothing(
    opened: tuple[Store, Callable[[str], None]],
) -> None:
    store, elsewhere = opened
    if not hasattr(store, "_pg_writer"):
        pytest.skip("PostgreSQL's counter (SQLite reads PRAGMA data_version)")
    elsewhere("DELETE FROM writer_cache_version")
    ids = Ids()
    await store.write(post, ids.next())
    await store.write(post, ids.next())
    elsewhere(f"DELETE FROM members WHERE user_id = {BOB}")
    with pytest.raises(NotFound):
        await store.write(post, ids.next())
