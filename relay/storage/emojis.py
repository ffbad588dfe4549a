"""Custom emoji of a server (sync queries, `db` first). The image is a blob (relay.media)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

from relay.errors import NotFound, Unprocessable
from relay.permissions import P
from relay.storage.access import require_server

if TYPE_CHECKING:
    from sqlite_utils import Database

_REACTION = re.compile(r"^([A-Za-z0-9_]{2,32}):([1-9][0-9]{0,18})$")
MAX_STATIC = 50  # per server
MAX_ANIMATED = 50


class EmojiRow(msgspec.Struct, frozen=True):
    id: int
    server_id: int
    name: str
    digest: str
    animated: bool
    creator_id: int | None


_COLUMNS = "id, server_id, name, digest, animated, creator_id"


def _row(row: tuple[Any, ...]) -> EmojiRow:
    emoji_id, server_id, name, digest, animated, creator = row
    return EmojiRow(emoji_id, server_id, name, digest, bool(animated), creator)


def unknown_emoji() -> NotFound:
    return NotFound("unknown emoji", code="unknown_emoji")


def list_emojis(db: Database, server_id: int, user_id: int) -> list[EmojiRow]:
    """A server's emoji, by id (members only: else 404 unknown_server)."""
    require_server(db, server_id, user_id)
    return server_emojis(db, server_id)


def server_emojis(db: Database, server_id: int) -> list[EmojiRow]:
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM emojis WHERE server_id = ? ORDER BY id", (server_id,)
    ).fetchall()
    return [_row(r) for r in rows]


def get_emoji(db: Database, server_id: int, emoji_id: int) -> EmojiRow | None:
    row = db.execute(
        f"SELECT {_COLUMNS} FROM emojis WHERE id = ? AND server_id = ?", (emoji_id, server_id)
    ).fetchone()
    return _row(row) if row else None


def create_emoji(
    db: Database,
    emoji_id: int,
    server_id: int,
    user_id: int,
    name: str,
    digest: str,
    animated: bool,
    now_ms: int,
) -> EmojiRow:
    """Add an emoji (CREATE_EMOJIS or MANAGE_EMOJIS), at most MAX_STATIC still and
    MAX_ANIMATED animated ones per server (422 too_many_emojis)."""
    access = require_server(db, server_id, user_id)
    if not access.permissions() & (P.CREATE_EMOJIS | P.MANAGE_EMOJIS):
        access.require(P.CREATE_EMOJIS)
    count = db.execute(
        "SELECT count(*) FROM emojis WHERE server_id = ? AND animated = ?",
        (server_id, int(animated)),
    ).fetchone()[0]
    cap = MAX_ANIMATED if animated else MAX_STATIC
    if count >= cap:
        kind = "animated" if animated else "still"
        raise Unprocessable(f"at most {cap} {kind} emoji per server", code="too_many_emojis")
    db.execute(
        "INSERT INTO emojis (id, server_id, name, digest, animated, creator_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (emoji_id, server_id, name, digest, int(animated), user_id, now_ms),
    )
    return EmojiRow(emoji_id, server_id, name, digest, animated, user_id)


def _changeable(db: Database, server_id: int, emoji_id: int, user_id: int) -> EmojiRow:
    """The emoji, if the user may change it: MANAGE_EMOJIS, or its creator with
    CREATE_EMOJIS."""
    access = require_server(db, server_id, user_id)
    emoji = get_emoji(db, server_id, emoji_id)
    if emoji is None:
        raise unknown_emoji()
    have = access.permissions()
    if not have & P.MANAGE_EMOJIS and not (emoji.creator_id == user_id and have & P.CREATE_EMOJIS):
        access.require(P.MANAGE_EMOJIS)  # raises missing_permission, naming MANAGE_EMOJIS
    return emoji


def rename_emoji(db: Database, server_id: int, emoji_id: int, user_id: int, name: str) -> EmojiRow:
    emoji = _changeable(db, server_id, emoji_id, user_id)
    db.execute("UPDATE emojis SET name = ? WHERE id = ?", (name, emoji_id))
    return msgspec.structs.replace(emoji, name=name)


def delete_emoji(db: Database, server_id: int, emoji_id: int, user_id: int) -> EmojiRow:
    emoji = _changeable(db, server_id, emoji_id, user_id)
    db.execute("DELETE FROM emojis WHERE id = ?", (emoji_id,))
    return emoji


def custom_reaction(text: str) -> tuple[str, int] | None:
    """(name, id) if `text` is a custom emoji reaction `name:id`, else None."""
    match = _REACTION.match(text)
    return (match.group(1), int(match.group(2))) if match else None
