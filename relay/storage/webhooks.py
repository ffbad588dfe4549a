"""Queries for incoming webhooks: creating, listing, changing and deleting them, and finding
one to execute.

A webhook posts to one text channel of a server. Its id is also the id of a bot user
(`webhook-<id>`, no password) that its messages are written by; that user stays when the
webhook goes, as the author of what it wrote. Its token is stored as SHA-256 only. Managing a
webhook takes MANAGE_WEBHOOKS in its channel (listing a server's: at the server level); one in
a channel the caller cannot see is 404 unknown_webhook, as a missing one is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from relay.errors import BadRequest, NotFound, Unprocessable
from relay.permissions import P
from relay.storage import audit
from relay.storage.access import require_server
from relay.storage.audience import VisibleChannel, visible_channel

if TYPE_CHECKING:
    from sqlite_utils import Database

TEXT = "text"


class WebhookRow(msgspec.Struct, frozen=True):
    id: int
    server_id: int
    channel_id: int
    name: str
    creator_id: int | None
    created_at: int

    def audited(self) -> dict[str, object]:
        return {"name": self.name, "channel_id": self.channel_id}


class WebhookSecret(msgspec.Struct, frozen=True):
    """A webhook and its token's hash: what executing it checks."""

    webhook: WebhookRow
    token_hash: bytes


def unknown_webhook() -> NotFound:
    return NotFound("unknown webhook", code="unknown_webhook")


_COLUMNS = "id, server_id, channel_id, name, creator_id, created_at"


def _rows(db: Database, where: str, params: tuple[object, ...]) -> list[WebhookRow]:
    rows = db.execute(f"SELECT {_COLUMNS} FROM webhooks {where}", params).fetchall()
    return [WebhookRow(*r) for r in rows]


def _managed_channel(db: Database, channel_id: int, user_id: int) -> VisibleChannel:
    """A server text channel the user sees and has MANAGE_WEBHOOKS in."""
    channel = visible_channel(db, channel_id, user_id)
    if channel is None or channel.server_id is None:
        raise NotFound("unknown channel", code="unknown_channel")
    channel.require(P.MANAGE_WEBHOOKS)
    if channel.type != TEXT:
        raise BadRequest("webhooks post to text channels only", code="not_a_text_channel")
    return channel


def _managed(db: Database, webhook_id: int, user_id: int) -> WebhookRow:
    found = _rows(db, "WHERE id = ?", (webhook_id,))
    if not found:
        raise unknown_webhook()
    webhook = found[0]
    channel = visible_channel(db, webhook.channel_id, user_id)
    if channel is None:
        raise unknown_webhook()
    channel.require(P.MANAGE_WEBHOOKS)
    return webhook


def create_webhook(
    db: Database,
    webhook_id: int,
    channel_id: int,
    user_id: int,
    name: str,
    token_hash: bytes,
    now_ms: int,
    max_per_channel: int,
    reason: str | None = None,
) -> WebhookRow:
    """A new webhook and its author user. Raises NotFound("unknown_channel"),
    Forbidden("missing_permission"), BadRequest("not_a_text_channel"),
    Unprocessable("too_many_webhooks")."""
    channel = _managed_channel(db, channel_id, user_id)
    assert channel.server_id is not None
    count = db.execute(
        "SELECT count(*) FROM webhooks WHERE channel_id = ?", (channel_id,)
    ).fetchone()[0]
    if count >= max_per_channel:
        raise Unprocessable(
            f"a channel has at most {max_per_channel} webhooks", code="too_many_webhooks"
        )
    db.execute(
        "INSERT INTO users (id, username, display_name, password_hash, created_at, updated_at,"
        " bot) VALUES (?, ?, ?, NULL, ?, ?, 1)",
        (webhook_id, f"webhook-{webhook_id}", name, now_ms, now_ms),
    )
    db.execute(
        f"INSERT INTO webhooks ({_COLUMNS}, token_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (webhook_id, channel.server_id, channel_id, name, user_id, now_ms, token_hash),
    )
    webhook = WebhookRow(webhook_id, channel.server_id, channel_id, name, user_id, now_ms)
    audit.record(
        db,
        channel.server_id,
        user_id,
        "webhook_create",
        webhook_id,
        audit.created(webhook.audited()),
        reason,
    )
    return webhook


def channel_webhooks(db: Database, channel_id: int, user_id: int) -> list[WebhookRow]:
    _managed_channel(db, channel_id, user_id)
    return _rows(db, "WHERE channel_id = ? ORDER BY id", (channel_id,))


def server_webhooks(db: Database, server_id: int, user_id: int) -> list[WebhookRow]:
    require_server(db, server_id, user_id, P.MANAGE_WEBHOOKS)
    return _rows(db, "WHERE server_id = ? ORDER BY id", (server_id,))


def get_webhook(db: Database, webhook_id: int, user_id: int) -> WebhookRow:
    return _managed(db, webhook_id, user_id)


def update_webhook(
    db: Database,
    webhook_id: int,
    user_id: int,
    now_ms: int,
    *,
    name: str | None = None,
    channel_id: int | None = None,
    reason: str | None = None,
) -> WebhookRow:
    """Rename a webhook or move it to another text channel of its server (MANAGE_WEBHOOKS in
    both). Raises NotFound("unknown_webhook" | "unknown_channel"), Forbidden, BadRequest."""
    webhook = _managed(db, webhook_id, user_id)
    updated = webhook
    if channel_id is not None and channel_id != webhook.channel_id:
        target = _managed_channel(db, channel_id, user_id)
        if target.server_id != webhook.server_id:
            raise NotFound("unknown channel", code="unknown_channel")
        updated = msgspec.structs.replace(updated, channel_id=channel_id)
    if name is not None:
        updated = msgspec.structs.replace(updated, name=name)
    if updated == webhook:
        return webhook
    db.execute(
        "UPDATE webhooks SET name = ?, channel_id = ? WHERE id = ?",
        (updated.name, updated.channel_id, webhook_id),
    )
    db.execute(
        "UPDATE users SET display_name = ?, updated_at = ? WHERE id = ?",
        (updated.name, now_ms, webhook_id),
    )
    changes = audit.diff(webhook.audited(), updated.audited())
    audit.record(db, webhook.server_id, user_id, "webhook_update", webhook_id, changes, reason)
    return updated


def delete_webhook(
    db: Database, webhook_id: int, user_id: int, reason: str | None = None
) -> WebhookRow:
    webhook = _managed(db, webhook_id, user_id)
    db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
    changes = audit.removed(webhook.audited())
    audit.record(db, webhook.server_id, user_id, "webhook_delete", webhook_id, changes, reason)
    return webhook


def reset_webhook_token(
    db: Database, webhook_id: int, user_id: int, token_hash: bytes
) -> WebhookRow:
    webhook = _managed(db, webhook_id, user_id)
    db.execute("UPDATE webhooks SET token_hash = ? WHERE id = ?", (token_hash, webhook_id))
    return webhook


def webhook_secret(db: Database, webhook_id: int) -> WebhookSecret | None:
    """A webhook with its token's hash (no permission check: the token is the check)."""
    row = db.execute(
        f"SELECT {_COLUMNS}, token_hash FROM webhooks WHERE id = ?", (webhook_id,)
    ).fetchone()
    if row is None:
        return None
    return WebhookSecret(WebhookRow(*row[:6]), row[6])
