"""Several statements of a query module in one round trip where the database is another process.

`execute_together(db, [(sql, params), ...])` runs them in order and returns their cursors. On
PostgreSQL they are sent together and answered together (psycopg's pipeline mode, see
relay.storage.postgres.adapter): one round trip instead of one each, which is most of what a
statement costs there. On SQLite, in-process, it is `db.execute` in a loop. Only for statements
whose parameters do not depend on each other's results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlite_utils import Database


def execute_together(db: Database, statements: Sequence[tuple[str, Any]]) -> list[Any]:
    """The statements' cursors, in order, once every one has run (see the module docstring)."""
    together = getattr(db, "execute_together", None)
    if together is not None:
        return together(statements)  # type: ignore[no-any-return]
    return [db.execute(sql, params) for sql, params in statements]
