"""Message queries against a real, migrated database file: create (nonce dedup, replies,
mentions), history windows, edit, delete, reactions, read state; and the mention parser."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from relay.errors import BadRequest, Forbidden, NotFound, Unprocessable
from relay.ids import EPOCH_MS, Snowflakes, timestamp_ms
from relay.storage import messages
from relay.storage.roles import insert_everyone
from relay.storage.sqlite.db import open_store

if TYPE_CHECKING:
    from pathlib import Path

    from sqlite_utils import Database

NOW = EPOCH_MS + 1_000_000_000
MINUTE = 60_000
ALICE, BOB, CAROL, EVE = 11, 12, 13, 14  # Eve is in no server and no DM
SERVER, TEXT, OTHER_TEXT, VOICE, DM = 100, 101, 102, 103, 104


@pytest.fixture
def db(database: Database) -> Database:
    populate(database)
    return database


def populate(db: Database) -> None:
    """Alice owns a server with Bob and Carol in it; Alice and Bob also share a DM."""
    for user_id, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (EVE, "eve")):
        db.execute(
            "INSERT INTO users (id, username, display_name, created_at, updated_at)"
            " VALUES (?, ?, ?, 0, 0)",
            (user_id, name, name.title()),
        )
    db.execute(
        "INSERT INTO servers (id, name, owner_id, created_at) VALUES (?, 's', ?, 0)",
        (SERVER, ALICE),
    )
    insert_everyone(db, SERVER, 0)  # what create_server does: members' default permissions
    for user_id in (ALICE, BOB, CAROL):
        db.execute(
            "INSERT INTO members (server_id, user_id, joined_at) VALUES (?, ?, 0)",
            (SERVER, user_id),
        )
    for channel_id, kind in ((TEXT, "text"), (OTHER_TEXT, "text"), (VOICE, "voice")):
        db.execute(
            "INSERT INTO channels (id, server_id, type, created_at) VALUES (?, ?, ?, 0)",
            (channel_id, SERVER, kind),
        )
    db.execute(
        "INSERT INTO channels (id, type, dm_key, created_at) VALUES (?, 'dm', 'k', 0)", (DM,)
    )
    for user_id in (ALICE, BOB):
        db.execute("INSERT INTO dm_recipients (channel_id, user_id) VALUES (?, ?)", (DM, user_id))


class Ids:
    """Message ids as the server makes them: snowflakes, increasing."""

    def __init__(self) -> None:
        self._ids = Snowflakes(clock_ms=lambda: NOW)

    def next(self) -> int:
        return self._ids.next()


@pytest.fixture
def ids() -> Ids:
    return Ids()


def post(
    db: Database,
    ids: Ids,
    content: str = "hi",
    *,
    channel: int = TEXT,
    author: int = ALICE,
    nonce: str | None = None,
    reply_to: int | None = None,
    now: int = NOW,
) -> tuple[messages.MessageRow, bool]:
    return messages.create(
        db,
        ids.next(),
        channel,
        author,
        content,
        nonce,
        reply_to,
        messages.parse_mentions(content),
        now,
    )


def count(db: Database, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def last_message_id(db: Database, channel_id: int) -> int | None:
    row = db.execute("SELECT last_message_id FROM channels WHERE id = ?", (channel_id,))
    value: int | None = row.fetchone()[0]
    return value


# -- create --------------------------------------------------------------------------------------


def test_create_stores_and_returns_the_whole_message(db: Database, ids: Ids) -> None:
    message, created = post(db, ids, "hello <@12>")

    assert created
    assert message.channel_id == TEXT
    assert message.server_id == SERVER
    assert message.author == messages.AuthorRow(ALICE, "alice", "Alice")
    assert (message.content, message.nonce, message.reply_to, message.edited_at) == (
        "hello <@12>",
        None,
        None,
        None,
    )
    assert message.mentions == [BOB]
    assert message.reactions == []
    assert timestamp_ms(message.id) == NOW
    assert messages.get(db, TEXT, message.id, None) == message
    assert last_message_id(db, TEXT) == message.id
    # One's own message counts as read.
    assert messages.read_states(db, ALICE)[0] == messages.ReadStateRow(
        TEXT, message.id, message.id, 0
    )


def test_create_returns_what_get_reads_back(db: Database, ids: Ids) -> None:
    first, _ = post(db, ids, "<@13> <@12> <@11> <@13> héllo 👋", nonce="n")
    made = [
        first,
        post(db, ids, "in a dm <@12> <@13>", channel=DM, author=BOB)[0],
        post(db, ids, "a reply", reply_to=first.id, author=CAROL)[0],
    ]
    assert made[0].mentions == [ALICE, BOB, CAROL]
    for message in made:
        assert messages.get(db, message.channel_id, message.id, message.author.id) == message


@pytest.mark.sqlite_only  # SQLite's trace/progress callbacks
def test_create_takes_a_fixed_number_of_queries(db: Database, ids: Ids) -> None:
    post(db, ids, "warm-up")
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        post(db, ids, "hello", nonce="q")
    finally:
        db.conn.set_trace_callback(None)
    # Not BEGIN/COMMIT (autocommit), nor "-- " lines (what FTS5 runs inside the index's insert).
    queries = [q for q in statements if q.split()[0] not in ("BEGIN", "COMMIT", "--")]
    # The permission check (channel, then access.server_access: 6), the nonce, the insert, the
    # channel's last message, the author's read state, the author's names for the answer, and
    # the search index's row.
    assert len(queries) == 7 + 1 + 1 + 1 + 1 + 1 + 1, queries


def test_create_checks_the_channel(db: Database, ids: Ids) -> None:
    with pytest.raises(NotFound) as hidden:
        post(db, ids, author=EVE)
    with pytest.raises(NotFound) as dm_outsider:
        post(db, ids, channel=DM, author=CAROL)
    with pytest.raises(NotFound) as missing:
        post(db, ids, channel=999)
    with pytest.raises(BadRequest) as voice:
        post(db, ids, channel=VOICE)

    assert {hidden.value.code, dm_outsider.value.code, missing.value.code} == {"unknown_channel"}
    assert voice.value.code == "not_a_text_channel"
    assert count(db, "messages") == 0


def test_repeated_nonce_returns_the_first_message(db: Database, ids: Ids) -> None:
    first, created = post(db, ids, "one", nonce="n-1")
    again, created_again = post(db, ids, "two", nonce="n-1", now=NOW + 9 * MINUTE)

    assert created
    assert not created_again
    assert again == first
    assert count(db, "messages") == 1


def test_nonce_is_per_author_channel_and_window(db: Database, ids: Ids) -> None:
    first, _ = post(db, ids, nonce="n")
    others = [
        post(db, ids, nonce="n", author=BOB),
        post(db, ids, nonce="n", channel=OTHER_TEXT),
        post(db, ids, nonce="n", now=NOW + 11 * MINUTE),  # the first one is too old by then
        post(db, ids, nonce="m"),
        post(db, ids),  # no nonce: never deduplicated
        post(db, ids),
    ]

    assert all(created for _, created in others)
    assert len({m.id for m, _ in others} | {first.id}) == 7


def test_reply_to_must_be_a_message_of_the_channel(db: Database, ids: Ids) -> None:
    here, _ = post(db, ids)
    elsewhere, _ = post(db, ids, channel=OTHER_TEXT)

    reply, _ = post(db, ids, reply_to=here.id)
    assert reply.reply_to == here.id
    for bad in (elsewhere.id, 12345):
        with pytest.raises(BadRequest) as refused:
            post(db, ids, reply_to=bad)
        assert refused.value.code == "invalid_field"
        assert set(refused.value.fields) == {"reply_to"}
    assert count(db, "messages") == 3


def test_mentions_keep_only_who_can_see_the_channel(db: Database, ids: Ids) -> None:
    server_message, _ = post(db, ids, "<@13> <@14> <@12> <@13> <@999> <@11>")
    dm_message, _ = post(db, ids, "<@13> <@12>", channel=DM)

    assert server_message.mentions == [ALICE, BOB, CAROL]  # not Eve, not a stranger id
    assert dm_message.mentions == [BOB]  # Carol cannot see the DM


def test_at_most_100_mentions_are_stored(db: Database, ids: Ids) -> None:
    many = list(range(1000, 1130))
    for user_id in many:
        db.execute(
            "INSERT INTO users (id, username, created_at, updated_at) VALUES (?, ?, 0, 0)",
            (user_id, f"u{user_id}"),
        )
        db.execute(
            "INSERT INTO members (server_id, user_id, joined_at) VALUES (?, ?, 0)",
            (SERVER, user_id),
        )

    message, _ = post(db, ids, " ".join(f"<@{u}>" for u in reversed(many)))

    assert message.mentions == many[-100:]  # the first 100 in the text
    assert count(db, "message_mentions") == 100


async def test_a_failed_create_leaves_nothing_and_spares_the_others(tmp_path: Path) -> None:
    async with open_store(tmp_path / "relay.db") as store:
        await store.write(populate)
        outcomes: dict[str, str] = {}

        async def create(message_id: int, content: str, reply_to: int | None) -> None:
            try:
                await store.write(
                    messages.create, message_id, TEXT, ALICE, content, None, reply_to, [BOB], NOW
                )
                outcomes[content] = "created"
            except BadRequest as e:
                outcomes[content] = e.code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create, 1 << 40, "ok", None)
            nursery.start_soon(create, 2 << 40, "bad reply", 77)
            nursery.start_soon(create, 3 << 40, "ok too", None)

        assert outcomes == {"ok": "created", "bad reply": "invalid_field", "ok too": "created"}
        assert await store.read(count, "messages") == 2
        assert await store.read(count, "message_mentions") == 2


# -- history -------------------------------------------------------------------------------------


def test_history_windows_are_oldest_first(db: Database, ids: Ids) -> None:
    made = [post(db, ids, str(i))[0].id for i in range(10)]
    post(db, ids, channel=OTHER_TEXT)

    def window(**kw: int) -> list[int]:
        return [m.id for m in messages.history(db, TEXT, ALICE, **kw)]

    assert window() == made
    assert window(limit=3) == made[-3:]
    assert window(before=made[5], limit=3) == made[2:5]
    assert window(after=made[5], limit=3) == made[6:9]
    assert window(after=made[8]) == made[9:]
    assert window(around=made[5], limit=4) == made[3:7]
    assert window(around=made[5], limit=1) == [made[5]]
    assert window(around=made[0], limit=5) == made[0:3]
    assert window(before=made[0]) == []
    assert messages.history(db, DM, ALICE) == []


# -- edit and delete -----------------------------------------------------------------------------


def test_edit_is_for_the_author_and_reparses_mentions(db: Database, ids: Ids) -> None:
    message, _ = post(db, ids, "hi <@12>")

    with pytest.raises(Forbidden) as not_author:
        messages.edit(db, TEXT, message.id, BOB, "mine now", [], NOW + 1)
    with pytest.raises(NotFound) as elsewhere:
        messages.edit(db, OTHER_TEXT, message.id, ALICE, "x", [], NOW + 1)
    edited = messages.edit(db, TEXT, message.id, ALICE, "hi <@13>", [CAROL, EVE], NOW + 5)

    assert not_author.value.code == "not_author"
    assert elsewhere.value.code == "unknown_message"
    assert (edited.content, edited.edited_at, edited.mentions) == ("hi <@13>", NOW + 5, [CAROL])
    assert timestamp_ms(edited.id) == NOW  # created_at does not move


def test_delete_takes_reactions_and_mentions_and_moves_last_message(db: Database, ids: Ids) -> None:
    older, _ = post(db, ids)
    newer, _ = post(db, ids, "<@12>")
    messages.add_reaction(db, TEXT, newer.id, BOB, "👍", NOW)

    with pytest.raises(Forbidden):
        messages.delete(db, TEXT, newer.id, BOB)
    messages.delete(db, TEXT, newer.id, ALICE)
    with pytest.raises(NotFound):
        messages.delete(db, TEXT, newer.id, ALICE)

    assert messages.get(db, TEXT, newer.id, None) is None
    assert (count(db, "reactions"), count(db, "message_mentions")) == (0, 0)
    assert last_message_id(db, TEXT) == older.id
    messages.delete(db, TEXT, older.id, ALICE)
    assert last_message_id(db, TEXT) is None


# -- reactions -----------------------------------------------------------------------------------


def test_reactions_count_me_and_order(db: Database, ids: Ids) -> None:
    message, _ = post(db, ids)

    assert messages.add_reaction(db, TEXT, message.id, BOB, "🎉", NOW)
    assert not messages.add_reaction(db, TEXT, message.id, BOB, "🎉", NOW + 1)  # already there
    assert messages.add_reaction(db, TEXT, message.id, ALICE, "👍", NOW + 2)
    assert messages.add_reaction(db, TEXT, message.id, ALICE, "🎉", NOW + 3)

    def reactions(viewer: int | None) -> list[tuple[str, int, bool]]:
        got = messages.get(db, TEXT, message.id, viewer)
        assert got is not None
        return [(r.emoji, r.count, r.me) for r in got.reactions]

    assert reactions(BOB) == [("🎉", 2, True), ("👍", 1, False)]
    assert reactions(ALICE) == [("🎉", 2, True), ("👍", 1, True)]
    assert reactions(None) == [("🎉", 2, False), ("👍", 1, False)]
    assert messages.remove_reaction(db, TEXT, message.id, BOB, "🎉")
    assert not messages.remove_reaction(db, TEXT, message.id, BOB, "🎉")
    # Alice's 🎉 came after her 👍: the order is that of the reactions still there.
    assert reactions(BOB) == [("👍", 1, False), ("🎉", 1, False)]
    with pytest.raises(NotFound):
        messages.add_reaction(db, OTHER_TEXT, message.id, BOB, "👍", NOW)


def test_at_most_20_distinct_emoji(db: Database, ids: Ids) -> None:
    message, _ = post(db, ids)
    faces = [chr(0x1F600 + i) for i in range(21)]
    for face in faces[:20]:
        messages.add_reaction(db, TEXT, message.id, ALICE, face, NOW)

    with pytest.raises(Unprocessable) as refused:
        messages.add_reaction(db, TEXT, message.id, ALICE, faces[20], NOW)
    # More people may still use an emoji the message already has.
    assert messages.add_reaction(db, TEXT, message.id, BOB, faces[0], NOW)
    assert refused.value.code == "too_many_reactions"


def test_reactors_page_by_user_id(db: Database, ids: Ids) -> None:
    message, _ = post(db, ids)
    for user_id in (CAROL, ALICE, BOB):
        messages.add_reaction(db, TEXT, message.id, user_id, "👍", NOW)

    def page(after: int, limit: int) -> list[int]:
        return [u.id for u in messages.reactors(db, TEXT, message.id, "👍", after, limit)]

    assert page(0, 2) == [ALICE, BOB]
    assert page(BOB, 2) == [CAROL]
    assert messages.reactors(db, TEXT, message.id, "🎉", 0, 10) == []
    with pytest.raises(NotFound):
        messages.reactors(db, TEXT, 42, "👍", 0, 10)


# -- read state ----------------------------------------------------------------------------------


def test_ack_only_moves_forward(db: Database, ids: Ids) -> None:
    first, _ = post(db, ids)
    second, _ = post(db, ids)

    assert messages.ack(db, BOB, TEXT, second.id)
    assert not messages.ack(db, BOB, TEXT, first.id)
    assert not messages.ack(db, BOB, TEXT, second.id)
    with pytest.raises(NotFound):
        messages.ack(db, BOB, OTHER_TEXT, second.id)
    state = {s.channel_id: s for s in messages.read_states(db, BOB)}
    assert state[TEXT].last_read_id == second.id


def test_read_states_cover_visible_text_channels_and_count_mentions(db: Database, ids: Ids) -> None:
    read, _ = post(db, ids, "<@12> old")
    messages.ack(db, BOB, TEXT, read.id)
    post(db, ids, "<@12> new")
    latest, _ = post(db, ids, "<@12> <@12> newer")
    dm, _ = post(db, ids, "<@12>", channel=DM)

    assert messages.read_states(db, BOB) == [
        messages.ReadStateRow(TEXT, read.id, latest.id, 2),
        messages.ReadStateRow(OTHER_TEXT, 0, None, 0),
        messages.ReadStateRow(DM, 0, dm.id, 1),
    ]
    assert [s.channel_id for s in messages.read_states(db, CAROL)] == [TEXT, OTHER_TEXT]
    assert messages.read_states(db, EVE) == []


@pytest.mark.sqlite_only  # SQLite's trace/progress callbacks
def test_read_states_take_a_fixed_number_of_queries(db: Database, ids: Ids) -> None:
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        messages.read_states(db, BOB)
        messages.read_states(db, EVE)  # in no server: no permissions to load
    finally:
        db.conn.set_trace_callback(None)
    assert len(statements) == 1 + 5 + 1  # read states, then the permissions (access.accesses_of)


@pytest.mark.sqlite_only  # SQLite's trace/progress callbacks
def test_history_uses_a_fixed_number_of_queries(db: Database, ids: Ids) -> None:
    for i in range(30):
        message, _ = post(db, ids, f"<@12> {i}")
        messages.add_reaction(db, TEXT, message.id, BOB, "👍", NOW)
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    try:
        assert len(messages.history(db, TEXT, BOB)) == 30
    finally:
        db.conn.set_trace_callback(None)
    # Rows, mentions, reactions, attachments, then role and @everyone mentions
    # (relay.storage.mentions).
    assert len(statements) == 4 + 2


# -- the mention parser --------------------------------------------------------------------------


@given(st.text())
def test_parse_mentions_never_raises_and_finds_only_tokens(text: str) -> None:
    found = messages.parse_mentions(text)
    assert len(found) == len(set(found))
    for user_id in found:
        assert f"<@{user_id}>" in text


ids_st = st.integers(min_value=1, max_value=(1 << 63) - 1)
# Text between tokens that cannot itself form or complete one.
filler = st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=20)


@given(st.lists(st.tuples(filler, ids_st), max_size=20), filler)
def test_parse_mentions_is_exactly_the_tokens(parts: list[tuple[str, int]], tail: str) -> None:
    text = "".join(f"{before}<@{user_id}>" for before, user_id in parts) + tail
    expected = list(dict.fromkeys(user_id for _, user_id in parts))
    assert messages.parse_mentions(text) == expected


@pytest.mark.parametrize(
    "text",
    ["<@007>", "<@0>", "<@ 12>", "<@12 >", "<12>", "@12", "<@-12>", "<@١٢>", f"<@{1 << 63}>"],
)
def test_not_mentions(text: str) -> None:
    assert messages.parse_mentions(text) == []


def test_tokens_inside_other_text() -> None:
    assert messages.parse_mentions("a<@1>b<@<@2>>c<@3") == [1, 2]


@pytest.mark.sqlite_only  # SQLite's trace/progress callbacks
def test_the_nonce_lookup_reads_one_index_entry_not_the_authors_history(
    db: Database, ids: Ids
) -> None:
    """Regression: the dedup query was planned on messages_author and scanned every message of
    the author in the channel within the window, one by one, on each post."""

    def vm_steps() -> int:  # SQLite virtual-machine steps (in hundreds) for one lookup
        steps = [0]

        def count_step() -> int:
            steps[0] += 1
            return 0  # 0: go on

        db.conn.set_progress_handler(count_step, 100)
        try:
            assert db.execute(messages.NONCE_SQL, (ALICE, "n3", TEXT, 0)).fetchone() is not None
        finally:
            db.conn.set_progress_handler(None, 100)
        return steps[0]

    for i in range(30):
        post(db, ids, f"m{i}", nonce=f"n{i}")
    plan = db.execute("EXPLAIN QUERY PLAN " + messages.NONCE_SQL, (ALICE, "n3", TEXT, 0))
    assert "USING INDEX messages_nonce (author_id=? AND nonce=?" in plan.fetchone()[-1]
    few = vm_steps()
    for i in range(30, 600):
        post(db, ids, f"m{i}", nonce=f"n{i}")
    assert vm_steps() <= few + 1  # the same work with twenty times the history
