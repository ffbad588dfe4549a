"""Role, @everyone and @here mentions in storage: what the author's permissions keep, edits
replacing them, and the parsers (hypothesis: any text parses without error, ids canonical)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.permissions import P
from relay.storage import mentions, messages
from tests.storage.test_messages import ALICE, BOB, CAROL, NOW, SERVER, TEXT, Ids, populate

if TYPE_CHECKING:
    from sqlite_utils import Database

ROLE = 500


@pytest.fixture
def db(database: Database) -> Database:
    populate(database)
    return database


def make_role(db: Database, mentionable: bool) -> None:
    db.execute(
        "INSERT INTO roles (id, server_id, name, permissions, position, mentionable, created_at)"
        " VALUES (?, ?, 'r', 0, 1, ?, 0)",
        (ROLE, SERVER, int(mentionable)),
    )
    db.execute(
        "INSERT INTO member_roles (server_id, user_id, role_id) VALUES (?, ?, ?)",
        (SERVER, CAROL, ROLE),
    )


def test_edits_replace_role_and_everyone_mentions(db: Database) -> None:
    make_role(db, mentionable=False)
    ids = Ids()
    message_id = ids.next()
    row, _ = messages.create(
        db, message_id, TEXT, ALICE, "x", None, None, [], NOW,
        role_ids=[ROLE], everyone=mentions.HERE, here_candidates=[BOB, CAROL, 999],
    )  # fmt: skip
    assert (row.mention_roles, row.mention_everyone) == ([ROLE], True)  # the owner may
    here = db.execute("SELECT user_id FROM message_here ORDER BY user_id").fetchall()
    assert [r[0] for r in here] == [BOB, CAROL]  # not someone who is no member
    edited = messages.edit(db, TEXT, message_id, ALICE, "y", [], NOW, role_ids=[], everyone=0)
    assert (edited.mention_roles, edited.mention_everyone) == ([], False)
    assert db.execute("SELECT count(*) FROM message_here").fetchone()[0] == 0
    # Bob lacks MENTION_EVERYONE and the role is not mentionable: nothing is kept.
    row, _ = messages.create(
        db, ids.next(), TEXT, BOB, "x", None, None, [], NOW,
        role_ids=[ROLE], everyone=mentions.EVERYONE,
    )  # fmt: skip
    assert (row.mention_roles, row.mention_everyone) == ([], False)
    db.execute(
        "UPDATE roles SET permissions = permissions | ? WHERE id = ?",
        (int(P.MENTION_EVERYONE), SERVER),
    )
    row, _ = messages.create(
        db, ids.next(), TEXT, BOB, "x", None, None, [], NOW,
        role_ids=[ROLE], everyone=mentions.EVERYONE,
    )  # fmt: skip
    assert (row.mention_roles, row.mention_everyone) == ([ROLE], True)
    assert messages.get(db, TEXT, row.id, None) == row
    # A deleted role leaves the messages that mentioned it.
    db.execute("DELETE FROM roles WHERE id = ?", (ROLE,))
    assert messages.get(db, TEXT, row.id, None).mention_roles == []  # type: ignore[union-attr]


def test_parsers() -> None:
    assert mentions.parse_roles("<@&12> <@&012> <@&12> <@&7> <@12>") == [12, 7]
    assert mentions.parse_everyone("hi @everyone") == mentions.EVERYONE
    assert mentions.parse_everyone("@here and @everyone") == mentions.EVERYONE
    assert mentions.parse_everyone("@here!") == mentions.HERE
    assert mentions.parse_everyone("@everyones mail@hereford") == mentions.NONE


@given(st.text(max_size=200))
def test_any_text_parses(text: str) -> None:
    roles = mentions.parse_roles(text)
    assert all(f"<@&{r}>" in text for r in roles)
    assert mentions.parse_everyone(text) in (mentions.NONE, mentions.EVERYONE, mentions.HERE)
