"""Schema versions: schema.sql and the numbered migrations agree; upgrades are all-or-nothing."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from relay.storage.schema import LATEST_VERSION, MIGRATIONS, migrate, schema_sql, user_version
from relay.storage.sqlite.db import connect, open_store

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlite_utils import Database

REPO_ROOT = Path(__file__).resolve().parents[2]
SchemaRow = tuple[str, str, str, str]


def schema_of(db: Database) -> list[SchemaRow]:
    """sqlite_master, sorted, with each statement's whitespace collapsed."""
    rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return sorted(
        (kind, name, table, " ".join((sql or "").split())) for kind, name, table, sql in rows
    )


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Database]:
    """A database created from schema.sql (what a new server does with an empty file)."""
    db = connect(tmp_path / "fresh.db")
    assert migrate(db) == LATEST_VERSION
    yield db
    db.close()


@pytest.fixture
def upgraded(tmp_path: Path) -> Iterator[Database]:
    """A database brought up one numbered migration at a time.

    migrate() uses schema.sql for an empty file, so a placeholder table makes this one look like an
    old, unversioned database; it is dropped once the migrations have run.
    """
    db = connect(tmp_path / "upgraded.db")
    db.execute("CREATE TABLE placeholder (x INTEGER)")
    for version in sorted(MIGRATIONS):
        assert migrate(db, target=version) == version
    db.execute("DROP TABLE placeholder")
    yield db
    db.close()


def test_migrations_build_the_same_schema_as_schema_sql(
    fresh: Database, upgraded: Database
) -> None:
    assert schema_of(fresh), "schema.sql created nothing"
    assert schema_of(upgraded) == schema_of(fresh)
    assert user_version(upgraded) == user_version(fresh) == LATEST_VERSION


def test_schema_sql_ends_at_the_latest_version() -> None:
    final = re.search(r"PRAGMA\s+user_version\s*=\s*(\d+)\s*;\s*\Z", schema_sql(), re.IGNORECASE)
    assert final, "schema.sql must end by setting PRAGMA user_version"
    assert int(final.group(1)) == LATEST_VERSION


def test_packaged_schema_is_the_repository_schema() -> None:
    assert (REPO_ROOT / "schema.sql").read_text(encoding="utf-8") == schema_sql()


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    assert sorted(MIGRATIONS) == list(range(1, LATEST_VERSION + 1))


def test_migrating_again_changes_nothing(fresh: Database, upgraded: Database) -> None:
    for db in (fresh, upgraded):
        db.execute(
            "INSERT INTO users (id, username, created_at, updated_at) VALUES (1, 'alice', 0, 0)"
        )
        db.conn.commit()
        before = schema_of(db)

        assert migrate(db) == LATEST_VERSION

        assert schema_of(db) == before
        assert db.execute("SELECT username FROM users").fetchall() == [("alice",)]


def test_a_database_from_a_newer_server_is_refused(fresh: Database) -> None:
    newer = LATEST_VERSION + 1
    fresh.execute(f"PRAGMA user_version = {newer}")
    before = schema_of(fresh)

    with pytest.raises(RuntimeError, match=rf"version {newer} is newer than this server"):
        migrate(fresh)

    assert user_version(fresh) == newer
    assert schema_of(fresh) == before


async def test_open_store_refuses_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()

    with pytest.raises(RuntimeError, match="newer than this server"):
        async with open_store(path, readers=1):
            pytest.fail("the store opened a database from a newer server")


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    db = connect(tmp_path / "legacy.db")
    # An old database at version 0 holding a view where migration 1 wants a table: the
    # CREATE TABLE IF NOT EXISTS is skipped, then creating the index on it fails, midway through.
    db.execute("CREATE VIEW auth_challenges AS SELECT 1 AS challenge")
    before = schema_of(db)

    with pytest.raises(sqlite3.OperationalError, match="views may not be indexed"):
        migrate(db)

    assert user_version(db) == 0
    assert schema_of(db) == before  # the tables created before the failure were rolled back
    assert not db.conn.in_transaction
    with sqlite3.connect(tmp_path / "legacy.db") as other:  # and nothing reached the file
        assert other.execute("SELECT name FROM sqlite_master").fetchall() == [("auth_challenges",)]
    other.close()

    db.execute("DROP VIEW auth_challenges")
    db.execute("CREATE TABLE unrelated (x INTEGER)")  # keep it non-empty: the migration path
    assert migrate(db) == LATEST_VERSION
    db.close()


def test_the_threads_migration_widens_channel_types_and_grants_thread_bits(
    tmp_path: Path,
) -> None:
    # Found by content: the integrator renumbers migrations at merge.
    version = next(
        v for v, sql in MIGRATIONS.items() if "TABLE IF NOT EXISTS thread_members" in sql
    )
    path = tmp_path / "old.db"
    db = connect(path)
    db.execute("CREATE TABLE placeholder (x INTEGER)")
    migrate(db, target=version - 1)
    db.execute("INSERT INTO users (id, username, created_at, updated_at) VALUES (1, 'a', 0, 0)")
    for sid, everyone in ((7, 0b111), (8, 0b101)):  # 8's @everyone may not send
        db.execute(
            "INSERT INTO servers (id, name, owner_id, created_at) VALUES (?, 's', 1, 5)", (sid,)
        )
        db.execute(
            "INSERT INTO roles (id, server_id, name, permissions, position, created_at)"
            " VALUES (?, ?, '@everyone', ?, 0, 5)",
            (sid, sid, everyone),
        )
        db.execute(
            "INSERT INTO channels (id, server_id, type, name, created_at)"
            " VALUES (?, ?, 'text', 'g', 5)",
            (sid * 10, sid),
        )
    db.execute("INSERT INTO messages (id, channel_id, author_id, content) VALUES (1, 70, 1, 'hi')")
    db.conn.commit()
    reader = sqlite3.connect(path)  # open across the migration: it must see the new CHECK
    assert reader.execute("SELECT count(*) FROM channels").fetchone() == (2,)

    migrate(db, target=version)

    bits = (1 << 28) | (1 << 29)  # CREATE_THREADS | SEND_MESSAGES_IN_THREADS
    perms = dict(db.execute("SELECT id, permissions FROM roles").fetchall())
    assert perms == {7: 0b111 | bits, 8: 0b101}
    assert db.execute("SELECT content FROM messages").fetchall() == [("hi",)]  # nothing cascaded
    for n, connection in enumerate((db.conn, reader), start=1):
        connection.execute(
            "INSERT INTO channels (id, server_id, type, name, parent_id, created_at)"
            " VALUES (?, 7, 'thread', 't', 70, 5)",
            (100 + n,),
        )
        connection.execute(
            "INSERT INTO channels (id, type, created_at) VALUES (?, 'group_dm', 5)", (200 + n,)
        )
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute(
                "INSERT INTO channels (id, type, created_at) VALUES (300, 'forum', 5)"
            )
        connection.commit()
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    reader.close()
    db.close()
