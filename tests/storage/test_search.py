"""Full-text search against a real database file: the index follows every create, edit and
delete path in the same transaction; folding (case, diacritics, CJK); the query parser never
lets user text through unescaped; visibility; the migration's batched backfill."""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.permissions import P
from relay.storage import fulltext, messages, moderation, search
from relay.storage.fulltext import QueryError, parse
from relay.storage.schema import LATEST_VERSION, MIGRATIONS, migrate, user_version
from relay.storage.search import SearchFilter
from relay.storage.sqlite.db import connect
from tests.storage.conftest import BACKENDS, areas_of, open_database
from tests.storage.test_messages import (
    ALICE,
    BOB,
    CAROL,
    DM,
    NOW,
    OTHER_TEXT,
    SERVER,
    TEXT,
    Ids,
    populate,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from sqlite_utils import Database


@pytest.fixture
def db(database: Database) -> Database:
    populate(database)
    return database


def post(db: Database, ids: Ids, content: str, channel: int = TEXT, author: int = ALICE) -> int:
    message_id = ids.next()
    messages.create(db, message_id, channel, author, content, None, None, [], NOW)
    return message_id


def found(db: Database, text: str, channels: list[int] | None = None, **kw: object) -> list[int]:
    wanted = SearchFilter(query=parse(text), **kw)  # type: ignore[arg-type]
    page = areas_of(db).search.search(db, ALICE, channels or [TEXT, OTHER_TEXT, DM], wanted)
    assert page.total >= len(page.messages)
    return [m.id for m in page.messages]


def indexed(db: Database) -> dict[int, str]:
    return dict(db.execute("SELECT rowid, body FROM message_search").fetchall())


def test_every_write_path_keeps_the_index_in_step(db: Database) -> None:
    ids = Ids()
    first = post(db, ids, "The Café opens at nine")
    second = post(db, ids, "another message about coffee")
    third = post(db, ids, "third one", channel=OTHER_TEXT, author=BOB)
    assert found(db, "cafe") == [first]
    messages.edit(db, TEXT, first, ALICE, "now it says tea", [], NOW)
    assert found(db, "cafe") == []
    assert found(db, "tea") == [first]
    messages.delete(db, TEXT, second, ALICE)
    assert found(db, "coffee") == []
    bulk = [post(db, ids, f"bulk words {i}") for i in range(3)]
    assert messages.bulk_delete(db, TEXT, ALICE, bulk) == sorted(bulk)
    assert found(db, "bulk") == []
    # A ban deleting the banned member's recent messages (moderation's own delete path).
    moderation.ban(db, SERVER, BOB, ALICE, delete_message_s=3600, now_ms=NOW + 1000)
    assert found(db, "third") == []
    # A channel's deletion takes its messages (a cascade): the trigger empties the index too.
    post(db, ids, "in the other channel", channel=OTHER_TEXT)
    db.execute("DELETE FROM channels WHERE id = ?", (OTHER_TEXT,))
    assert set(indexed(db)) == {first}
    assert third not in indexed(db)


def test_folding_case_diacritics_width_and_cjk(db: Database) -> None:
    ids = Ids()
    a = post(db, ids, "ÉCOLE Straße naïve \uff46\uff55\uff4c\uff4cwidth")
    b = post(db, ids, "東京タワーに行きました")
    c = post(db, ids, "서울에서 만나요")
    assert found(db, "ecole") == [a]
    assert found(db, "STRASSE") == [a]
    assert found(db, "naive fullwidth") == [a]
    assert found(db, "東京") == [b]  # a two-character word in running text
    assert found(db, "タワー") == [b]
    assert found(db, "京") == [b]
    assert found(db, "서울") == [c]
    assert found(db, "京都") == []


def test_phrases_prefixes_exclusions_and_filters(db: Database) -> None:
    ids = Ids()
    a = post(db, ids, "deploy the release today")
    b = post(db, ids, "release the deploy https://example.com")
    c = post(db, ids, "deployment notes", author=BOB)
    assert found(db, '"deploy the release"') == [a]
    assert found(db, "deploy*", sort="oldest") == [a, b, c]
    assert found(db, "deploy") == [b, a]  # newest first; not "deployment"
    assert found(db, "deploy* -release") == [c]
    assert found(db, 'release -"the deploy"') == [a]
    assert found(db, "deploy*", author_ids=[BOB]) == [c]
    assert found(db, "deploy*", has=["link"]) == [b]
    assert found(db, "deploy*", has=["file"]) == []
    assert found(db, "deploy*", before=c, after=a) == [b]
    assert found(db, "deploy*", channels=[OTHER_TEXT]) == []
    page = areas_of(db).search.search(
        db, ALICE, [TEXT], SearchFilter(query=parse("deploy*"), limit=1, offset=1, sort="oldest")
    )
    assert page.total == 3
    assert [m.id for m in page.messages] == [b]


def test_highlights_mark_the_matched_words_in_the_original_text() -> None:
    content = "Le Café, CAFÉS et cafetière — 東京タワー"
    ranges = fulltext.highlights(content, parse("cafe* 東京"))
    assert [content[s:e] for s, e in ranges] == ["Café", "CAFÉS", "cafetière", "東京"]
    decomposed = "cafe\u0301 time"  # an accent as a combining mark
    assert [decomposed[s:e] for s, e in fulltext.highlights(decomposed, parse("café"))] == [
        "cafe\u0301"
    ]


@pytest.mark.parametrize(
    "text",
    ["", "   ", "-excluded", "***", '""', "-", "x" * (fulltext.MAX_QUERY_CHARS + 1), "a " * 17],
)
def test_queries_without_anything_to_search_are_refused(text: str) -> None:
    with pytest.raises(QueryError):
        parse(text)


@pytest.fixture(scope="module", params=BACKENDS)
def shared_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Database]:
    database = open_database(request.param, tmp_path_factory.mktemp("fuzz"), request, own=True)
    populate(database)
    ids = Ids()
    for text in ['say "hi" NOT AND OR NEAR(a b)', "col:umn ^start * - + {x}", "emoji 🎉 ok"]:
        post(database, ids, text)
    yield database
    database.close()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=80))
def test_any_query_string_searches_or_is_refused(shared_db: Database, text: str) -> None:
    try:
        query = parse(text)
    except QueryError:
        return
    try:
        areas_of(shared_db).search.search(shared_db, ALICE, [TEXT], SearchFilter(query=query))
    except (
        sqlite3.Error,
        psycopg.Error,
    ) as e:  # pragma: no cover - the failure this test exists to find
        pytest.fail(f"{text!r} -> {query.fts()!r}: {e}")
    fulltext.highlights(text, query)


def test_operators_in_user_text_are_words(shared_db: Database) -> None:
    assert found(shared_db, "NOT AND", channels=[TEXT])
    assert found(shared_db, "NEAR(a", channels=[TEXT])
    assert found(shared_db, "col:umn", channels=[TEXT])


def test_searchable_channels_follow_view_and_read_history(db: Database) -> None:
    assert areas_of(db).search.searchable_channels(db, SERVER, BOB) == [TEXT, OTHER_TEXT]
    db.execute(
        "INSERT INTO overwrites (channel_id, target_id, type, deny) VALUES (?, ?, 'member', ?)",
        (TEXT, BOB, int(P.READ_MESSAGE_HISTORY)),
    )
    db.execute(
        "INSERT INTO overwrites (channel_id, target_id, type, deny) VALUES (?, ?, 'role', ?)",
        (OTHER_TEXT, SERVER, int(P.VIEW_CHANNEL)),
    )
    assert areas_of(db).search.searchable_channels(db, SERVER, BOB) == []
    assert areas_of(db).search.searchable_channels(db, SERVER, CAROL) == [TEXT]
    assert areas_of(db).search.searchable_channels(db, SERVER, ALICE) == [
        TEXT,
        OTHER_TEXT,
    ]  # the owner
    assert areas_of(db).search.searchable_channels(db, SERVER, 999) is None


SEARCH_VERSION = next(v for v, sql in MIGRATIONS.items() if "message_search_backfill" in sql)


def test_the_migration_backfills_existing_messages_in_batches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = connect(tmp_path / "old.db")
    migrate(database, SEARCH_VERSION - 1)
    populate(database)
    ids = Ids()
    stored = [ids.next() for _ in range(23)]
    database.conn.executemany(
        "INSERT INTO messages (id, channel_id, author_id, content) VALUES (?, ?, ?, ?)",
        [(m, TEXT, ALICE, f"old Message número {i}") for i, m in enumerate(stored)],
    )
    database.conn.commit()
    monkeypatch.setattr(search, "BACKFILL_BATCH", 10)
    with caplog.at_level(logging.INFO, logger="relay.storage"):
        assert migrate(database) == LATEST_VERSION == user_version(database)
    assert "search index backfill: 20/23 messages" in caplog.text
    assert "done, 23 messages indexed" in caplog.text
    assert search.backfill(database) == 0  # done: nothing pending
    assert sorted(indexed(database)) == stored
    assert found(database, "numero", channels=[TEXT]) == stored[::-1][:25]
    database.close()


def test_a_stopped_backfill_resumes_where_it_was(tmp_path: Path) -> None:
    database = connect(tmp_path / "old.db")
    migrate(database)
    populate(database)
    ids = Ids()
    stored = [ids.next() for _ in range(5)]
    database.conn.executemany(
        "INSERT INTO messages (id, channel_id, author_id, content) VALUES (?, ?, ?, 'later')",
        [(m, TEXT, ALICE) for m in stored],
    )
    # As if a backfill had indexed the first two and stopped.
    database.execute("INSERT INTO message_search_backfill (next_id) VALUES (?)", (stored[1],))
    database.conn.commit()
    assert search.backfill(database) == 3
    assert sorted(indexed(database)) == stored[2:]
    database.close()
