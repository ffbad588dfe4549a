"""Attachments and upload quotas (sync queries, `db` first; run through the Store).

An attachment row is made when its upload is stored (message_id NULL) and claimed by the
message that names it, in that message's transaction. The blob a row names is in the
BlobStore (relay.media); `referenced` tells the prune which blobs are still wanted.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec

from relay.errors import BadRequest
from relay.permissions import P
from relay.storage.access import require_server
from relay.storage.servers import ServerRow, get_server

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlite_utils import Database

DAY_MS = 86_400_000
UNCLAIMED_MS = 3_600_000  # an upload no message claimed within this is deleted
MAX_FILES = 10  # files per message


class AttachmentRow(msgspec.Struct, frozen=True):
    id: int
    filename: str
    size: int
    content_type: str
    width: int | None
    height: int | None
    has_preview: bool


class FileRow(msgspec.Struct, frozen=True):
    """What serving one attachment needs."""

    id: int
    channel_id: int
    message_id: int | None
    filename: str
    digest: str
    preview_digest: str | None
    thumb_digest: str | None
    content_type: str
    created_at: int


class NewUpload(msgspec.Struct, frozen=True, kw_only=True):
    channel_id: int
    uploader_id: int
    filename: str
    digest: str
    size: int
    content_type: str
    width: int | None = None
    height: int | None = None
    preview_digest: str | None = None
    thumb_digest: str | None = None


def add_upload(db: Database, attachment_id: int, new: NewUpload, now_ms: int) -> None:
    """Store an upload (not yet any message's) and count its bytes in the day's quota."""
    db.execute(
        "INSERT INTO attachments (id, channel_id, uploader_id, filename, digest, size,"
        " content_type, width, height, preview_digest, thumb_digest, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            attachment_id,
            new.channel_id,
            new.uploader_id,
            new.filename,
            new.digest,
            new.size,
            new.content_type,
            new.width,
            new.height,
            new.preview_digest,
            new.thumb_digest,
            now_ms,
        ),
    )
    db.execute(
        "INSERT INTO upload_usage (user_id, day, bytes) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id, day) DO UPDATE SET bytes = bytes + excluded.bytes",
        (new.uploader_id, now_ms // DAY_MS, new.size),
    )


def used_today(db: Database, user_id: int, now_ms: int) -> int:
    row = db.execute(
        "SELECT bytes FROM upload_usage WHERE user_id = ? AND day = ?", (user_id, now_ms // DAY_MS)
    ).fetchone()
    return int(row[0]) if row else 0


def claim(
    db: Database,
    message_id: int,
    channel_id: int,
    author_id: int,
    upload_ids: Sequence[int],
    now_ms: int,
) -> list[AttachmentRow]:
    """Make these uploads the message's files, in the order given. Each must be the author's,
    for this channel, unclaimed and not expired; else BadRequest("invalid_field")."""
    for position, upload_id in enumerate(upload_ids):
        claimed = db.execute(
            "UPDATE attachments SET message_id = ?, position = ? WHERE id = ? AND channel_id = ?"
            " AND uploader_id = ? AND message_id IS NULL AND created_at > ?",
            (message_id, position, upload_id, channel_id, author_id, now_ms - UNCLAIMED_MS),
        ).rowcount
        if claimed != 1:
            reason = f"upload {upload_id} is not an unclaimed upload of yours to this channel"
            raise BadRequest(reason, code="invalid_field", fields={"attachments": reason})
    return of_messages(db, [message_id]).get(message_id, [])


# The attachments of the messages whose ids are the JSON list ?, in each message's order.
OF_MESSAGES_SQL = (
    "SELECT message_id, id, filename, size, content_type, width, height,"
    " preview_digest IS NOT NULL FROM attachments"
    " WHERE message_id IN (SELECT value FROM json_each(?)) ORDER BY message_id, position"
)


def of_messages(db: Database, message_ids: Iterable[int]) -> dict[int, list[AttachmentRow]]:
    """Each message's attachments, in their order (messages without any are left out)."""
    return attachments_of(db.execute(OF_MESSAGES_SQL, (json.dumps(list(message_ids)),)))


def attachments_of(rows: Iterable[Any]) -> dict[int, list[AttachmentRow]]:
    """`of_messages` from the rows of OF_MESSAGES_SQL."""
    found: dict[int, list[AttachmentRow]] = {}
    for row in rows:
        attachment_id, filename, size, content_type, width, height, preview = row[1:]
        found.setdefault(row[0], []).append(
            AttachmentRow(attachment_id, filename, size, content_type, width, height, bool(preview))
        )
    return found


def file(db: Database, attachment_id: int) -> FileRow | None:
    row = db.execute(
        "SELECT id, channel_id, message_id, filename, digest, preview_digest, thumb_digest,"
        " content_type, created_at FROM attachments WHERE id = ?",
        (attachment_id,),
    ).fetchone()
    return FileRow(*row) if row else None


def digests_of_message(db: Database, message_id: int) -> list[str]:
    """The blobs a message's files use (read before deleting it, to release them after)."""
    return digests_of_messages(db, [message_id])


def digests_of_messages(db: Database, message_ids: Sequence[int]) -> list[str]:
    out: list[str] = []
    for digest, preview, thumb in db.execute(
        "SELECT digest, preview_digest, thumb_digest FROM attachments"
        " WHERE message_id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(message_ids)),),
    ):
        out += [d for d in (digest, preview, thumb) if d is not None]
    return out


def prune_unclaimed(db: Database, now_ms: int) -> int:
    """Delete uploads no message claimed within UNCLAIMED_MS (their blobs become orphans)."""
    return db.execute(
        "DELETE FROM attachments WHERE message_id IS NULL AND created_at <= ?",
        (now_ms - UNCLAIMED_MS,),
    ).rowcount


_REFERENCES = (
    "SELECT 1 FROM attachments WHERE digest = ?1",
    "SELECT 1 FROM attachments WHERE preview_digest = ?1",
    "SELECT 1 FROM attachments WHERE thumb_digest = ?1",
    "SELECT 1 FROM users WHERE avatar = ?1",
    "SELECT 1 FROM servers WHERE icon = ?1",
    "SELECT 1 FROM emojis WHERE digest = ?1",
    "SELECT 1 FROM images WHERE digest = ?1",
    "SELECT 1 FROM message_images WHERE digest = ?1",
    "SELECT 1 FROM channels WHERE icon = ?1",
)


def unreferenced(db: Database, digests: Sequence[str]) -> list[str]:
    """Those of `digests` that no row names any more (blobs safe to delete)."""
    out = []
    for digest in digests:
        if not any(db.execute(sql, (digest,)).fetchone() for sql in _REFERENCES):
            out.append(digest)
    return out


# -- avatars, icons and stored images -------------------------------------------------------------


def set_avatar(db: Database, user_id: int, digest: str | None) -> str | None:
    """Set (None: remove) the user's avatar; the digest it had before."""
    before = avatar_of(db, user_id)
    db.execute("UPDATE users SET avatar = ? WHERE id = ?", (digest, user_id))
    return before


def set_icon(db: Database, server_id: int, digest: str | None) -> str | None:
    """Set (None: remove) the server's icon (the caller checked MANAGE_SERVER in the same
    transaction); the digest it had before."""
    before = icon_of(db, server_id)
    db.execute("UPDATE servers SET icon = ? WHERE id = ?", (digest, server_id))
    return before


def set_server_icon(
    db: Database, server_id: int, user_id: int, digest: str | None
) -> tuple[ServerRow, str | None]:
    """Set (None: remove) a server's icon, if `user_id` has MANAGE_SERVER there (else 404
    unknown_server or 403); the server, and the digest it had before."""
    require_server(db, server_id, user_id, P.MANAGE_SERVER)
    before = set_icon(db, server_id, digest)
    server = get_server(db, server_id)
    assert server is not None
    return server, before


def avatar_of(db: Database, user_id: int) -> str | None:
    row = db.execute("SELECT avatar FROM users WHERE id = ?", (user_id,)).fetchone()
    return row[0] if row else None


def icon_of(db: Database, server_id: int) -> str | None:
    row = db.execute("SELECT icon FROM servers WHERE id = ?", (server_id,)).fetchone()
    return row[0] if row else None


def group_icon_of(db: Database, channel_id: int) -> str | None:
    row = db.execute(
        "SELECT icon FROM channels WHERE id = ? AND type = 'group_dm'", (channel_id,)
    ).fetchone()
    return row[0] if row else None


def add_image(db: Database, digest: str, width: int, height: int, now_ms: int) -> None:
    db.execute(
        "INSERT INTO images (digest, width, height, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (digest) DO NOTHING",
        (digest, width, height, now_ms),
    )


def has_image(db: Database, digest: str) -> bool:
    return db.execute("SELECT 1 FROM images WHERE digest = ?", (digest,)).fetchone() is not None


def remove_image(db: Database, digest: str) -> bool:
    """Forget a stored image unless a message still shows it; whether it went."""
    return (
        db.execute(
            "DELETE FROM images WHERE digest = ?1"
            " AND NOT EXISTS (SELECT 1 FROM message_images WHERE digest = ?1)",
            (digest,),
        ).rowcount
        == 1
    )


def sync_message_images(db: Database, message_id: int, candidates: Sequence[str]) -> list[str]:
    """Record which stored images the message shows now: those of `candidates` (and of what
    it showed before) named by its embeds or its webhook avatar URL. Returns the digests it
    does not show (dropped, or candidates it never used, or all if it is gone): the caller
    releases them (relay.chat.images.release_images)."""
    row = db.execute(
        "SELECT coalesce(m.embeds, '') || ' ' || coalesce(w.avatar_url, '') FROM messages m"
        " LEFT JOIN webhook_messages w ON w.message_id = m.id WHERE m.id = ?",
        (message_id,),
    ).fetchone()
    if row is None:
        return list(dict.fromkeys(candidates))
    shown = row[0]
    # A digest is 64 hex digits: appearing in the embeds' text means an image URL names it.
    dropped = [
        r[0]
        for r in db.execute(
            "DELETE FROM message_images WHERE message_id = ? AND instr(?, digest) = 0"
            " RETURNING digest",
            (message_id, shown),
        )
    ]
    for digest in dict.fromkeys(candidates):
        if digest in shown:
            db.execute(
                "INSERT INTO message_images (message_id, digest) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (message_id, digest),
            )
        else:
            dropped.append(digest)
    return dropped


def images_of_messages(db: Database, message_ids: Sequence[int]) -> list[str]:
    """The stored images these messages show (read before deleting them, to release after)."""
    return [
        r[0]
        for r in db.execute(
            "SELECT DISTINCT digest FROM message_images"
            " WHERE message_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(message_ids)),),
        )
    ]


def prune_images(db: Database, now_ms: int) -> int:
    """Forget stored images that no message has shown for UNCLAIMED_MS (their messages went
    with their channel or server, or a preview job stopped halfway); their blobs become
    orphans for the sweep."""
    return db.execute(
        "DELETE FROM images WHERE created_at <= ?"
        " AND NOT EXISTS (SELECT 1 FROM message_images m WHERE m.digest = images.digest)",
        (now_ms - UNCLAIMED_MS,),
    ).rowcount


def emoji_digest(db: Database, emoji_id: int) -> str | None:
    row = db.execute("SELECT digest FROM emojis WHERE id = ?", (emoji_id,)).fetchone()
    return row[0] if row else None
