"""The storage tests run on both databases: `database` opens a fresh, migrated SQLite file or an
empty PostgreSQL database (the shared query modules run on both, relay.storage.postgres).

On PostgreSQL, one migrated database per test worker is emptied (TRUNCATE, about 30 ms) before
each test: creating a database takes ten times as long. Fixtures that need a database of their
own (a store, a module's shared data) get a copy of a migrated template (`pg_databases`)."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from relay.storage.areas import POSTGRES, SQLITE, Areas
from relay.storage.schema import migrate
from relay.storage.sqlite.db import connect

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from sqlite_utils import Database

    from tests.realservers import PostgresServer

BACKENDS = ["sqlite", "postgres"]
_names = itertools.count()


def _first_database(postgres: PostgresServer) -> str:
    # The server's port opens a moment before it takes connections ("starting up").
    for _ in range(100):
        try:
            return postgres.new_database()
        except subprocess.CalledProcessError:
            time.sleep(0.1)
    return postgres.new_database()


@pytest.fixture(scope="session")
def pg_databases(postgres: PostgresServer) -> Iterator[Callable[[], str]]:
    """A function giving the DSN of a new migrated PostgreSQL database."""
    from relay.storage.postgres.schema import migrate as pg_migrate

    template = _first_database(postgres)
    with psycopg.connect(template, autocommit=True) as conn:
        pg_migrate(conn)
    name = template.rsplit("/", 1)[1]
    with psycopg.connect(postgres.dsn(), autocommit=True) as admin:

        def new() -> str:
            copy = f"relay_copy_{os.getpid()}_{next(_names)}"
            admin.execute(f"CREATE DATABASE {copy} TEMPLATE {name}")
            return postgres.dsn(copy)

        yield new


@pytest.fixture(scope="session")
def pg_reused(pg_databases: Callable[[], str]) -> tuple[str, str]:
    """One migrated database for the `database` fixture's tests: its DSN and the statement
    that empties it."""
    dsn = pg_databases()
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename NOT IN ('schema_version', 'writer_cache_version')"
            )
        ]
    return dsn, f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"


def open_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, *, own: bool = False
) -> Any:
    """A migrated, empty database; on PostgreSQL the worker's reused one unless `own`."""
    if backend == "sqlite":
        database = connect(tmp_path / "relay.db")
        migrate(database)
        return database
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("a test of SQLite's own behaviour")
    from relay.storage.postgres.db import connect as pg_connect

    if own:
        return pg_connect(request.getfixturevalue("pg_databases")())
    dsn, empty = request.getfixturevalue("pg_reused")
    db = pg_connect(dsn)
    db.conn.raw.execute(empty.encode())
    return db


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, migrated database of each kind (typed as the modules' Database: the PostgreSQL
    one offers the same surface)."""
    db = open_database(request.param, tmp_path, request)
    yield db
    db.close()


def areas_of(db: Any) -> Areas:
    """The query areas for `db`'s kind of database (what relay.services gives the chat layer)."""
    from relay.storage.postgres.adapter import PgDatabase

    return POSTGRES if isinstance(db, PgDatabase) else SQLITE
