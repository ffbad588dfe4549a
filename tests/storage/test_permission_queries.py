"""Permission storage against real database files: migration 3 gives old servers their
@everyone role, access checks see what the pure function says, and audit entries commit or
roll back with their change."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import pytest

from relay.errors import Forbidden, Unprocessable
from relay.permissions import ALL, DEFAULT_EVERYONE, Overwrite, P
from relay.storage import audit, channels, invites, overwrites, roles, servers, users
from relay.storage.access import accesses_of, server_access
from relay.storage.audience import server_snapshot, visible_channel
from relay.storage.schema import migrate
from relay.storage.sqlite.db import connect

if TYPE_CHECKING:
    from pathlib import Path

    from sqlite_utils import Database

NOW = 1_800_000_000_000
OWNER, MEMBER = 1, 2
SERVER, TEXT, VOICE = 100, 101, 102


@pytest.fixture
def db(database: Database) -> Database:
    for uid in (OWNER, MEMBER):
        users.insert_user(database, uid, f"user{uid}", None, None, None, 0, NOW)
    servers.create_server(database, SERVER, (TEXT, VOICE), OWNER, "s", NOW, 100)
    invites.create_invite(database, "in", SERVER, OWNER, None, None, NOW)
    invites.use_invite(database, "in", MEMBER, NOW)
    return database


def test_migration_3_gives_existing_servers_their_everyone_role(tmp_path: Path) -> None:
    db = connect(tmp_path / "old.db")
    db.execute("CREATE TABLE placeholder (x INTEGER)")  # not empty: take the migration path
    migrate(db, target=2)
    db.execute("INSERT INTO users (id, username, created_at, updated_at) VALUES (1, 'a', 0, 0)")
    db.execute("INSERT INTO servers (id, name, owner_id, created_at) VALUES (7, 's', 1, 5)")
    db.conn.commit()

    migrate(db)

    thread_bits = int(P.CREATE_THREADS | P.SEND_MESSAGES_IN_THREADS)
    assert roles.list_roles(db, 7) == [
        # DEFAULT_EVERYONE as it was at migration 3, before the thread and video bits; the
        # threads migration then gave @everyone the thread bits, since it may send messages
        roles.RoleRow(7, 7, "@everyone", 1845311 | thread_bits, 0, 0, False, False, 5)
    ]
    db.close()


def test_hidden_channels_are_invisible_and_checks_name_the_permission(db: Database) -> None:
    overwrites.set_overwrite(
        db, TEXT, OWNER, Overwrite(SERVER, "role", 0, int(P.VIEW_CHANNEL)), max_overwrites=100
    )

    assert visible_channel(db, TEXT, MEMBER) is None
    owners = visible_channel(db, TEXT, OWNER)
    assert owners is not None
    assert owners.permissions == ALL
    voice = visible_channel(db, VOICE, MEMBER)
    assert voice is not None
    with pytest.raises(Forbidden) as refused:
        voice.require(P.MANAGE_CHANNELS)
    assert (refused.value.code, refused.value.fields) == (
        "missing_permission",
        {"permission": "MANAGE_CHANNELS"},
    )
    assert [c.id for c in channels.channels_for(db, SERVER, MEMBER)] == [VOICE]
    access = accesses_of(db, MEMBER)[SERVER]
    assert not access.permissions(TEXT) & P.VIEW_CHANNEL
    snapshot = server_snapshot(db, SERVER)
    assert snapshot is not None
    assert snapshot.server.channels[TEXT].overwrites == (
        Overwrite(SERVER, "role", 0, int(P.VIEW_CHANNEL)),
    )


def test_an_access_never_guesses_about_channels_it_did_not_load(db: Database) -> None:
    access = server_access(db, SERVER, MEMBER)  # no channels loaded
    assert access is not None
    assert access.permissions() == DEFAULT_EVERYONE
    with pytest.raises(LookupError):
        access.permissions(TEXT)


def test_audit_entries_commit_with_their_change(db: Database) -> None:
    servers.update_server(db, SERVER, OWNER, "renamed", reason="why not")
    with pytest.raises(Forbidden):
        servers.update_server(db, SERVER, MEMBER, "mine")
    entries = audit.entries(db, SERVER, OWNER)
    assert [(e.action, e.user_id, e.reason) for e in entries][:1] == [
        ("server_update", OWNER, "why not")
    ]
    assert entries[0].changes == [audit.Change("name", "s", "renamed")]
    with pytest.raises(Forbidden):
        audit.entries(db, SERVER, MEMBER)  # VIEW_AUDIT_LOG


def test_old_audit_entries_are_pruned_oldest_first_in_batches(db: Database) -> None:
    for name in ("a", "b", "c", "d", "e"):
        servers.update_server(db, SERVER, OWNER, name)
    ids = [r[0] for r in db.execute("SELECT id FROM audit_log ORDER BY id").fetchall()]
    cutoff = ids[-2]  # every entry before the last two renames is made old
    db.execute("UPDATE audit_log SET created_at = 1 WHERE id < ?", (cutoff,))
    deleted = []
    while batch := audit.prune(db, 2, batch=2):
        deleted.append(batch)
    assert sum(deleted) == len(ids) - 2
    assert max(deleted) == 2
    left = audit.entries(db, SERVER, OWNER)
    assert [e.changes[0].new for e in left] == ["e", "d"]


def test_a_channel_has_at_most_max_overwrites(db: Database) -> None:
    put = partial(overwrites.set_overwrite, db, TEXT, OWNER, max_overwrites=2)
    role = roles.create_role(
        db, 500, SERVER, OWNER, name="a", permissions=0, color=0, hoist=False,
        mentionable=False, position=1, now_ms=NOW, max_roles=10,
    )  # fmt: skip
    put(Overwrite(SERVER, "role", 0, 0))
    put(Overwrite(MEMBER, "member", 0, 0))
    with pytest.raises(Unprocessable) as full:
        put(Overwrite(role.id, "role", 0, 0))
    assert (full.value.status, full.value.code) == (422, "too_many_overwrites")
    # Replacing one is not a new one; after a delete there is room again.
    put(Overwrite(MEMBER, "member", int(P.VIEW_CHANNEL), 0))
    overwrites.delete_overwrite(db, TEXT, MEMBER, OWNER)
    put(Overwrite(role.id, "role", 0, 0))
    assert {o.target_id for o in overwrites.own_overwrites(db, TEXT)} == {SERVER, role.id}
