"""Queries for Web Push: subscriptions (one login each), notification settings, and the
candidates a new message may notify (docs/push.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from relay.errors import NotFound, Unprocessable
from relay.storage.audience import visible_channel
from relay.storage.servers import is_member

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlite_utils import Database


class SubscriptionRow(msgspec.Struct, frozen=True):
    id: int
    endpoint: str
    p256dh: bytes
    auth: bytes


class Preference(msgspec.Struct, frozen=True):
    """One server's or channel's setting: level all | mentions | none (None: inherit) and a
    mute until Unix ms (None: not muted)."""

    level: str | None = None
    muted_until: int | None = None


class NotificationSettings(msgspec.Struct, frozen=True):
    hide_content: bool
    servers: dict[int, Preference]
    channels: dict[int, Preference]


class Candidate(msgspec.Struct, frozen=True):
    """A user who may be pushed about a message: their settings for its server and channel."""

    user_id: int
    server: Preference | None
    channel: Preference | None
    hide_content: bool
    roles: frozenset[int] = frozenset()


def add_subscription(
    db: Database,
    user_id: int,
    auth_session_id: int,
    endpoint: str,
    p256dh: bytes,
    auth: bytes,
    now_ms: int,
    per_session: int,
) -> None:
    """Store a subscription for the login (the same endpoint again replaces its keys and
    owner: a browser re-subscribing, or another account in the same browser).

    Raises:
        Unprocessable("too_many_push_subscriptions"): the login has `per_session` already.
    """
    with db.atomic():
        count = db.execute(
            "SELECT COUNT(*) FROM push_subscriptions WHERE auth_session_id = ? AND endpoint != ?",
            (auth_session_id, endpoint),
        ).fetchone()[0]
        if count >= per_session:
            raise Unprocessable(
                f"at most {per_session} push subscriptions per login",
                code="too_many_push_subscriptions",
            )
        db.execute(
            "INSERT INTO push_subscriptions"
            " (endpoint, user_id, auth_session_id, p256dh, auth, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (endpoint) DO UPDATE SET"
            " user_id = excluded.user_id, auth_session_id = excluded.auth_session_id,"
            " p256dh = excluded.p256dh, auth = excluded.auth, created_at = excluded.created_at",
            (endpoint, user_id, auth_session_id, p256dh, auth, now_ms),
        )


def remove_subscription(db: Database, user_id: int, endpoint: str) -> None:
    """Raises NotFound("unknown_push_subscription") unless the user has that endpoint."""
    cursor = db.execute(
        "DELETE FROM push_subscriptions WHERE user_id = ? AND endpoint = ?", (user_id, endpoint)
    )
    if cursor.rowcount == 0:
        raise NotFound("no such push subscription", code="unknown_push_subscription")


def drop_subscription(db: Database, subscription_id: int) -> int:
    """Delete one subscription (its push service answered 404 or 410)."""
    sql = "DELETE FROM push_subscriptions WHERE id = ?"
    return int(db.execute(sql, (subscription_id,)).rowcount)


def drop_login_subscriptions(db: Database, auth_session_id: int) -> int:
    """Delete a revoked login's subscriptions."""
    sql = "DELETE FROM push_subscriptions WHERE auth_session_id = ?"
    return int(db.execute(sql, (auth_session_id,)).rowcount)


_LIVE = (
    " JOIN auth_sessions a ON a.id = s.auth_session_id"
    " AND a.revoked_at IS NULL AND a.expires_at > ?"
)


def message_content(db: Database, message_id: int) -> str | None:
    """A message's text as it is now (edited or not); None if it was deleted."""
    row = db.execute("SELECT content FROM messages WHERE id = ?", (message_id,)).fetchone()
    return None if row is None else str(row[0])


def subscriber_ids(db: Database) -> list[int]:
    """Every user with a stored subscription."""
    rows = db.execute("SELECT DISTINCT user_id FROM push_subscriptions").fetchall()
    return [r[0] for r in rows]


def subscriptions_of(db: Database, user_id: int, now_ms: int) -> list[SubscriptionRow]:
    """The user's subscriptions whose login is still valid."""
    rows = db.execute(
        "SELECT s.id, s.endpoint, s.p256dh, s.auth FROM push_subscriptions s"
        + _LIVE
        + " WHERE s.user_id = ? ORDER BY s.id",
        (now_ms, user_id),
    ).fetchall()
    return [SubscriptionRow(*r) for r in rows]


def candidates(
    db: Database, channel_id: int, author_id: int, now_ms: int, with_roles: bool
) -> list[Candidate]:
    """Everyone but the author who could be pushed about a message in the channel: a DM's
    recipients or the server's members, who have a subscription on a valid login, with their
    settings (and, if `with_roles`, the roles they hold, for role mentions). Who may see the
    channel is checked later, at send time."""
    row = db.execute("SELECT server_id FROM channels WHERE id = ?", (channel_id,)).fetchone()
    if row is None:
        return []
    server_id = row[0]
    if server_id is None:
        audience = "SELECT user_id FROM dm_recipients WHERE channel_id = ?"
        audience_arg = channel_id
    else:
        audience = "SELECT user_id FROM members WHERE server_id = ?"
        audience_arg = server_id
    users = db.execute(
        "SELECT DISTINCT s.user_id FROM push_subscriptions s"
        + _LIVE
        + f" WHERE s.user_id != ? AND s.user_id IN ({audience}) ORDER BY s.user_id",
        (now_ms, author_id, audience_arg),
    ).fetchall()
    found = []
    for (user_id,) in users:
        server = None
        if server_id is not None:
            server = _preference(
                db, "server_notification_settings", "server_id", user_id, server_id
            )
        channel = _preference(
            db, "channel_notification_settings", "channel_id", user_id, channel_id
        )
        roles: frozenset[int] = frozenset()
        if with_roles and server_id is not None:
            roles = frozenset(
                r[0]
                for r in db.execute(
                    "SELECT role_id FROM member_roles WHERE server_id = ? AND user_id = ?",
                    (server_id, user_id),
                )
            )
        found.append(Candidate(user_id, server, channel, _hide_content(db, user_id), roles))
    return found


def _preference(
    db: Database, table: str, column: str, user_id: int, target_id: int
) -> Preference | None:
    row = db.execute(
        f"SELECT level, muted_until FROM {table} WHERE user_id = ? AND {column} = ?",
        (user_id, target_id),
    ).fetchone()
    return None if row is None else Preference(row[0], row[1])


def _hide_content(db: Database, user_id: int) -> bool:
    sql = "SELECT hide_content FROM notification_preferences WHERE user_id = ?"
    row = db.execute(sql, (user_id,)).fetchone()
    return bool(row and row[0])


def notification_settings(db: Database, user_id: int) -> NotificationSettings:
    servers = {
        r[0]: Preference(r[1], r[2])
        for r in db.execute(
            "SELECT server_id, level, muted_until FROM server_notification_settings"
            " WHERE user_id = ? ORDER BY server_id",
            (user_id,),
        )
    }
    channels = {
        r[0]: Preference(r[1], r[2])
        for r in db.execute(
            "SELECT channel_id, level, muted_until FROM channel_notification_settings"
            " WHERE user_id = ? ORDER BY channel_id",
            (user_id,),
        )
    }
    return NotificationSettings(_hide_content(db, user_id), servers, channels)


def update_notification_settings(
    db: Database,
    user_id: int,
    hide_content: bool | None,
    servers: Sequence[tuple[int, Preference]],
    channels: Sequence[tuple[int, Preference]],
    max_entries: int,
) -> NotificationSettings:
    """Apply a change: a Preference with neither field set removes that entry (inherit).
    At most `max_entries` servers and channels together.

    Raises:
        NotFound("unknown_server" | "unknown_channel"): not the user's server, or a channel
            they cannot see.
        Unprocessable("too_many_notification_settings"): more than `max_entries` afterwards.
    """
    with db.atomic():
        for server_id, _ in servers:
            if not is_member(db, server_id, user_id):
                raise NotFound("no such server", code="unknown_server")
        for channel_id, _ in channels:
            if visible_channel(db, channel_id, user_id) is None:
                raise NotFound("no such channel", code="unknown_channel")
        if hide_content is not None:
            db.execute(
                "INSERT INTO notification_preferences (user_id, hide_content) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET hide_content = excluded.hide_content",
                (user_id, int(hide_content)),
            )
        for table, column, entries in (
            ("server_notification_settings", "server_id", servers),
            ("channel_notification_settings", "channel_id", channels),
        ):
            for target_id, pref in entries:
                if pref.level is None and pref.muted_until is None:
                    db.execute(
                        f"DELETE FROM {table} WHERE user_id = ? AND {column} = ?",
                        (user_id, target_id),
                    )
                else:
                    db.execute(
                        f"INSERT INTO {table} (user_id, {column}, level, muted_until)"
                        f" VALUES (?, ?, ?, ?) ON CONFLICT (user_id, {column}) DO UPDATE SET"
                        " level = excluded.level, muted_until = excluded.muted_until",
                        (user_id, target_id, pref.level, pref.muted_until),
                    )
        total = db.execute(
            "SELECT (SELECT COUNT(*) FROM server_notification_settings WHERE user_id = ?)"
            " + (SELECT COUNT(*) FROM channel_notification_settings WHERE user_id = ?)",
            (user_id, user_id),
        ).fetchone()[0]
        if total > max_entries:
            raise Unprocessable(
                f"at most {max_entries} server and channel notification settings",
                code="too_many_notification_settings",
            )
    return notification_settings(db, user_id)
