"""Queries for accounts: users, their Ed25519 keys, login sessions, refresh tokens, challenges.

Plain sync functions over a sqlite-utils Database, `db` first; the Store runs them in its writer
or reader threads. Write functions that must record something even when the request fails
(a reused refresh token revokes its session) return a result instead of raising, because an
exception rolls the request's savepoint back.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import msgspec

from relay.errors import Conflict, Forbidden, Unprocessable

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlite_utils import Database


class UserRow(msgspec.Struct, frozen=True):
    id: int
    username: str
    display_name: str | None
    password_hash: str | None
    created_at: int
    updated_at: int
    disabled_at: int | None = None  # set by an operator (`relay user disable`): no logins
    bot: int = 0  # 1: a bot or webhook user (relay.storage.applications): no password, no login


class UserListing(msgspec.Struct, frozen=True):
    """A user as the admin CLI lists them: the account and how many live logins it has."""

    user: UserRow
    logins: int


class KeyRow(msgspec.Struct, frozen=True):
    id: int
    user_id: int
    public_key: bytes
    created_at: int


class SessionRow(msgspec.Struct, frozen=True):
    id: int
    user_id: int
    created_at: int
    last_used_at: int
    expires_at: int
    revoked_at: int | None
    revoked_reason: str | None
    user_agent: str | None
    ip: str | None


def _one(db: Database, sql: str, params: tuple[Any, ...], row_type: type[Any]) -> Any:
    rows = list(db.query(sql, params))
    return msgspec.convert(rows[0], row_type) if rows else None


def _all(db: Database, sql: str, params: tuple[Any, ...], row_type: type[Any]) -> list[Any]:
    return msgspec.convert(list(db.query(sql, params)), list[row_type])  # type: ignore[valid-type]


# -- users -------------------------------------------------------------------------------------


def insert_user(
    db: Database,
    user_id: int,
    username: str,
    display_name: str | None,
    password_hash: str | None,
    public_key: bytes | None,
    key_id: int,
    now_ms: int,
) -> UserRow:
    """Raises Conflict("username_taken" | "key_taken")."""
    try:
        db.execute(
            "INSERT INTO users (id, username, display_name, password_hash, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (user_id, username, display_name, password_hash, now_ms, now_ms),
        )
    except sqlite3.IntegrityError:
        raise Conflict("that username is taken", code="username_taken") from None
    if public_key is not None:
        _insert_key(db, key_id, user_id, public_key, now_ms)
    return UserRow(user_id, username, display_name, password_hash, now_ms, now_ms)


def account_disabled() -> Forbidden:
    """The refusal of a disabled account's logins and refreshes."""
    return Forbidden("this account is disabled", code="account_disabled")


def get_user(db: Database, user_id: int) -> UserRow | None:
    row: UserRow | None = _one(db, "SELECT * FROM users WHERE id = ?", (user_id,), UserRow)
    return row


def get_user_by_name(db: Database, username: str) -> UserRow | None:
    row: UserRow | None = _one(
        db, "SELECT * FROM users WHERE username = ? COLLATE NOCASE", (username,), UserRow
    )
    return row


def update_user(
    db: Database,
    user_id: int,
    now_ms: int,
    *,
    display_name: str | None = None,
    clear_display_name: bool = False,
    password_hash: str | None = None,
) -> UserRow:
    changes: dict[str, Any] = {"updated_at": now_ms}
    if display_name is not None or clear_display_name:
        changes["display_name"] = display_name
    if password_hash is not None:
        changes["password_hash"] = password_hash
    assignments = ", ".join(f"{column} = ?" for column in changes)
    db.execute(f"UPDATE users SET {assignments} WHERE id = ?", (*changes.values(), user_id))
    user = get_user(db, user_id)
    assert user is not None
    return user


def _is_disabled(db: Database, user_id: int) -> bool:
    row = db.execute("SELECT disabled_at FROM users WHERE id = ?", (user_id,)).fetchone()
    return row is not None and row[0] is not None


def list_users(db: Database, after: int, limit: int, now_ms: int) -> list[UserListing]:
    """Users by id after `after`, at most `limit`, each with their live logins."""
    rows = db.execute(
        "SELECT u.id, u.username, u.display_name, u.password_hash, u.created_at, u.updated_at,"
        " u.disabled_at, (SELECT count(*) FROM auth_sessions s WHERE s.user_id = u.id"
        "  AND s.revoked_at IS NULL AND s.expires_at > ?)"
        " FROM users u WHERE u.id > ? ORDER BY u.id LIMIT ?",
        (now_ms, after, limit),
    ).fetchall()
    return [UserListing(UserRow(*row[:7]), row[7]) for row in rows]


def set_disabled(db: Database, user_id: int, disabled: bool, now_ms: int) -> list[int]:
    """Disable an account, revoking its live logins in the same transaction (their ids), or
    enable it again (no logins to revoke: []). Disabling twice keeps the first time."""
    if not disabled:
        db.execute("UPDATE users SET disabled_at = NULL WHERE id = ?", (user_id,))
        return []
    db.execute(
        "UPDATE users SET disabled_at = coalesce(disabled_at, ?) WHERE id = ?", (now_ms, user_id)
    )
    return revoke_user_sessions(db, user_id, now_ms, "account_disabled")


# -- keys --------------------------------------------------------------------------------------


def _insert_key(db: Database, key_id: int, user_id: int, public_key: bytes, now_ms: int) -> None:
    try:
        db.execute(
            "INSERT INTO user_keys (id, user_id, public_key, created_at) VALUES (?, ?, ?, ?)",
            (key_id, user_id, public_key, now_ms),
        )
    except sqlite3.IntegrityError:
        raise Conflict("that public key is already registered", code="key_taken") from None


def add_key(
    db: Database, key_id: int, user_id: int, public_key: bytes, now_ms: int, max_keys: int
) -> KeyRow:
    """Raises Conflict("key_taken") or Unprocessable("too_many_keys")."""
    count = db.execute("SELECT count(*) FROM user_keys WHERE user_id = ?", (user_id,)).fetchone()
    if count[0] >= max_keys:
        raise Unprocessable(f"an account holds at most {max_keys} keys", code="too_many_keys")
    _insert_key(db, key_id, user_id, public_key, now_ms)
    return KeyRow(key_id, user_id, public_key, now_ms)


def list_keys(db: Database, user_id: int) -> list[KeyRow]:
    sql = "SELECT * FROM user_keys WHERE user_id = ? ORDER BY id"
    return _all(db, sql, (user_id,), KeyRow)


# -- sessions and refresh tokens ---------------------------------------------------------------


def create_session(
    db: Database,
    session_id: int,
    user_id: int,
    refresh_hash: bytes,
    now_ms: int,
    expires_at_ms: int,
    user_agent: str | None,
    ip: str | None,
) -> SessionRow:
    """Raises Forbidden("account_disabled"): checked in the transaction that would start the
    login, so an account disabled while its password was being checked gets no session."""
    if _is_disabled(db, user_id):
        raise account_disabled()
    db.execute(
        "INSERT INTO auth_sessions (id, user_id, created_at, last_used_at, expires_at,"
        " user_agent, ip) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (session_id, user_id, now_ms, now_ms, expires_at_ms, user_agent, ip),
    )
    db.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES (?, ?, ?)",
        (refresh_hash, session_id, now_ms),
    )
    return SessionRow(
        session_id, user_id, now_ms, now_ms, expires_at_ms, None, None, user_agent, ip
    )


class Rotated(msgspec.Struct, frozen=True):
    """The outcome of presenting a refresh token: the session, and why it failed if it did."""

    session: SessionRow | None
    # "invalid_refresh_token" | "session_revoked" | "refresh_token_reused" | "account_disabled"
    error: str | None = None


def rotate_refresh_token(
    db: Database, old_hash: bytes, new_hash: bytes, now_ms: int, ttl_ms: int
) -> Rotated:
    """Spend `old_hash` and issue `new_hash` in the same session (family).

    A token that was already spent means it leaked (or a client raced itself): the whole family
    is revoked, so a thief holding any token of it is locked out too.
    """
    token = next(
        db.query(
            "SELECT session_id, used_at FROM refresh_tokens WHERE token_hash = ?", (old_hash,)
        ),
        None,
    )
    if token is None:
        return Rotated(None, "invalid_refresh_token")
    session = get_session(db, token["session_id"])
    if session is not None and _is_disabled(db, session.user_id):
        return Rotated(None, "account_disabled")
    if session is None or session.revoked_at is not None or session.expires_at <= now_ms:
        return Rotated(None, "session_revoked")
    if token["used_at"] is not None:
        revoke_session(db, session.id, now_ms, "refresh_token_reused")
        return Rotated(get_session(db, session.id), "refresh_token_reused")
    db.execute("UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?", (now_ms, old_hash))
    db.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES (?, ?, ?)",
        (new_hash, session.id, now_ms),
    )
    db.execute(
        "UPDATE auth_sessions SET last_used_at = ?, expires_at = ? WHERE id = ?",
        (now_ms, now_ms + ttl_ms, session.id),
    )
    return Rotated(get_session(db, session.id))


def get_session(db: Database, session_id: int) -> SessionRow | None:
    sql = "SELECT * FROM auth_sessions WHERE id = ?"
    row: SessionRow | None = _one(db, sql, (session_id,), SessionRow)
    return row


def list_sessions(db: Database, user_id: int, now_ms: int) -> list[SessionRow]:
    sql = (
        "SELECT * FROM auth_sessions WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?"
        " ORDER BY id"
    )
    return _all(db, sql, (user_id, now_ms), SessionRow)


def revoke_session(db: Database, session_id: int, now_ms: int, reason: str) -> bool:
    cursor = db.execute(
        "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = ?"
        " WHERE id = ? AND revoked_at IS NULL",
        (now_ms, reason, session_id),
    )
    return cursor.rowcount == 1


def revoke_user_sessions(
    db: Database, user_id: int, now_ms: int, reason: str, keep: int | None = None
) -> list[int]:
    rows = db.execute(
        "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = ?"
        " WHERE user_id = ? AND revoked_at IS NULL AND id IS NOT ? RETURNING id",
        (now_ms, reason, user_id, keep),
    ).fetchall()
    return [row[0] for row in rows]


def revoke_beyond(db: Database, user_id: int, now_ms: int, reason: str, keep: int) -> list[int]:
    """Revoke the user's live sessions beyond the `keep` most recently used; their ids."""
    rows = db.execute(
        "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = ? WHERE id IN"
        " (SELECT id FROM auth_sessions WHERE user_id = ? AND revoked_at IS NULL"
        "  AND expires_at > ? ORDER BY last_used_at DESC, id DESC LIMIT -1 OFFSET ?)"
        " RETURNING id",
        (now_ms, reason, user_id, now_ms, keep),
    ).fetchall()
    return [row[0] for row in rows]


def revoked_since(db: Database, since_ms: int) -> list[int]:
    """Sessions revoked recently enough that their access tokens may still be unexpired."""
    rows = db.execute("SELECT id FROM auth_sessions WHERE revoked_at >= ?", (since_ms,))
    return [row[0] for row in rows.fetchall()]


# -- key-login challenges ----------------------------------------------------------------------


def insert_challenge(
    db: Database, challenge: bytes, user_id: int, expires_at_ms: int, now_ms: int, keep: int
) -> None:
    """Store a challenge; a user keeps at most `keep` live ones (the oldest go first)."""
    db.execute(
        "DELETE FROM auth_challenges WHERE user_id = ? AND (expires_at <= ? OR challenge IN"
        " (SELECT challenge FROM auth_challenges WHERE user_id = ?"
        "  ORDER BY expires_at DESC LIMIT -1 OFFSET ?))",
        (user_id, now_ms, user_id, keep - 1),
    )
    db.execute(
        "INSERT INTO auth_challenges (challenge, user_id, expires_at) VALUES (?, ?, ?)",
        (challenge, user_id, expires_at_ms),
    )


def consume_challenge(db: Database, challenge: bytes, user_id: int, now_ms: int) -> bool:
    """Spend a challenge: True once if it is the user's and unexpired, False ever after."""
    row = db.execute(
        "DELETE FROM auth_challenges WHERE challenge = ? AND user_id = ? RETURNING expires_at",
        (challenge, user_id),
    ).fetchone()
    return row is not None and row[0] > now_ms


# -- housekeeping ------------------------------------------------------------------------------


def secret(db: Database, name: str, make: Callable[[], bytes]) -> bytes:
    """A server secret, created on first use and kept in the database (so backups carry it)."""
    db.execute(
        "INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        (name, make()),
    )
    row = db.execute("SELECT value FROM server_secrets WHERE name = ?", (name,)).fetchone()
    return bytes(row[0])


def prune(db: Database, now_ms: int, keep_revoked_ms: int) -> int:
    """Delete expired challenges and sessions that ended more than `keep_revoked_ms` ago."""
    deleted = db.execute("DELETE FROM auth_challenges WHERE expires_at <= ?", (now_ms,)).rowcount
    deleted += db.execute(
        "DELETE FROM auth_sessions WHERE expires_at <= ? OR revoked_at <= ?",
        (now_ms - keep_revoked_ms, now_ms - keep_revoked_ms),
    ).rowcount
    return int(deleted)
