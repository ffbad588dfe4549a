"""The mentions inbox as whole messages (relay.storage.mentions finds them, relay.storage.messages
reads them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.storage.mentions import inbox
from relay.storage.messages import MessageRow, by_ids

if TYPE_CHECKING:
    from sqlite_utils import Database


def inbox_messages(
    db: Database, user_id: int, before: int, limit: int, server_id: int | None = None
) -> list[MessageRow]:
    """Up to `limit` messages before `before` that mention the user, newest first."""
    return by_ids(db, inbox(db, user_id, before, limit, server_id), user_id)
