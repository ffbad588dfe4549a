"""`relay db copy`: every table of a SQLite Relay database into an empty PostgreSQL one
(docs/postgresql.md#moving-from-sqlite).

Theory of operation. Both databases must be at this Relay's schema version (the target is
migrated first, so an empty database gets the schema; the source must have been migrated,
which also finishes its search index's backfill). The target must hold no rows. The whole
copy is one PostgreSQL transaction, so a failure leaves the target as it was:

1. its foreign keys are dropped (tables reference each other, and themselves, in orders no
   table order satisfies), to be added back at the end, which checks every row against them;
2. each table is read from one SQLite read transaction (a consistent snapshot; the caller holds
   the database's lock, so no server writes meanwhile) in batches of BATCH rows and written
   with COPY, the same columns by name, ids included. The search index, FTS5 on SQLite, is
   copied as its `body` (the same folded text on both), from which PostgreSQL's trigger makes
   the tsvector;
3. identity sequences are moved past the largest id, and every table's row count is compared
   with the source's before the commit.

The tables are taken from PostgreSQL's catalog and must be exactly SQLite's (less FTS5's own
shadow tables): a table on one side only stops the copy before anything is written.

Error handling: `CopyRefused` for everything the operator must fix (versions, a non-empty
target, schema drift, a value PostgreSQL cannot store, a count that differs), with the reason;
psycopg's errors otherwise.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from relay.storage.postgres.schema import migrate
from relay.storage.schema import LATEST_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

BATCH = 5000  # rows read from SQLite and written per COPY batch
# FTS5's own tables behind the search index (its `body` is copied through message_search).
FTS_SHADOW = {f"message_search_{part}" for part in ("config", "content", "data", "docsize", "idx")}
NOT_COPIED = {"schema_version", "writer_cache_version"}  # PostgreSQL's own: its version, and
# the writers' cache version (relay.storage.postgres.writecache)
COMPUTED = {("message_search", "tsv")}  # made by a trigger from the copied columns


class CopyRefused(Exception):
    """The copy cannot be made (the message says why, for the operator)."""


@dataclass(frozen=True, slots=True)
class Copied:
    tables: int
    rows: int
    version: int


def copy_database(
    source: Path, dsn: str, *, progress: Callable[[str, int], None] | None = None
) -> Copied:
    """Copy the SQLite database at `source` into the empty PostgreSQL database at `dsn`."""
    if not source.is_file():
        raise CopyRefused(f"{source}: no such database")
    lite = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True)
    try:
        found = int(lite.execute("PRAGMA user_version").fetchone()[0])
        if found != LATEST_VERSION:
            raise CopyRefused(
                f"{source} is at schema version {found}, this Relay's is {LATEST_VERSION}:"
                " run `relay db migrate` on it first"
                if found < LATEST_VERSION
                else f"{source} is newer (schema version {found}) than this Relay"
            )
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            try:
                version = migrate(conn)
            except RuntimeError as e:
                raise CopyRefused(f"the target database: {e}") from None
            lite.execute("BEGIN")  # one snapshot of every table
            copied = _copy(lite, conn, progress)
        return Copied(copied[0], copied[1], version)
    finally:
        lite.close()


def _tables(lite: sqlite3.Connection, conn: psycopg.Connection[Any]) -> list[str]:
    on_pg = {
        str(row[0])
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    } - NOT_COPIED
    on_lite = {
        str(row[0])
        for row in lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    } - FTS_SHADOW
    if on_pg != on_lite:
        only = sorted(on_lite - on_pg) + sorted(on_pg - on_lite)
        raise CopyRefused(f"the two schemas differ (tables {', '.join(only)}): nothing copied")
    return sorted(on_pg)


def _columns(lite: sqlite3.Connection, conn: psycopg.Connection[Any], table: str) -> list[str]:
    on_pg = [
        str(row[0])
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        if (table, row[0]) not in COMPUTED
    ]
    # Hidden columns are FTS5's own (the table's name, `rank`).
    on_lite = {str(r[1]) for r in lite.execute(f'PRAGMA table_xinfo("{table}")') if not r[6]}
    if table == "message_search":
        on_lite.add("rowid")  # FTS5's rowid is the message id
    differ = sorted(set(on_pg) ^ on_lite)
    if differ:
        raise CopyRefused(
            f"the two schemas differ (table {table}, columns {', '.join(differ)}): nothing copied"
        )
    return on_pg


def _copy(
    lite: sqlite3.Connection,
    conn: psycopg.Connection[Any],
    progress: Callable[[str, int], None] | None,
) -> tuple[int, int]:
    tables = _tables(lite, conn)
    total = 0
    with conn.transaction():
        for table in tables:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            if row is not None and row[0]:
                raise CopyRefused(
                    f"the target database is not empty (table {table} has {row[0]} rows):"
                    " copy into a new, empty database"
                )
        keys = conn.execute(
            "SELECT t.relname, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
            " WHERE c.contype = 'f' AND n.nspname = current_schema() ORDER BY 1, 2"
        ).fetchall()
        for table, name, _ in keys:
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(table), sql.Identifier(name)
                )
            )
        # The writers' cache triggers (relay.storage.postgres.writecache) would queue one
        # deferred event per copied row, and those pending events forbid the ALTER TABLEs
        # below: off for the copy, then one bump of the version for all of it.
        cache_triggers = conn.execute(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE t.tgname LIKE 'writer\\_cache\\_%' AND n.nspname = current_schema()"
        ).fetchall()
        _set_triggers(conn, cache_triggers, "DISABLE")
        for table in tables:
            rows = _copy_table(lite, conn, table)
            total += rows
            if progress is not None:
                progress(table, rows)
        for table, name, definition in keys:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                    sql.Identifier(table), sql.Identifier(name)
                )
                + sql.SQL(definition)
            )
        _set_triggers(conn, cache_triggers, "ENABLE")
        conn.execute("UPDATE writer_cache_version SET version = version + 1")
        _advance_sequences(conn)
        _verify(lite, conn, tables)
    return len(tables), total


def _set_triggers(
    conn: psycopg.Connection[Any], triggers: list[tuple[str, str]], action: str
) -> None:
    for table, name in triggers:
        conn.execute(
            sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                sql.Identifier(table), sql.SQL(action), sql.Identifier(name)
            )
        )


def _copy_table(lite: sqlite3.Connection, conn: psycopg.Connection[Any], table: str) -> int:
    columns = _columns(lite, conn, table)
    select = ", ".join(f'"{c}"' for c in columns)
    reader = lite.execute(f'SELECT {select} FROM "{table}"')
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    rows = 0
    try:
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            while batch := reader.fetchmany(BATCH):
                for values in batch:
                    copy.write_row(values)
                rows += len(batch)
    except psycopg.DataError as e:
        # Most often a NUL character (U+0000) in a text: SQLite stores it, PostgreSQL cannot.
        raise CopyRefused(f"table {table}: PostgreSQL refused a value: {e}") from None
    return rows


def _advance_sequences(conn: psycopg.Connection[Any]) -> None:
    """Identity columns continue above the copied ids."""
    found = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall()
    for table, column in found:
        conn.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({t}, {c}), coalesce(max({col}), 1),"
                " max({col}) IS NOT NULL) FROM {table}"
            ).format(
                t=sql.Literal(table),
                c=sql.Literal(column),
                col=sql.Identifier(column),
                table=sql.Identifier(table),
            )
        )


def _verify(lite: sqlite3.Connection, conn: psycopg.Connection[Any], tables: list[str]) -> None:
    for table in tables:
        want = int(lite.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        got = row.fetchone()
        copied = int(got[0]) if got is not None else 0
        if copied != want:
            raise CopyRefused(f"table {table}: {want} rows in the source, {copied} copied")
