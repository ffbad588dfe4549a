"""Fenced writes on a real SQLite file: a channel's writes under a token older than the newest
one stored are refused (nothing committed), the newer owner's are accepted."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from relay.ids import Snowflakes
from relay.storage import fencing, messages
from relay.storage.messages import NewMessage
from relay.storage.sqlite.db import open_store
from tests.storage.test_messages import ALICE, NOW, OTHER_TEXT, TEXT, populate

if TYPE_CHECKING:
    from pathlib import Path


def new(text: str, channel_id: int = TEXT) -> NewMessage:
    return NewMessage(
        channel_id=channel_id,
        author_id=ALICE,
        content=text,
        nonce=None,
        reply_to=None,
        mentions=[],
        now_ms=NOW,
    )


async def test_a_stale_fence_is_refused_and_the_newer_owners_write_accepted(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path / "relay.db") as store:
        await store.write(populate)
        assert await store.write(fencing.claim, TEXT, 1) == 0  # no message yet
        old = await store.write(fencing.post, store.ids.next(), new("old owner"), fence=1)
        # A new owner claims the channel: it learns the last id, and its token is the newest.
        assert await store.write(fencing.claim, TEXT, 2) == old.message.id
        with pytest.raises(fencing.StaleOwner):
            await store.write(fencing.post, store.ids.next(), new("late write"), fence=1)
        with pytest.raises(fencing.StaleOwner):
            await store.write(fencing.claim, TEXT, 1)  # the old owner cannot claim it back
        newer = await store.write(fencing.post, store.ids.next(), new("new owner"), fence=2)
        assert await store.write(fencing.post, store.ids.next(), new("again"), fence=2)
        # Other channels have fences of their own.
        assert await store.write(fencing.post, store.ids.next(), new("x", OTHER_TEXT), fence=1)
        history = await store.read(messages.history, TEXT, ALICE)
        assert [m.content for m in history] == ["old owner", "new owner", "again"]
        assert newer.message.id > old.message.id
        assert await store.read(fencing.newest, TEXT) == 2
        assert await store.read(fencing.newest, OTHER_TEXT) == 1
    # Durable: the refused write left nothing, the fence survives a restart.
    async with open_store(tmp_path / "relay.db") as store:
        assert await store.read(fencing.newest, TEXT) == 2
        with pytest.raises(fencing.StaleOwner):
            await store.write(fencing.post, store.ids.next(), new("after restart"), fence=1)


def test_a_new_owners_ids_continue_above_the_last_owners_whatever_the_clocks() -> None:
    ahead = Snowflakes(worker=9, clock_ms=lambda: NOW + 5_000)  # the old owner's clock is ahead
    behind = Snowflakes(worker=1, clock_ms=lambda: NOW)
    last = ahead.next()
    assert behind.next() < last
    behind.advance_past(last)
    assert behind.next() > last
    before = behind.next()
    behind.advance_past(before - 1_000_000)  # never moves backwards
    assert behind.next() > before
