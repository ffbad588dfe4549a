"""Account queries against a real, migrated database file."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from relay.errors import Conflict, Forbidden, Unprocessable
from relay.storage import users
from relay.storage.sqlite.db import open_store

if TYPE_CHECKING:
    from pathlib import Path

    from sqlite_utils import Database

NOW = 1_800_000_000_000
MINUTE = 60_000
DAY = 24 * 60 * MINUTE


@pytest.fixture
def db(database: Database) -> Database:
    return database


def key(n: int) -> bytes:
    return bytes([n]) * 32


def token(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def add_user(db: Database, user_id: int, username: str, public_key: bytes | None = None) -> None:
    users.insert_user(db, user_id, username, None, None, public_key, user_id * 100, NOW)


def add_session(
    db: Database, session_id: int, user_id: int, refresh: bytes, expires_at: int = NOW + DAY
) -> None:
    users.create_session(db, session_id, user_id, refresh, NOW, expires_at, "test", "127.0.0.1")


def count(db: Database, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# -- users and keys ------------------------------------------------------------------------------


def test_usernames_are_unique_ignoring_case(db: Database) -> None:
    add_user(db, 1, "Alice")

    with pytest.raises(Conflict) as taken:
        add_user(db, 2, "aLICE")

    assert taken.value.code == "username_taken"
    found = users.get_user_by_name(db, "ALICE")
    assert found is not None
    assert (found.id, found.username) == (1, "Alice")  # stored as registered
    assert users.get_user(db, 2) is None


def test_a_public_key_belongs_to_one_account(db: Database) -> None:
    add_user(db, 1, "alice", key(1))
    add_user(db, 2, "bob")

    with pytest.raises(Conflict) as at_signup:
        add_user(db, 3, "carol", key(1))
    with pytest.raises(Conflict) as added_later:
        users.add_key(db, 201, 2, key(1), NOW, max_keys=5)

    assert at_signup.value.code == added_later.value.code == "key_taken"
    assert [k.public_key for k in users.list_keys(db, 1)] == [key(1)]
    assert users.list_keys(db, 2) == []


async def test_signup_with_a_taken_key_creates_no_user(tmp_path: Path) -> None:
    """Run as the server runs it, in a Store write: the savepoint drops the half-made user."""
    async with open_store(tmp_path / "relay.db", inline=True) as store:
        await store.write(add_user, 1, "alice", key(1))
        with pytest.raises(Conflict, match="public key"):
            await store.write(add_user, 2, "bob", key(1))
        assert await store.read(users.get_user_by_name, "bob") is None


def test_an_account_holds_at_most_max_keys(db: Database) -> None:
    add_user(db, 1, "alice", key(1))  # key id 100
    users.add_key(db, 102, 1, key(2), NOW, max_keys=3)
    users.add_key(db, 103, 1, key(3), NOW, max_keys=3)

    with pytest.raises(Unprocessable) as too_many:
        users.add_key(db, 104, 1, key(4), NOW, max_keys=3)

    assert too_many.value.code == "too_many_keys"
    assert [k.public_key for k in users.list_keys(db, 1)] == [key(1), key(2), key(3)]


# -- refresh tokens ------------------------------------------------------------------------------


def test_rotation_spends_the_token_and_extends_the_session(db: Database) -> None:
    add_user(db, 1, "alice")
    add_session(db, 10, 1, token(1), expires_at=NOW + MINUTE)

    first = users.rotate_refresh_token(db, token(1), token(2), NOW + 1, ttl_ms=DAY)
    second = users.rotate_refresh_token(db, token(2), token(3), NOW + 2, ttl_ms=DAY)

    assert first.error is None
    assert second.error is None
    assert second.session is not None
    assert second.session.id == 10
    assert (second.session.last_used_at, second.session.expires_at) == (NOW + 2, NOW + 2 + DAY)


def test_reusing_a_spent_token_revokes_its_whole_session(db: Database) -> None:
    add_user(db, 1, "alice")
    add_session(db, 10, 1, token(1))
    add_session(db, 11, 1, token(100))  # another device: not part of the family
    users.rotate_refresh_token(db, token(1), token(2), NOW + 1, ttl_ms=DAY)

    reused = users.rotate_refresh_token(db, token(1), token(9), NOW + 2, ttl_ms=DAY)

    assert reused.error == "refresh_token_reused"
    assert reused.session is not None
    assert (reused.session.revoked_at, reused.session.revoked_reason) == (
        NOW + 2,
        "refresh_token_reused",
    )
    # The thief's token and the legitimate newer one are both dead now; nothing was issued.
    assert users.rotate_refresh_token(db, token(9), token(5), NOW + 3, DAY).error == (
        "invalid_refresh_token"
    )
    assert users.rotate_refresh_token(db, token(2), token(3), NOW + 3, DAY).error == (
        "session_revoked"
    )
    assert [s.id for s in users.list_sessions(db, 1, NOW + 3)] == [11]


def test_an_unknown_token_is_invalid(db: Database) -> None:
    add_user(db, 1, "alice")
    add_session(db, 10, 1, token(1))

    assert users.rotate_refresh_token(db, token(7), token(8), NOW, DAY) == users.Rotated(
        None, "invalid_refresh_token"
    )


@pytest.mark.parametrize("ended", ["revoked", "expired"])
def test_a_token_of_an_ended_session_is_refused(db: Database, ended: str) -> None:
    add_user(db, 1, "alice")
    add_session(db, 10, 1, token(1), expires_at=NOW + MINUTE)
    at = NOW + 1
    if ended == "revoked":
        assert users.revoke_session(db, 10, NOW, "logout")
    else:
        at = NOW + MINUTE  # expires_at itself is already too late

    assert users.rotate_refresh_token(db, token(1), token(2), at, DAY) == users.Rotated(
        None, "session_revoked"
    )
    assert users.rotate_refresh_token(db, token(2), token(3), at, DAY).error == (
        "invalid_refresh_token"  # the refused call issued nothing
    )


# -- sessions ------------------------------------------------------------------------------------


def test_revoke_user_sessions_keeps_the_given_one(db: Database) -> None:
    add_user(db, 1, "alice")
    add_user(db, 2, "bob")
    for session_id in (10, 11, 12):
        add_session(db, session_id, 1, token(session_id))
    add_session(db, 20, 2, token(20))
    users.revoke_session(db, 12, NOW, "logout")

    revoked = users.revoke_user_sessions(db, 1, NOW + 1, "password_changed", keep=11)

    assert revoked == [10]  # 12 was already revoked, 11 is kept
    assert [s.id for s in users.list_sessions(db, 1, NOW + 1)] == [11]
    assert [s.id for s in users.list_sessions(db, 2, NOW + 1)] == [20]
    session = users.get_session(db, 10)
    assert session is not None
    assert (session.revoked_at, session.revoked_reason) == (NOW + 1, "password_changed")
    assert users.revoked_since(db, NOW + 1) == [10]

    assert users.revoke_user_sessions(db, 1, NOW + 2, "everything") == [11]


def test_disabling_revokes_the_logins_and_refuses_new_ones_and_refreshes(db: Database) -> None:
    add_user(db, 1, "alice")
    add_user(db, 2, "bob")
    add_session(db, 10, 1, token(1))
    add_session(db, 11, 1, token(2))
    add_session(db, 20, 2, token(20))

    assert users.set_disabled(db, 1, True, NOW + 1) == [10, 11]

    assert users.list_sessions(db, 1, NOW + 1) == []
    assert [s.id for s in users.list_sessions(db, 2, NOW + 1)] == [20]
    assert users.revoked_since(db, NOW + 1) == [10, 11]
    refused = users.rotate_refresh_token(db, token(1), token(3), NOW + 2, DAY)
    assert refused == users.Rotated(None, "account_disabled")
    with pytest.raises(Forbidden) as raised:
        add_session(db, 12, 1, token(4))
    assert raised.value.code == "account_disabled"
    # Disabling again keeps the first time; listing shows it, and no live logins.
    assert users.set_disabled(db, 1, True, NOW + 5) == []
    listed = users.list_users(db, 0, 10, NOW + 5)
    assert [(u.user.username, u.user.disabled_at, u.logins) for u in listed] == [
        ("alice", NOW + 1, 0),
        ("bob", None, 1),
    ]
    assert [u.user.username for u in users.list_users(db, 1, 10, NOW + 5)] == ["bob"]


def test_an_enabled_account_logs_in_again_but_its_old_logins_stay_ended(db: Database) -> None:
    add_user(db, 1, "alice")
    add_session(db, 10, 1, token(1))
    users.set_disabled(db, 1, True, NOW)

    assert users.set_disabled(db, 1, False, NOW + 1) == []

    user = users.get_user(db, 1)
    assert user is not None
    assert user.disabled_at is None
    assert users.rotate_refresh_token(db, token(1), token(2), NOW + 2, DAY).error == (
        "session_revoked"
    )
    add_session(db, 11, 1, token(3))
    assert [s.id for s in users.list_sessions(db, 1, NOW + 2)] == [11]


# -- challenges ----------------------------------------------------------------------------------


def test_a_challenge_is_spent_once(db: Database) -> None:
    add_user(db, 1, "alice")
    users.insert_challenge(db, b"c1", 1, NOW + MINUTE, NOW, keep=5)

    assert users.consume_challenge(db, b"c1", 1, NOW)
    assert not users.consume_challenge(db, b"c1", 1, NOW)


def test_a_challenge_belongs_to_its_user(db: Database) -> None:
    add_user(db, 1, "alice")
    add_user(db, 2, "mallory")
    users.insert_challenge(db, b"c1", 1, NOW + MINUTE, NOW, keep=5)

    assert not users.consume_challenge(db, b"c1", 2, NOW)
    assert users.consume_challenge(db, b"c1", 1, NOW)  # mallory's attempt did not burn it


def test_an_expired_challenge_is_refused_and_removed(db: Database) -> None:
    add_user(db, 1, "alice")
    users.insert_challenge(db, b"c1", 1, NOW + MINUTE, NOW, keep=5)

    assert not users.consume_challenge(db, b"c1", 1, NOW + MINUTE)
    assert count(db, "auth_challenges") == 0


def test_a_user_keeps_at_most_keep_live_challenges(db: Database) -> None:
    add_user(db, 1, "alice")
    add_user(db, 2, "bob")
    users.insert_challenge(db, b"bob", 2, NOW + MINUTE, NOW, keep=3)
    for i in range(6):
        users.insert_challenge(db, b"c%d" % i, 1, NOW + MINUTE + i, NOW + i, keep=3)

    live = [i for i in range(6) if users.consume_challenge(db, b"c%d" % i, 1, NOW + 10)]
    assert live == [3, 4, 5]  # the newest three
    assert users.consume_challenge(db, b"bob", 2, NOW + 10)  # other users are not capped


def test_inserting_a_challenge_drops_the_users_expired_ones(db: Database) -> None:
    add_user(db, 1, "alice")
    users.insert_challenge(db, b"old", 1, NOW + 1, NOW, keep=5)
    users.insert_challenge(db, b"new", 1, NOW + 2 * MINUTE, NOW + MINUTE, keep=5)

    assert [row[0] for row in db.execute("SELECT challenge FROM auth_challenges")] == [b"new"]


# -- housekeeping --------------------------------------------------------------------------------


def test_prune_deletes_expired_challenges_and_long_ended_sessions_only(db: Database) -> None:
    keep = 7 * DAY
    now = NOW + 30 * DAY
    add_user(db, 1, "alice")
    users.insert_challenge(db, b"expired", 1, now, NOW, keep=5)
    users.insert_challenge(db, b"live", 1, now + 1, NOW, keep=5)
    add_session(db, 10, 1, token(10), expires_at=now + DAY)  # live
    add_session(db, 11, 1, token(11), expires_at=now - keep + 1)  # expired recently
    add_session(db, 12, 1, token(12), expires_at=now - keep)  # expired long ago
    add_session(db, 13, 1, token(13), expires_at=now + DAY)
    users.revoke_session(db, 13, now - keep + 1, "logout")  # revoked recently
    add_session(db, 14, 1, token(14), expires_at=now + DAY)
    users.revoke_session(db, 14, now - keep, "logout")  # revoked long ago

    assert users.prune(db, now, keep) == 3

    assert [row[0] for row in db.execute("SELECT challenge FROM auth_challenges")] == [b"live"]
    assert [row[0] for row in db.execute("SELECT id FROM auth_sessions ORDER BY id")] == [
        10,
        11,
        13,
    ]
    assert count(db, "refresh_tokens") == 3  # the pruned sessions' tokens went with them
    assert users.get_user(db, 1) is not None


def test_a_server_secret_is_made_once(db: Database) -> None:
    first = users.secret(db, "jwt", lambda: b"first")
    assert users.secret(db, "jwt", lambda: b"second") == first == b"first"
    assert users.secret(db, "other", lambda: b"other") == b"other"
