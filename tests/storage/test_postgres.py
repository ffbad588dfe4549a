"""PostgreSQL storage: every shared statement translates and is accepted by PostgreSQL, the two
schemas agree, migrations stay in step, and the PostgreSQL store keeps the group-commit contract
(a write returns once committed, a failing one fails alone, reads see only commits)."""

from __future__ import annotations

import ast
import importlib
import re
import sqlite3
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio
import trio.testing

from relay.storage.postgres import schema as pg_schema
from relay.storage.postgres.db import open_pg_store
from relay.storage.postgres.search import tsquery
from relay.storage.postgres.translate import Untranslatable, translate
from relay.storage.postgres.translate import _tables as translate_tables
from relay.storage.schema import LATEST_VERSION, MIGRATIONS
from relay.storage.sqlite.db import StoreClosed
from relay.storage.sqlite.writecache import WATCHED
from relay.storage.together import execute_together
from tests.storage.test_store import Boom, Gate, record

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from sqlite_utils import Database

    from relay.storage.postgres.db import PgStore

STORAGE = Path(str(resources.files("relay.storage")))
_STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s")
_BINDINGS = re.compile(r"uses (\d+)")


class _AnyName(dict[str, Any]):
    def __missing__(self, key: str) -> None:
        return None


def _sqlite_accepts(conn: sqlite3.Connection, sql: str) -> bool:
    """Whether SQLite prepares `sql` as a whole statement (fragments of f-strings do not)."""
    params: Any = []
    for _ in range(3):
        try:
            conn.execute(f"EXPLAIN {sql}", params)
            return True
        except sqlite3.ProgrammingError as e:  # bind NULLs: as many as it uses, or any names
            found = _BINDINGS.search(str(e))
            params = _AnyName() if found is None else [None] * int(found.group(1))
        except sqlite3.Error:
            return False
    return False


def shared_statements() -> dict[str, str]:
    """Every SQL statement written in relay/storage/*.py: string constants, and f-strings whose
    parts are module-level string constants; SQLite itself tells statements from fragments."""
    texts: dict[str, str] = {}
    for path in sorted(STORAGE.glob("*.py")):
        module = importlib.import_module(f"relay.storage.{path.stem}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.setdefault(node.value, path.name)
            elif isinstance(node, ast.JoinedStr):
                parts: list[str] = []
                for value in node.values:
                    if isinstance(value, ast.Constant):
                        parts.append(str(value.value))
                    elif isinstance(value, ast.FormattedValue) and isinstance(
                        value.value, ast.Name
                    ):
                        named = getattr(module, value.value.id, None)
                        if not isinstance(named, str):
                            break
                        parts.append(named)
                    else:
                        break
                else:
                    texts.setdefault("".join(parts), path.name)
    conn = sqlite3.connect(":memory:")
    conn.executescript((STORAGE / "schema.sql").read_text(encoding="utf-8"))
    found = {
        sql: where
        for sql, where in texts.items()
        if _STATEMENT.match(sql) and _sqlite_accepts(conn, sql)
    }
    conn.close()
    return found


# SQLite's own: the FTS5 index and catalog, run only by the SQLite modules (PostgreSQL has its
# own search module, relay.storage.postgres.search, and schema module).
SQLITE_ONLY = ("MATCH", "sqlite_master", "message_search_backfill", 'json_each(?))"')


def _numbered(sql: str) -> str:
    """psycopg's placeholders as PostgreSQL's $n, for PREPARE."""
    names: dict[str, int] = {}
    count = 0

    def sub(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(1) is None:
            count += 1
            return f"${count}"
        if match.group(1) not in names:
            count += 1
            names[match.group(1)] = count
        return f"${names[match.group(1)]}"

    return _PLACEHOLDER.sub(sub, sql).replace("%%", "%")


@pytest.fixture(scope="module")
def pg(pg_databases: Callable[[], str]) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_databases(), autocommit=True) as conn:
        yield conn


def test_every_shared_statement_translates_and_postgresql_prepares_it(
    pg: psycopg.Connection[Any],
) -> None:
    statements = shared_statements()
    assert len(statements) > 250  # the collector found the modules' SQL
    failures = []
    for sql, where in statements.items():
        if "MATCH" in sql or "sqlite_master" in sql or "message_search_backfill" in sql:
            continue
        if where == "search.py" and "json_each" in sql:
            continue  # SQLite's search module only; PostgreSQL has its own
        try:
            pg.execute(f"PREPARE checked AS {_numbered(translate(sql).sql)}".encode())
            pg.execute("DEALLOCATE checked")
        except (Untranslatable, psycopg.Error) as e:
            failures.append(f"{where}: {sql}\n  {e}")
    assert not failures, "\n".join(failures)


def test_sqlite_forms_are_rewritten() -> None:
    cases = {
        "INSERT OR IGNORE INTO members (server_id, user_id) VALUES (?, ?)": (
            "INSERT INTO members (server_id, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
        ),
        "INSERT OR REPLACE INTO read_states (user_id, channel_id, last_read_id) VALUES (?, ?, ?)": (
            "INSERT INTO read_states (user_id, channel_id, last_read_id) VALUES (%s, %s, %s)"
            " ON CONFLICT(user_id, channel_id) DO UPDATE SET last_read_id = excluded.last_read_id"
        ),
        "SELECT id FROM messages INDEXED BY messages_nonce WHERE content LIKE '%x%' LIMIT -1": (
            "SELECT id FROM messages WHERE content ILIKE '%%x%%' LIMIT ALL"
        ),
        "SELECT IFNULL(sum(size), 0), max(a, ?) FROM t WHERE b ORDER BY id DESC": (
            "SELECT COALESCE(CAST(SUM(size) AS BIGINT), 0), GREATEST(a, %s) FROM t"
            " WHERE b <> 0 ORDER BY id DESC"
        ),
        "SELECT * FROM t WHERE a = ?2 AND b = ?1": (
            "SELECT * FROM t WHERE a = %(p2)s AND b = %(p1)s"
        ),
    }
    for sqlite_sql, postgres_sql in cases.items():
        assert translate(sqlite_sql).sql == postgres_sql
    assert translate("SELECT * FROM t WHERE a = ?2").numbered
    assert translate("INSERT INTO users (id, username) VALUES (?, ?)").savepoint  # UNIQUE name
    assert not translate("INSERT INTO messages (id, content) VALUES (?, ?)").savepoint
    with pytest.raises(Untranslatable):
        translate("SELECT FROM WHERE")


def _sqlite_columns() -> dict[str, list[str]]:
    conn = sqlite3.connect(":memory:")
    conn.executescript((STORAGE / "schema.sql").read_text(encoding="utf-8"))
    names = [
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not row[0].startswith("message_search_")  # FTS5's own shadow tables
        or row[0] == "message_search_backfill"
    ]
    columns = {n: [r[1] for r in conn.execute(f"PRAGMA table_info('{n}')")] for n in names}
    conn.close()
    return columns


def test_the_postgresql_schema_has_sqlites_tables_and_columns(
    pg: psycopg.Connection[Any],
) -> None:
    rows = pg.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ).fetchall()
    postgres: dict[str, list[str]] = {}
    for table, column in rows:
        postgres.setdefault(table, []).append(column)
    assert postgres.pop("schema_version") == ["version"]  # PostgreSQL's user_version
    # The writers' cache version (relay.storage.postgres.writecache; SQLite's data_version).
    assert postgres.pop("writer_cache_version") == ["id", "version"]
    # The search index: FTS5 keeps the message id as its rowid; PostgreSQL a column of that
    # name, and the tsvector its trigger makes.
    assert postgres["message_search"] == ["rowid", "body", "tsv"]
    postgres["message_search"] = ["body"]
    assert postgres == _sqlite_columns()
    # Ids are BIGINT everywhere (snowflakes reach 2^63).
    small = pg.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND data_type IN ('integer', 'smallint')"
    ).fetchall()
    assert small == []


def test_the_writer_cache_triggers_watch_what_the_cache_holds(
    pg: psycopg.Connection[Any],
) -> None:
    """Migration 0015's triggers bump the version on exactly the tables and columns of
    WATCHED, for insert, delete, update and truncate."""
    rows = pg.execute(
        "SELECT c.relname, t.tgtype, array(SELECT a.attname FROM pg_attribute a"
        "  WHERE a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr) ORDER BY a.attname)"
        " FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE t.tgname LIKE 'writer_cache_%'"
    ).fetchall()
    insert, delete, update, truncate = 4, 8, 16, 32  # pg_trigger.tgtype bits
    row_events = {name: (kind, columns) for name, kind, columns in rows if not kind & truncate}
    truncated = {name for name, kind, _ in rows if kind & truncate}
    assert set(row_events) == truncated == set(WATCHED)
    for table, watched in WATCHED.items():
        kind, columns = row_events[table]
        assert kind & (insert | delete | update) == insert | delete | update, table
        assert columns == (sorted(watched) if watched is not None else []), table


def test_the_translator_knows_what_reaches_the_writer_cache(
    pg: psycopg.Connection[Any],
) -> None:
    """`touches_cache` follows foreign keys' ON DELETE actions, read from SQLite's schema:
    PostgreSQL's must be the same, and the marks hold for the cases that matter."""
    actions = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL"}
    rows = pg.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text, a.attname,"
        " c.confdeltype FROM pg_constraint c JOIN pg_attribute a"
        "  ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)"
        " WHERE c.contype = 'f'"
    ).fetchall()
    postgres = {(child, parent, column, actions[kind]) for child, parent, column, kind in rows}
    sqlite = {
        (ref.child, parent, ref.column, ref.on_delete)
        for parent, table in translate_tables().items()
        for ref in table.referenced_by
    }
    assert postgres - {p for p in postgres if p[0] == "message_search"} == sqlite
    touching = [
        "DELETE FROM users WHERE id = ?",  # members, by cascade
        "DELETE FROM servers WHERE id = ?",
        "DELETE FROM channels WHERE id = ?",
        "UPDATE channels SET parent_id = ? WHERE id = ?",
        "UPDATE members SET communication_disabled_until = ? WHERE user_id = ?",
        "INSERT INTO member_roles (server_id, user_id, role_id) VALUES (?, ?, ?)",
        "INSERT OR REPLACE INTO overwrites (channel_id, target_id, type, allow, deny)"
        " VALUES (?, ?, ?, ?, ?)",
    ]
    harmless = [
        "INSERT INTO messages (id, channel_id, author_id, content) VALUES (?, ?, ?, ?)",
        "DELETE FROM messages WHERE id = ?",
        "UPDATE channels SET last_message_id = ? WHERE id = ?",
        "UPDATE members SET nickname = ? WHERE user_id = ?",
        "SELECT id FROM roles WHERE server_id = ?",
    ]
    assert [s for s in touching if not translate(s).touches_cache] == []
    assert [s for s in harmless if translate(s).touches_cache] == []


def test_migrations_are_kept_in_step_with_sqlites() -> None:
    assert pg_schema.BASE_VERSION == 13
    later = [v for v in MIGRATIONS if v > pg_schema.BASE_VERSION]
    assert sorted(pg_schema.MIGRATIONS) == later, "a SQLite migration lacks its PostgreSQL one"


def test_migrate_is_idempotent_and_refuses_what_is_not_its_database(
    pg: psycopg.Connection[Any], pg_databases: Callable[[], str], postgres: Any
) -> None:
    assert pg_schema.migrate(pg) == LATEST_VERSION  # already migrated: nothing to do
    assert pg_schema.version(pg) == LATEST_VERSION
    with psycopg.connect(postgres.new_database(), autocommit=True) as other:
        other.execute("CREATE TABLE someone_elses (id int)")
        with pytest.raises(RuntimeError, match="no Relay schema"):
            pg_schema.migrate(other)
    with psycopg.connect(pg_databases(), autocommit=True) as newer:
        newer.execute("INSERT INTO schema_version (version) VALUES (%s)", (LATEST_VERSION + 1,))
        with pytest.raises(RuntimeError, match="newer than this server"):
            pg_schema.migrate(newer)


def test_tsquery_quotes_every_token() -> None:
    from relay.storage.fulltext import parse

    assert tsquery(parse('deploy* "the release" -notes')) == (
        "('deploy':*) & ('the' <-> 'release') & !('notes')"
    )
    # A word longer than any indexed token (2,000 bytes) matches nothing; excluded, it is moot.
    long_word = "\U00010428" * 501
    assert tsquery(parse(long_word)) is None
    assert tsquery(parse(f"ok -{long_word}")) == "('ok')"


# -- the store ------------------------------------------------------------------------------------


def create_notes(db: Any) -> None:
    db.execute("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL UNIQUE)")


def insert_note(db: Any, note_id: int, body: str) -> int:
    db.execute("INSERT INTO notes (id, body) VALUES (?, ?)", (note_id, body))
    return note_id


def insert_then_fail(db: Any, note_id: int, body: str) -> None:
    insert_note(db, note_id, body)
    raise Boom(body)


def list_notes(db: Any) -> list[str]:
    return [row[0] for row in db.execute("SELECT body FROM notes ORDER BY id").fetchall()]


@pytest.fixture
async def pg_store(pg_databases: Callable[[], str]) -> AsyncIterator[tuple[PgStore, str]]:
    dsn = pg_databases()
    async with open_pg_store(dsn, readers=2) as store:
        await store.write(create_notes)
        yield store, dsn


def committed(dsn: str) -> dict[str, int]:
    """What a new, independent connection sees."""
    with psycopg.connect(dsn) as conn:
        return {b: i for i, b in conn.execute("SELECT id, body FROM notes ORDER BY id")}


async def test_pg_writes_are_group_committed_and_committed_when_they_return(
    pg_store: tuple[PgStore, str],
) -> None:
    store, dsn = pg_store
    batches, writes = store.batches, store.writes
    results: dict[str, Any] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(record, results, f"w{i}", store, insert_note, i + 1, f"w{i}")
    assert committed(dsn) == results
    assert store.writes - writes == 100
    assert store.batches - batches < 100


async def test_a_failing_pg_write_fails_alone_and_its_batch_commits(
    pg_store: tuple[PgStore, str],
) -> None:
    store, dsn = pg_store
    await store.write(insert_note, 1, "taken")
    gate = Gate()
    results: dict[str, Any] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.write, gate)
            await gate.entered()
            batches = store.batches
            nursery.start_soon(record, results, "before", store, insert_note, 2, "before")
            nursery.start_soon(record, results, "boom", store, insert_then_fail, 3, "boom")
            nursery.start_soon(record, results, "duplicate", store, insert_note, 4, "taken")
            nursery.start_soon(record, results, "after", store, insert_note, 5, "after")
            await trio.testing.wait_all_tasks_blocked()
            gate.release()
    assert store.batches == batches + 2
    assert isinstance(results["boom"], Boom)
    assert isinstance(results["duplicate"], sqlite3.IntegrityError)  # as the modules expect
    assert committed(dsn) == {"taken": 1, "before": 2, "after": 5}


def notes_together(db: Any, first: int, second: int, body: str) -> list[int]:
    """Two inserts sent together, then two reads sent together; the reads' answers."""
    insert = "INSERT INTO notes (id, body) VALUES (?, ?)"
    execute_together(db, [(insert, (first, f"{body}-a")), (insert, (second, f"{body}-b"))])
    count = "SELECT count(*) FROM notes WHERE id = ?"
    return [c.fetchone()[0] for c in execute_together(db, [(count, (first,)), (count, (second,))])]


async def test_statements_sent_together_fail_and_commit_as_one_by_one_would(
    pg_store: tuple[PgStore, str],
) -> None:
    """In the writer's transaction, statements sent in one pipeline: a failure is raised as
    `execute` raises it, its request alone is rolled back, the batch's others commit."""
    store, dsn = pg_store
    await store.write(insert_note, 1, "taken")
    gate = Gate()
    results: dict[str, Any] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.write, gate)
            await gate.entered()
            batches = store.batches
            nursery.start_soon(record, results, "ok", store, notes_together, 10, 11, "ok")
            nursery.start_soon(record, results, "dup", store, notes_together, 20, 1, "dup")
            nursery.start_soon(record, results, "after", store, notes_together, 30, 31, "after")
            await trio.testing.wait_all_tasks_blocked()
            gate.release()
    assert store.batches == batches + 2
    assert results["ok"] == results["after"] == [1, 1]
    assert isinstance(results["dup"], sqlite3.IntegrityError)  # as the modules expect
    assert committed(dsn) == {"taken": 1, "ok-a": 10, "ok-b": 11, "after-a": 30, "after-b": 31}


async def test_pg_reads_see_commits_only_and_run_during_a_write(
    pg_store: tuple[PgStore, str],
) -> None:
    store, _ = pg_store
    await store.write(insert_note, 1, "committed")
    gate = Gate()

    def uncommitted(db: Any) -> str:
        insert_note(db, 2, "uncommitted")
        return gate(db)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.write, uncommitted)
            await gate.entered()
            try:
                during = await store.read(list_notes)
            finally:
                gate.release()
    assert during == ["committed"]
    assert await store.read(list_notes) == ["committed", "uncommitted"]


async def test_pg_write_after_close_raises_store_closed(pg_databases: Callable[[], str]) -> None:
    async with open_pg_store(pg_databases(), readers=1) as store:
        await store.write(create_notes)
    with pytest.raises(StoreClosed):
        await store.write(insert_note, 1, "too late")


async def test_the_pg_writer_connects_again_after_its_connection_is_cut(
    pg_store: tuple[PgStore, str],
) -> None:
    store, dsn = pg_store
    await store.write(insert_note, 1, "before")
    with psycopg.connect(dsn, autocommit=True) as admin:  # as a database restart would
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with pytest.raises(psycopg.OperationalError):
        await store.write(insert_note, 2, "lost with its connection")
    await store.write(insert_note, 3, "after")
    assert committed(dsn) == {"before": 1, "after": 3}


def test_text_with_nul_is_refused_not_altered(database: Database) -> None:
    """SQLite stores NUL in text; PostgreSQL cannot: a clear 400, on lookups and writes alike."""
    from relay.errors import BadRequest
    from relay.storage import users
    from relay.storage.postgres.adapter import PgDatabase

    on_postgres = isinstance(database, PgDatabase)  # a flag: `database` stays the modules' type
    if not on_postgres:
        assert users.get_user_by_name(database, "a\x00b") is None
        return
    with pytest.raises(BadRequest, match="NUL"):
        users.get_user_by_name(database, "a\x00b")
    with pytest.raises(BadRequest, match="NUL"):
        users.insert_user(database, 1, "a\x00b", None, None, None, 0, 0)
    assert list(database.execute("SELECT count(*) FROM users")) == [(0,)]
