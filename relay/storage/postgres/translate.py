"""SQLite SQL of relay/storage/*.py to PostgreSQL, each distinct statement translated once.

sqlglot (a maintained SQL parser and transpiler) does the general work: `?` and `:name`
placeholders to psycopg's `%s` and `%(name)s`, IFNULL, scalar MAX/MIN to GREATEST/LEAST, string
and operator syntax. Parsing into a tree, rather than rewriting text with regular expressions,
is what makes the few SQLite forms it leaves alone safe to rewrite here:

- `INSERT OR IGNORE` becomes `ON CONFLICT DO NOTHING`; `INSERT OR REPLACE` an upsert on the
  table's primary key that sets every inserted column;
- `x IN table` becomes `x IN (SELECT * FROM table)`;
- `INDEXED BY` (a planner hint) is dropped, and `LIMIT -1` (no limit) is `LIMIT ALL`;
- `LIKE` becomes `ILIKE` (SQLite's LIKE ignores ASCII case);
- `SUM(x)` is cast back to BIGINT (PostgreSQL's sum of bigints is numeric, a Decimal);
- SQLite's integers-as-booleans: a bare column as a condition (`WHEN u.bot`) is `u.bot <> 0`,
  and `MAX(a = b)` is `MAX(CAST(a = b AS INT))`;
- a subquery in FROM gets the alias PostgreSQL requires; the columns on the right of
  `ON CONFLICT ... DO UPDATE SET` are qualified with the table (PostgreSQL finds them
  ambiguous); ORDER BY keeps PostgreSQL's own NULL placement (see `_rewrite`);
- `%` in string literals is doubled for psycopg's placeholder syntax;
- numbered placeholders `?N` become named ones (`Translated.numbered`).

Each statement is also marked when it may change a row the writer's permission cache holds
(`Translated.touches_cache`: a write to a watched table or column of
relay.storage.sqlite.writecache.WATCHED, directly or through a foreign key's ON DELETE action):
the adapter empties that cache after running it.

`json_each(?)` (a JSON array of ids) and `COLLATE NOCASE` need no rewrite: the PostgreSQL
schema defines a `json_each` function and a case-insensitive `nocase` collation.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources

import sqlglot
from sqlglot import exp

from relay.storage.sqlite.writecache import WATCHED

_NUMBERED = re.compile(r"\?(\d+)")
_ALIASES = itertools.count()  # names for subqueries in FROM that SQLite let go unnamed


class Untranslatable(ValueError):
    """A statement the translator cannot turn into PostgreSQL."""


@dataclass(frozen=True, slots=True)
class Translated:
    sql: str
    numbered: bool  # positional parameters are passed as {"pN": params[N-1]}
    savepoint: bool  # a plain INSERT into a table with a secondary UNIQUE key (see adapter)
    touches_cache: bool = False  # may change a row the writer's cache holds (module docstring)
    reads: bool = False  # a SELECT that writes nothing


@dataclass(frozen=True, slots=True)
class _Reference:
    """A foreign key of `child` (its `column`) to another table, and what a delete there does."""

    child: str
    column: str
    on_delete: str  # CASCADE, SET NULL, SET DEFAULT, NO ACTION, RESTRICT


@dataclass(frozen=True, slots=True)
class _Table:
    primary_key: tuple[str, ...]
    unique_beyond_key: bool
    referenced_by: tuple[_Reference, ...] = ()


@cache
def _tables() -> dict[str, _Table]:
    """Primary keys and secondary unique indexes, read from SQLite's own fresh schema."""
    sql = (resources.files("relay.storage") / "schema.sql").read_text(encoding="utf-8")
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(sql)
        found: dict[str, _Table] = {}
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        references: dict[str, list[_Reference]] = {}
        for (name,) in names:
            for row in conn.execute(f"PRAGMA foreign_key_list('{name}')"):
                references.setdefault(row[2], []).append(_Reference(name, row[3], row[6]))
        for (name,) in names:
            info = conn.execute(f"PRAGMA table_info('{name}')").fetchall()
            key = tuple(row[1] for row in sorted(info, key=lambda r: r[5]) if row[5] > 0)
            indexes = conn.execute(f"PRAGMA index_list('{name}')").fetchall()
            unique = any(row[2] and row[3] != "pk" for row in indexes)
            found[name] = _Table(key, unique, tuple(references.get(name, ())))
        # An FTS5 table has no key in SQLite; PostgreSQL's message_search is keyed by rowid.
        found["message_search"] = _Table(("rowid",), False)
        return found
    finally:
        conn.close()


def _insert(node: exp.Insert) -> tuple[exp.Insert, bool]:
    """Rewrite INSERT OR IGNORE / OR REPLACE; whether the insert needs a savepoint."""
    schema = node.this
    table = schema.this if isinstance(schema, exp.Schema) else schema
    name = table.name if isinstance(table, exp.Table) else ""
    conflict = node.args.get("conflict")
    if conflict is not None:
        # `DO UPDATE SET bytes = bytes + excluded.bytes`: PostgreSQL calls an unqualified column
        # on the right ambiguous; SQLite means the existing row's.
        parts = [a.expression for a in conflict.expressions]
        parts += [conflict.args["where"]] if conflict.args.get("where") is not None else []
        for part in parts:
            for column in part.find_all(exp.Column):
                if not column.table:
                    column.set("table", exp.to_identifier(name))
    alternative = node.args.get("alternative")
    if alternative is None:
        known = _tables().get(name)
        plain = node.args.get("conflict") is None
        return node, plain and known is not None and known.unique_beyond_key
    kind = str(alternative).upper()
    node.set("alternative", None)
    if kind == "IGNORE":
        node.set("conflict", exp.OnConflict(action=exp.var("DO NOTHING")))
        return node, False
    if kind != "REPLACE" or name not in _tables():
        raise Untranslatable(f"INSERT OR {kind} INTO {name}")
    key = _tables()[name].primary_key
    columns = [c.name for c in schema.expressions] if isinstance(schema, exp.Schema) else []
    if not key or not columns:
        raise Untranslatable(f"INSERT OR REPLACE INTO {name} needs a key and a column list")
    updates = [
        exp.EQ(
            this=exp.column(c),
            expression=exp.column(c, table="excluded"),
        )
        for c in columns
        if c not in key
    ]
    node.set(
        "conflict",
        exp.OnConflict(
            conflict_keys=[exp.to_identifier(k) for k in key],
            action=exp.var("DO UPDATE" if updates else "DO NOTHING"),
            expressions=updates,
        ),
    )
    return node, False


def _watched(table: str, columns: set[str] | None) -> bool:
    """Whether changing `columns` (None: a whole row) of `table` may change a cached row."""
    if table not in WATCHED:
        return False
    watched = WATCHED[table]
    return watched is None or columns is None or bool(columns & set(watched))


def _delete_reaches_cache(table: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether deleting rows of `table` may change a cached row, through ON DELETE actions."""
    if _watched(table, None):
        return True
    known = _tables().get(table)
    if known is None or table in seen:
        return known is None  # an unknown table: assume it might
    for ref in known.referenced_by:
        if ref.on_delete == "CASCADE" and _delete_reaches_cache(ref.child, seen | {table}):
            return True
        if ref.on_delete in ("SET NULL", "SET DEFAULT") and _watched(ref.child, {ref.column}):
            return True
    return False


def _touches_cache(tree: exp.Expr) -> bool:
    """Whether a statement may change a row the writer's permission cache holds."""
    for node in tree.find_all(exp.Insert, exp.Update, exp.Delete):
        target = node.this.this if isinstance(node.this, exp.Schema) else node.this
        name = target.name if isinstance(target, exp.Table) else ""
        if isinstance(node, exp.Delete):
            touched = _delete_reaches_cache(name)
        elif isinstance(node, exp.Update):
            columns = {e.this.name for e in node.expressions if isinstance(e.this, exp.Column)}
            touched = _watched(name, columns if len(columns) == len(node.expressions) else None)
        else:  # an insert, or an upsert's update of the same table
            touched = _watched(name, None)
        if touched or name not in _tables():
            return True
    return False


def _condition(node: exp.Expr) -> exp.Expr:
    """A bare integer column used as a condition (`WHEN u.bot`) as `u.bot <> 0`."""
    if isinstance(node, exp.Column):
        return exp.NEQ(this=node.copy(), expression=exp.Literal.number(0))
    return node


def _in_from(node: exp.Expr) -> bool:
    """A subquery used as a table (PostgreSQL wants an alias for it)."""
    return isinstance(node.parent, (exp.From, exp.Join))


def _rewrite(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Ordered):
        # PostgreSQL's own NULL placement (sqlglot would spell out SQLite's, and an explicit
        # NULLS FIRST/LAST that differs from an index's order keeps the index from serving the
        # ORDER BY: history pages would sort).
        node.set("nulls_first", bool(node.args.get("desc")))
    elif isinstance(node, (exp.Max, exp.Min)) and isinstance(node.this, exp.Predicate):
        # MAX(user_id = ?): SQLite's comparisons are 0/1 integers, PostgreSQL's booleans.
        node.set("this", exp.Cast(this=node.this, to=exp.DataType.build("INT")))
    elif isinstance(node, exp.Subquery) and node.alias == "" and _in_from(node):
        node.set("alias", exp.TableAlias(this=exp.to_identifier(f"_q{next(_ALIASES)}")))
    elif isinstance(node, exp.In) and isinstance(node.args.get("field"), exp.Column):
        # SQLite's `x IN seen` (a table or CTE) is `x IN (SELECT * FROM seen)`.
        table = node.args["field"].name
        node.set("field", None)
        node.set("query", exp.select("*").from_(table).subquery())
    elif isinstance(node, (exp.If, exp.Where)):
        node.set("this", _condition(node.this))
    elif isinstance(node, (exp.And, exp.Or)):
        node.set("this", _condition(node.this))
        node.set("expression", _condition(node.expression))
    elif isinstance(node, exp.Not):
        node.set("this", _condition(node.this))
    if isinstance(node, exp.Limit) and isinstance(node.expression, exp.Neg):
        return exp.Limit(expression=exp.var("ALL"))  # SQLite's LIMIT -1: no limit
    if isinstance(node, exp.Table) and node.args.get("indexed") is not None:
        node.set("indexed", None)
    elif isinstance(node, exp.Like):
        return exp.ILike(**node.args)
    elif isinstance(node, exp.Sum) and not isinstance(node.parent, exp.Cast):
        return exp.Cast(this=node, to=exp.DataType.build("BIGINT"))
    return node


def _escape(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Literal) and node.is_string and "%" in node.this:
        return exp.Literal.string(node.this.replace("%", "%%"))
    return node


@cache
def translate(sql: str) -> Translated:
    """`sql` (SQLite, one statement) as PostgreSQL for psycopg; raises Untranslatable."""
    numbered = bool(_NUMBERED.search(sql))
    source = _NUMBERED.sub(r":p\1", sql) if numbered else sql
    try:
        tree = sqlglot.parse_one(source, read="sqlite")
    except sqlglot.errors.SqlglotError as e:
        raise Untranslatable(f"{e}: {sql}") from e
    savepoint = False
    touches_cache = _touches_cache(tree)
    if isinstance(tree, exp.Insert):
        tree, savepoint = _insert(tree)
    tree = tree.transform(_rewrite).transform(_escape)
    try:
        text = tree.sql(dialect="postgres", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as e:
        raise Untranslatable(f"{e}: {sql}") from e
    reads = isinstance(tree, exp.Select) and tree.find(exp.Insert, exp.Update, exp.Delete) is None
    return Translated(text, numbered, savepoint, touches_cache, reads)
