"""Full-text search on PostgreSQL: the Search area of relay.storage.areas, as relay.storage.search
is on SQLite, with the same query syntax, visibility rules and results.

The index is the `message_search` table (schema.sql): the shared message queries write each
message's folded tokens (relay.storage.fulltext.index_text) in the message's own transaction, a
trigger turns them into a tsvector of exactly those tokens at their positions (GIN-indexed), and
deleting a message cascades. A parsed query (relay.storage.fulltext.parse: words, "phrases",
prefix*, -excluded) becomes a tsquery built from the same folded tokens: a term's tokens joined by
`<->` (one after the other), `:*` on a prefix, terms joined by `&`, exclusions by `& !`. The
tsquery is written as tsquery text with every lexeme quoted, never given to a parser, so no user
text can change its structure. Relevance is ts_rank (SQLite uses bm25: the order of equally good
matches may differ).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.storage.messages import by_ids
from relay.storage.search import (
    SEARCHED_TYPES,
    SearchFilter,
    SearchPage,
    searchable_channels_of,
)

if TYPE_CHECKING:
    import psycopg
    from sqlite_utils import Database

    from relay.storage.fulltext import Query, Term
    from relay.storage.postgres.adapter import PgDatabase

MAX_LEXEME_BYTES = 2000  # longer tokens are not indexed (schema.sql), so they never match

_HAS_SQL: dict[str, str] = {
    "link": "(m.content ILIKE '%%http://%%' OR m.content ILIKE '%%https://%%')",
    "embed": "m.embeds IS NOT NULL",
    "file": "EXISTS (SELECT 1 FROM attachments a WHERE a.message_id = m.id)",
    "image": "EXISTS (SELECT 1 FROM attachments a"
    " WHERE a.message_id = m.id AND a.width IS NOT NULL)",
}


def _native(db: Database) -> psycopg.Connection[Any]:
    # Typed as the shared modules' Database (the surface PgDatabase offers); this module needs
    # the psycopg connection itself for PostgreSQL's own SQL.
    pg: PgDatabase = db  # type: ignore[assignment]
    return pg.conn.raw


def _lexeme(token: str) -> str:
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def _term(term: Term) -> str | None:
    """The tsquery of one term, or None if it has a token too long to have been indexed."""
    if any(len(t.encode()) > MAX_LEXEME_BYTES for t in term.tokens):
        return None
    lexemes = [_lexeme(t) for t in term.tokens]
    if term.prefix:
        lexemes[-1] += ":*"
    return "(" + " <-> ".join(lexemes) + ")"


def tsquery(query: Query) -> str | None:
    """The tsquery text of a parsed query; None if it cannot match anything."""
    include = [_term(t) for t in query.include]
    if any(t is None for t in include):
        return None
    exclude = [t for t in (_term(t) for t in query.exclude) if t is not None]
    return " & ".join([*(t for t in include if t), *(f"!{t}" for t in exclude)])


def searchable_channels(db: Database, server_id: int, user_id: int) -> list[int] | None:
    """As relay.storage.search.searchable_channels (the same permission rules)."""
    rows = _native(db).execute(
        "SELECT id, type, parent_id FROM channels WHERE server_id = %s AND type = ANY(%s)",
        (server_id, list(SEARCHED_TYPES)),
    )
    return searchable_channels_of(db, server_id, user_id, rows.fetchall())


def search(db: Database, viewer: int, channel_ids: list[int], wanted: SearchFilter) -> SearchPage:
    """As relay.storage.search.search, on PostgreSQL's text search."""
    if not channel_ids:
        return SearchPage(0, [])
    conn = _native(db)
    where = ["m.channel_id = ANY(%(channels)s)"]
    params: dict[str, object] = {"channels": channel_ids}
    source = "messages m"
    if wanted.query is not None:
        match = tsquery(wanted.query)
        if match is None:
            return SearchPage(0, [])
        source = (
            "(SELECT rowid AS id, ts_rank(tsv, q) AS rank"
            " FROM message_search, CAST(%(match)s AS tsquery) AS q WHERE tsv @@ q) h"
            " JOIN messages m ON m.id = h.id"
        )
        params["match"] = match
    if wanted.author_ids:
        where.append("m.author_id = ANY(%(authors)s)")
        params["authors"] = wanted.author_ids
    if wanted.mentions:
        where.append(
            "EXISTS (SELECT 1 FROM message_mentions mm WHERE mm.message_id = m.id"
            " AND mm.user_id = ANY(%(mentions)s))"
        )
        params["mentions"] = wanted.mentions
    where.extend(_HAS_SQL[kind] for kind in wanted.has)
    if wanted.pinned is not None:
        pinned = "EXISTS (SELECT 1 FROM pins p WHERE p.message_id = m.id)"
        where.append(pinned if wanted.pinned else f"NOT {pinned}")
    if wanted.before is not None:
        where.append("m.id < %(before)s")
        params["before"] = wanted.before
    if wanted.after is not None:
        where.append("m.id > %(after)s")
        params["after"] = wanted.after
    clause = " AND ".join(where)
    row = conn.execute(f"SELECT count(*) FROM {source} WHERE {clause}", params).fetchone()
    total = int(row[0]) if row is not None else 0
    if total == 0 or wanted.offset >= total:
        return SearchPage(total, [])
    order = {"newest": "m.id DESC", "oldest": "m.id"}.get(wanted.sort, "m.id DESC")
    if wanted.sort == "relevance" and wanted.query is not None:
        order = "h.rank DESC, m.id DESC"  # ties newest first, as on SQLite
    params["limit"] = wanted.limit
    params["offset"] = wanted.offset
    ids = [
        int(r[0])
        for r in conn.execute(
            f"SELECT m.id FROM {source} WHERE {clause} ORDER BY {order}"
            " LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
    ]
    return SearchPage(total, by_ids(db, ids, viewer))
