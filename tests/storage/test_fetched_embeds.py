"""Storing what the preview workers made: never over an edit that came in between, never on a
suppressed message, and rich embeds and link previews kept apart through edits."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from relay.storage import messages
from tests.storage.test_messages import ALICE, NOW, TEXT, db  # noqa: F401 (the fixture)

if TYPE_CHECKING:
    from sqlite_utils import Database

RICH = [{"type": "rich", "title": "r", "pending": {"image": "https://x.org/i.png"}}]
LINK = [{"type": "link", "title": "page", "url": "https://x.org/"}]


def stored_embeds(database: Database, message_id: int) -> list[dict[str, object]]:
    row = database.execute("SELECT embeds FROM messages WHERE id = ?", (message_id,)).fetchone()
    return json.loads(row[0]) if row[0] else []


def test_previews_are_stored_only_for_the_content_they_were_made_for(db: Database) -> None:  # noqa: F811
    row, _ = messages.create(
        db, 1, TEXT, ALICE, "https://x.org/", None, None, [], NOW, embeds=json.dumps(RICH)
    )
    assert messages.set_fetched_embeds(db, TEXT, 1, row.content, RICH, RICH, LINK) is not None
    assert stored_embeds(db, 1) == RICH + LINK
    # The same again: nothing to write, nothing to announce.
    assert messages.set_fetched_embeds(db, TEXT, 1, row.content, RICH, RICH, LINK) is None
    # Edited meanwhile (content, or rich embeds): the late result is dropped.
    messages.edit(db, TEXT, 1, ALICE, "https://y.org/", [], NOW + 1)
    assert stored_embeds(db, 1) == RICH  # the edit dropped the old previews itself
    assert messages.set_fetched_embeds(db, TEXT, 1, row.content, RICH, RICH, LINK) is None
    messages.edit(db, TEXT, 1, ALICE, None, [], NOW + 2, embeds=None)
    later = messages.set_fetched_embeds(db, TEXT, 1, "https://y.org/", RICH, RICH, LINK)
    assert later is None
    assert messages.set_fetched_embeds(db, TEXT, 1, "https://y.org/", [], [], LINK) is not None
    # Suppressed: no previews are stored, and the edit that suppressed dropped them.
    messages.edit(db, TEXT, 1, ALICE, None, [], NOW + 3, flags=messages.SUPPRESS_EMBEDS)
    assert stored_embeds(db, 1) == []
    assert messages.set_fetched_embeds(db, TEXT, 1, "https://y.org/", [], [], LINK) is None
    # Gone: nothing.
    assert messages.set_fetched_embeds(db, TEXT, 99, "x", [], [], LINK) is None
