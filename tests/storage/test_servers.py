"""Server, channel, member, invite and DM queries against a real, migrated database file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from relay.errors import BadRequest, Forbidden, Gone, NotFound, Unprocessable
from relay.storage import channels, dms, invites, members, servers, users
from relay.storage.sqlite.db import open_store

if TYPE_CHECKING:
    from pathlib import Path

    from sqlite_utils import Database

NOW = 1_800_000_000_000
HOUR = 3_600_000


@pytest.fixture
def db(database: Database) -> Database:
    return database


def add_user(db: Database, user_id: int, username: str | None = None) -> None:
    users.insert_user(db, user_id, username or f"user{user_id}", None, None, None, 0, NOW)


def add_server(db: Database, server_id: int, owner_id: int, max_owned: int = 100) -> None:
    servers.create_server(
        db, server_id, (server_id + 1, server_id + 2), owner_id, f"s{server_id}", NOW, max_owned
    )


def count(db: Database, sql: str, *params: object) -> int:
    return int(db.execute(f"SELECT count(*) FROM {sql}", params).fetchone()[0])


def channel(db: Database, channel_id: int, server_id: int, kind: str, **kw: object) -> None:
    channels.create_channel(
        db,
        channel_id,
        server_id,
        1,
        name=f"c{channel_id}",
        kind=kind,
        topic=None,
        parent_id=kw.get("parent_id"),  # type: ignore[arg-type]
        position=kw.get("position"),  # type: ignore[arg-type]
        now_ms=NOW,
        max_channels=kw.get("max_channels", 500),  # type: ignore[arg-type]
    )


@pytest.fixture
def world(db: Database) -> Database:
    """Users 1 (owner of server 100), 2 (member of it) and 3 (outsider)."""
    for uid in (1, 2, 3):
        add_user(db, uid)
    add_server(db, 100, 1)
    invites.create_invite(db, "joinme", 100, 1, None, None, NOW)
    invites.use_invite(db, "joinme", 2, NOW)
    return db


# -- servers -----------------------------------------------------------------------------------


def test_create_server_makes_owner_member_and_default_channels(db: Database) -> None:
    add_user(db, 1)
    state = servers.create_server(db, 100, (101, 102), 1, "Home", NOW, 100)

    assert state.server == servers.ServerRow(100, "Home", 1, NOW)
    assert [(c.id, c.type, c.name, c.position) for c in state.channels] == [
        (101, "text", "general", 0),
        (102, "voice", "General", 1),
    ]
    assert channels.list_channels(db, 100) == state.channels
    assert servers.is_member(db, 100, 1)
    assert servers.servers_of(db, 1) == [state.server]


def test_servers_owned_are_limited(db: Database) -> None:
    add_user(db, 1)
    add_server(db, 100, 1, max_owned=2)
    add_server(db, 200, 1, max_owned=2)

    with pytest.raises(Unprocessable) as refused:
        add_server(db, 300, 1, max_owned=2)

    assert refused.value.code == "too_many_servers"
    assert count(db, "servers") == 2


def test_owner_checks(world: Database) -> None:
    assert servers.require_owner(world, 100, 1).id == 100
    with pytest.raises(Forbidden) as member:
        servers.require_owner(world, 100, 2)
    with pytest.raises(NotFound) as outsider:
        servers.require_owner(world, 100, 3)
    with pytest.raises(NotFound) as missing:
        servers.require_owner(world, 999, 1)

    assert member.value.code == "not_owner"
    assert outsider.value.code == missing.value.code == "unknown_server"
    assert servers.server_for(world, 100, 3) is None


def test_delete_server_cascades(world: Database) -> None:
    channel(world, 110, 100, "category")
    world.execute(
        "INSERT INTO messages (id, channel_id, author_id, content) VALUES (1, 101, 2, 'hi')"
    )
    with pytest.raises(Forbidden):
        servers.delete_server(world, 100, 2)

    servers.delete_server(world, 100, 1)

    for table in ("servers", "channels", "members", "invites", "messages"):
        assert count(world, table) == 0, table


# -- channels ----------------------------------------------------------------------------------


def test_create_channel_positions_parents_and_limit(world: Database) -> None:
    channel(world, 110, 100, "category")
    channel(world, 111, 100, "text", parent_id=110, position=0)
    assert [(c.id, c.position) for c in channels.list_channels(world, 100)] == [
        (101, 0),
        (111, 0),  # same position: by id
        (102, 1),
        (110, 2),  # no position: after the last one
    ]
    for parent in (101, 999, 110 + 10_000):
        with pytest.raises(BadRequest) as bad:
            channel(world, 120, 100, "text", parent_id=parent)
        assert "parent_id" in bad.value.fields

    with pytest.raises(Unprocessable) as full:
        channel(world, 120, 100, "text", max_channels=4)
    assert full.value.code == "too_many_channels"


def test_parent_must_be_in_the_same_server(world: Database) -> None:
    add_server(world, 200, 1)
    channel(world, 210, 200, "category")

    with pytest.raises(BadRequest):
        channel(world, 120, 100, "text", parent_id=210)
    with pytest.raises(BadRequest):
        channels.update_channel(world, 101, 1, parent_id=210)


def test_update_channel_rules(world: Database) -> None:
    channel(world, 110, 100, "category")
    updated = channels.update_channel(world, 101, 1, name="chat", topic="hello", parent_id=110)
    assert (updated.name, updated.topic, updated.parent_id) == ("chat", "hello", 110)
    assert channels.get_channel(world, 101) == updated
    cleared = channels.update_channel(world, 101, 1, topic=None, parent_id=None, position=7)
    assert (cleared.topic, cleared.parent_id, cleared.position) == (None, None, 7)
    assert channels.get_channel(world, 101) == cleared

    with pytest.raises(BadRequest) as topic:
        channels.update_channel(world, 102, 1, topic="voice has none")
    with pytest.raises(BadRequest) as nested:
        channels.update_channel(world, 110, 1, parent_id=110)
    with pytest.raises(Forbidden) as not_allowed:
        channels.update_channel(world, 101, 2, name="mine")
    with pytest.raises(NotFound) as outsider:
        channels.update_channel(world, 101, 3, name="mine")

    assert "topic" in topic.value.fields
    assert "parent_id" in nested.value.fields
    assert not_allowed.value.code == "missing_permission"
    assert not_allowed.value.fields == {"permission": "MANAGE_CHANNELS"}
    assert outsider.value.code == "unknown_channel"
    assert channels.get_channel(world, 101) == cleared


def test_deleting_a_category_orphans_its_channels(world: Database) -> None:
    channel(world, 110, 100, "category")
    channels.update_channel(world, 101, 1, parent_id=110)
    channels.update_channel(world, 102, 1, parent_id=110)

    deleted, orphans = channels.delete_channel(world, 110, 1)

    assert deleted.id == 110
    assert [(c.id, c.parent_id) for c in orphans] == [(101, None), (102, None)]
    assert channels.get_channel(world, 110) is None


# -- members -----------------------------------------------------------------------------------


def test_members_page_and_leave(world: Database) -> None:
    for uid in range(10, 15):
        add_user(world, uid)
        invites.use_invite(world, "joinme", uid, NOW)

    first = members.members_page(world, 100, 2, 0, 3)
    rest = members.members_page(world, 100, 2, first[-1].user.id, 100)
    assert [m.user.id for m in first + rest] == [1, 2, 10, 11, 12, 13, 14]
    assert first[0].user == members.UserBrief(1, "user1", None)
    with pytest.raises(NotFound):
        members.members_page(world, 100, 3, 0, 10)

    left = members.leave_server(world, 100, 2)
    assert left.user.id == 2
    assert not servers.is_member(world, 100, 2)
    with pytest.raises(NotFound):
        members.leave_server(world, 100, 2)
    with pytest.raises(Unprocessable) as owner:
        members.leave_server(world, 100, 1)
    assert owner.value.code == "owner_cannot_leave"


# -- invites -----------------------------------------------------------------------------------


def test_invite_expiry_and_exhaustion(world: Database) -> None:
    invites.create_invite(world, "once", 100, 2, 1, NOW + HOUR, NOW)
    for uid in (4, 5):
        add_user(world, uid)

    with pytest.raises(Gone) as expired:
        invites.use_invite(world, "once", 4, NOW + HOUR)
    joined = invites.use_invite(world, "once", 4, NOW + HOUR - 1)
    with pytest.raises(Gone) as used_up:
        invites.use_invite(world, "once", 5, NOW)
    with pytest.raises(NotFound) as unknown:
        invites.use_invite(world, "nope", 5, NOW)

    assert (expired.value.status, expired.value.code) == (410, "invite_expired")
    assert (used_up.value.status, used_up.value.code) == (410, "invite_exhausted")
    assert unknown.value.code == "unknown_invite"
    assert joined.created
    assert joined.member.user.id == 4
    assert [c.id for c in joined.state.channels] == [101, 102]
    invite = invites.get_invite(world, "once")
    assert invite is not None
    assert invite.uses == 1
    assert not servers.is_member(world, 100, 5)


def test_a_member_joining_again_spends_nothing(world: Database) -> None:
    invites.create_invite(world, "once", 100, 1, 1, NOW + HOUR, NOW)

    again = invites.use_invite(world, "once", 2, NOW + 2 * HOUR)  # expired, but 2 is a member

    assert not again.created
    assert again.state.server.id == 100
    invite = invites.get_invite(world, "once")
    assert invite is not None
    assert invite.uses == 0


def test_invite_preview(world: Database) -> None:
    preview = invites.invite_preview(world, "joinme", NOW)
    assert (preview.server_name, preview.member_count) == ("s100", 2)
    invites.create_invite(world, "old", 100, 1, None, NOW, NOW - 1)
    with pytest.raises(Gone):
        invites.invite_preview(world, "old", NOW)


def test_usable_invites_are_capped_and_spent_ones_pruned(world: Database) -> None:
    add_user(world, 4)
    invites.create_invite(world, "spent", 100, 1, 1, None, NOW, max_invites=3)
    invites.use_invite(world, "spent", 4, NOW)  # used up: no longer counts
    invites.create_invite(world, "old", 100, 1, None, NOW + 1, NOW, max_invites=3)
    invites.create_invite(world, "third", 100, 1, None, None, NOW, max_invites=3)  # + joinme
    with pytest.raises(Unprocessable) as full:
        invites.create_invite(world, "fourth", 100, 1, None, None, NOW, max_invites=3)
    assert (full.value.status, full.value.code) == (422, "too_many_invites")
    invites.create_invite(
        world, "fourth", 100, 1, None, None, NOW + 1, max_invites=3
    )  # old expired

    assert invites.prune_invites(world, NOW + 1) == 2
    assert invites.get_invite(world, "spent") is None
    assert invites.get_invite(world, "old") is None
    assert [i.code for i in invites.invites_of(world, 100, 1)] == ["fourth", "joinme", "third"]


def test_delete_invite_by_inviter_or_owner(world: Database) -> None:
    add_user(world, 4)
    invites.use_invite(world, "joinme", 4, NOW)
    invites.create_invite(world, "by2", 100, 2, None, None, NOW)
    invites.create_invite(world, "by2b", 100, 2, None, None, NOW)

    with pytest.raises(Forbidden):
        invites.delete_invite(world, "by2", 4)  # another member
    with pytest.raises(NotFound):
        invites.delete_invite(world, "by2", 3)  # an outsider
    assert invites.delete_invite(world, "by2", 2).code == "by2"  # the inviter
    assert invites.delete_invite(world, "by2b", 1).code == "by2b"  # the owner
    with pytest.raises(NotFound):
        invites.delete_invite(world, "by2", 2)


async def test_concurrent_joins_on_a_single_use_invite(tmp_path: Path) -> None:
    async with open_store(tmp_path / "relay.db", readers=1) as store:
        await store.write(add_user, 1)
        await store.write(add_server, 100, 1)
        await store.write(invites.create_invite, "once", 100, 1, 1, None, NOW)
        for uid in range(10, 30):
            await store.write(add_user, uid)
        results: dict[int, str] = {}

        async def join(uid: int) -> None:
            try:
                await store.write(invites.use_invite, "once", uid, NOW)
                results[uid] = "joined"
            except Gone as e:
                results[uid] = e.code

        async with trio.open_nursery() as nursery:
            for uid in range(10, 30):
                nursery.start_soon(join, uid)

        assert sorted(results.values()) == ["invite_exhausted"] * 19 + ["joined"]
        invite = await store.read(invites.get_invite, "once")
        assert invite is not None
        assert invite.uses == 1
        joined = await store.read(members.list_members, 100, 0, 100)
        assert len(joined) == 2


# -- DMs ---------------------------------------------------------------------------------------


def test_open_dm_rules(world: Database) -> None:
    with pytest.raises(BadRequest) as self_dm:
        dms.open_dm(world, 500, 1, 1, NOW)
    with pytest.raises(NotFound) as nobody:
        dms.open_dm(world, 500, 1, 999, NOW)
    with pytest.raises(Forbidden) as stranger:
        dms.open_dm(world, 500, 1, 3, NOW)
    assert self_dm.value.code == "cannot_dm_self"
    assert nobody.value.code == "unknown_user"
    assert stranger.value.code == "no_shared_server"

    opened = dms.open_dm(world, 500, 2, 1, NOW)
    assert opened.created
    assert opened.dm.channel.type == "dm"
    assert [u.id for u in opened.dm.recipients] == [1, 2]
    key = world.execute("SELECT dm_key FROM channels WHERE id = 500").fetchone()[0]
    assert key == "1:2"

    again = dms.open_dm(world, 501, 1, 2, NOW)  # the other way round: the same channel
    assert not again.created
    assert again.dm == opened.dm
    members.leave_server(world, 100, 2)
    kept = dms.open_dm(world, 502, 1, 2, NOW)  # no shared server now, but the DM exists
    assert kept.dm.channel.id == 500
    assert count(world, "channels WHERE type = 'dm'") == 1


def test_dm_channels_are_visible_to_their_recipients_only(world: Database) -> None:
    dms.open_dm(world, 500, 1, 2, NOW)

    found = dms.channel_for(world, 500, 2)
    assert isinstance(found, dms.DmRow)
    assert dms.channel_for(world, 500, 3) is None
    with pytest.raises(Forbidden) as dm:
        channels.update_channel(world, 500, 1, name="x")
    with pytest.raises(NotFound):
        channels.delete_channel(world, 500, 3)
    assert dm.value.code == "dm_channel"


# -- READY -------------------------------------------------------------------------------------


@pytest.mark.sqlite_only  # SQLite's trace/progress callbacks
def test_ready_queries_take_a_constant_number_of_statements(world: Database) -> None:
    for sid in (200, 300, 400):
        add_server(world, sid, 2)
    channel(world, 110, 100, "category")
    add_user(world, 4)
    invites.use_invite(world, "joinme", 4, NOW)
    dms.open_dm(world, 500, 2, 1, NOW)
    dms.open_dm(world, 501, 2, 4, NOW)
    statements: list[str] = []
    world.conn.set_trace_callback(statements.append)

    states = servers.ready_state(world, 2)
    dm_rows = dms.dms_of(world, 2)

    world.conn.set_trace_callback(None)
    # Servers, 5 for permissions, channels, roles; then DMs, recipients and group DM owners:
    # whatever the counts.
    assert len([s for s in statements if s.startswith("SELECT")]) == 8 + 3
    assert [s.server.id for s in states] == [100, 200, 300, 400]
    assert [c.id for c in states[0].channels] == [101, 102, 110]
    assert [c.id for c in states[1].channels] == [201, 202]
    assert [(d.channel.id, [u.id for u in d.recipients]) for d in dm_rows] == [
        (500, [1, 2]),
        (501, [2, 4]),
    ]
    assert servers.ready_state(world, 3) == []
    assert dms.dms_of(world, 3) == []


def test_a_user_is_a_member_of_at_most_max_joined_servers(world: Database) -> None:
    for sid in (200, 300):
        add_server(world, sid, 1)
        invites.create_invite(world, f"to{sid}", sid, 1, None, None, NOW)
    assert invites.use_invite(world, "to200", 2, NOW, max_joined=2).created  # 2 is in 100 already
    with pytest.raises(Unprocessable) as full:
        invites.use_invite(world, "to300", 2, NOW, max_joined=2)
    assert (full.value.status, full.value.code) == (422, "too_many_servers_joined")
    assert not servers.is_member(world, 300, 2)
    assert not invites.use_invite(world, "to200", 2, NOW, max_joined=2).created  # a member: fine
    members.leave_server(world, 200, 2)
    assert invites.use_invite(world, "to300", 2, NOW, max_joined=2).created  # room again
