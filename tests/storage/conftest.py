"""The storage tests run on both databases: `database` opens a fresh, migrated SQLite file or a
fresh PostgreSQL database (the shared query modules run on both, relay.storage.postgres).

PostgreSQL databases are copies of one migrated template (CREATE DATABASE ... TEMPLATE takes a
few milliseconds; building the schema each time would not)."""

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


def open_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    if backend == "sqlite":
        database = connect(tmp_path / "relay.db")
        migrate(database)
        return database
    if request.node.get_closest_marker("sqlite_only"):
        pytest.skip("a test of SQLite's own behaviour")
    from relay.storage.postgres.db import connect as pg_connect

    return pg_connect(request.getfixturevalue("pg_databases")())


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
