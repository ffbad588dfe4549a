"""Queries for full-text search: which channels a user may search, the search itself, and the
backfill that indexes messages stored before the index existed.

The index (`message_search`, see relay.storage.fulltext) is written by `messages.create` and
`messages.edit` in their own transactions and emptied of deleted messages by a trigger, so it
never disagrees with `messages`.

Visibility: a search only ever looks at the channel ids `searchable_channels` (or the one-channel
route's check) produced, computed with relay.permissions like every other read. A message
outside them is neither returned nor counted.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Literal

import msgspec

from relay.permissions import P, compute
from relay.storage.access import server_access
from relay.storage.fulltext import Query, index_text
from relay.storage.messages import MessageRow, by_ids

if TYPE_CHECKING:
    from sqlite_utils import Database

log = logging.getLogger("relay.storage")

SEARCH_NEEDS = int(P.VIEW_CHANNEL | P.READ_MESSAGE_HISTORY)
# Channel types a search looks in, and whose permissions decide: "self" for a channel's own; a
# thread (a later type) maps to "parent", its permissions being its parent channel's.
SEARCHED_TYPES: dict[str, Literal["self", "parent"]] = {"text": "self", "thread": "parent"}
BACKFILL_BATCH = 5000  # messages indexed per transaction by the backfill

Has = Literal["link", "file", "image", "embed"]
Sort = Literal["relevance", "newest", "oldest"]


class SearchFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What to look for, checked (ids parsed, limits applied) by the chat layer."""

    query: Query | None = None
    author_ids: list[int] = []
    channel_ids: list[int] = []  # a subset of the searchable channels; empty: all of them
    mentions: list[int] = []
    has: list[Has] = []
    pinned: bool | None = None
    before: int | None = None
    after: int | None = None
    sort: Sort = "newest"
    limit: int = 25
    offset: int = 0


class SearchPage(msgspec.Struct, frozen=True):
    total: int
    messages: list[MessageRow]


def searchable_channels(db: Database, server_id: int, user_id: int) -> list[int] | None:
    """The server's channels whose messages the user may search (VIEW_CHANNEL and
    READ_MESSAGE_HISTORY after overwrites; a channel of a "parent" type by its parent's), or
    None if they are not a member."""
    rows = db.execute(
        "SELECT id, type, parent_id FROM channels WHERE server_id = ? AND type IN"
        " (SELECT value FROM json_each(?))",
        (server_id, json.dumps(list(SEARCHED_TYPES))),
    ).fetchall()
    return searchable_channels_of(db, server_id, user_id, rows)


def searchable_channels_of(
    db: Database, server_id: int, user_id: int, rows: list[tuple[int, str, int | None]]
) -> list[int] | None:
    """Of the server's channels of SEARCHED_TYPES (id, type, parent_id), those the user may
    search (the rule of `searchable_channels`, shared with PostgreSQL's search)."""
    access = server_access(db, server_id, user_id, None)
    if access is None:
        return None
    found = []
    for channel_id, kind, parent_id in rows:
        decides = channel_id if SEARCHED_TYPES[kind] == "self" else parent_id
        if decides is None or decides not in access.server.channels:
            continue
        if compute(access.server, access.member, decides) & SEARCH_NEEDS == SEARCH_NEEDS:
            found.append(channel_id)
    return found


_HAS_SQL: dict[str, str] = {
    "link": "(m.content LIKE '%http://%' OR m.content LIKE '%https://%')",
    "embed": "m.embeds IS NOT NULL",
    "file": "EXISTS (SELECT 1 FROM attachments a WHERE a.message_id = m.id)",
    "image": "EXISTS (SELECT 1 FROM attachments a"
    " WHERE a.message_id = m.id AND a.width IS NOT NULL)",
}


def search(db: Database, viewer: int, channel_ids: list[int], wanted: SearchFilter) -> SearchPage:
    """Messages of `channel_ids` (already checked as visible to `viewer`) that match, with how
    many match in all (`offset`/`limit` page through them)."""
    if not channel_ids:
        return SearchPage(0, [])
    where = ["m.channel_id IN (SELECT value FROM json_each(:channels))"]
    params: dict[str, object] = {"channels": json.dumps(channel_ids)}
    source = "messages m"
    if wanted.query is not None:
        source = (
            "(SELECT rowid AS id, rank FROM message_search WHERE message_search MATCH :match) h"
            " JOIN messages m ON m.id = h.id"
        )
        params["match"] = wanted.query.fts()
    if wanted.author_ids:
        where.append("m.author_id IN (SELECT value FROM json_each(:authors))")
        params["authors"] = json.dumps(wanted.author_ids)
    if wanted.mentions:
        where.append(
            "EXISTS (SELECT 1 FROM message_mentions mm WHERE mm.message_id = m.id"
            " AND mm.user_id IN (SELECT value FROM json_each(:mentions)))"
        )
        params["mentions"] = json.dumps(wanted.mentions)
    where.extend(_HAS_SQL[kind] for kind in wanted.has)
    if wanted.pinned is not None:
        pinned = "EXISTS (SELECT 1 FROM pins p WHERE p.message_id = m.id)"
        where.append(pinned if wanted.pinned else f"NOT {pinned}")
    if wanted.before is not None:
        where.append("m.id < :before")
        params["before"] = wanted.before
    if wanted.after is not None:
        where.append("m.id > :after")
        params["after"] = wanted.after
    clause = " AND ".join(where)
    total = db.execute(f"SELECT count(*) FROM {source} WHERE {clause}", params).fetchone()[0]
    if total == 0 or wanted.offset >= total:
        return SearchPage(total, [])
    order = {"newest": "m.id DESC", "oldest": "m.id"}.get(wanted.sort, "m.id DESC")
    if wanted.sort == "relevance" and wanted.query is not None:
        order = "h.rank, m.id DESC"  # bm25: lower is better; ties newest first
    params["limit"] = wanted.limit
    params["offset"] = wanted.offset
    ids = [
        row[0]
        for row in db.execute(
            f"SELECT m.id FROM {source} WHERE {clause} ORDER BY {order}"
            " LIMIT :limit OFFSET :offset",
            params,
        )
    ]
    return SearchPage(total, by_ids(db, ids, viewer))


def backfill(db: Database) -> int:
    """Index the messages stored before the index existed, BACKFILL_BATCH per transaction, logging
    progress; resumes where a stopped run left off. Returns how many it indexed (0: nothing
    was pending)."""
    row = db.execute("SELECT next_id FROM message_search_backfill").fetchone()
    if row is None:
        return 0
    next_id = int(row[0])
    batch = BACKFILL_BATCH
    pending = db.execute("SELECT count(*) FROM messages WHERE id > ?", (next_id,)).fetchone()[0]
    log.info("search index backfill: %d messages to index", pending)
    done = 0
    while True:
        with db.conn:
            rows = db.execute(
                "SELECT id, content FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (next_id, batch),
            ).fetchall()
            if not rows:
                db.execute("DELETE FROM message_search_backfill")
                break
            db.conn.executemany(
                "INSERT OR REPLACE INTO message_search (rowid, body) VALUES (?, ?)",
                [(message_id, index_text(content)) for message_id, content in rows],
            )
            next_id = rows[-1][0]
            db.execute("UPDATE message_search_backfill SET next_id = ?", (next_id,))
        done += len(rows)
        log.info("search index backfill: %d/%d messages", done, pending)
    log.info("search index backfill: done, %d messages indexed", done)
    return done
