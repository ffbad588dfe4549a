"""Servers, channels, invites, members and DMs end to end through the real server, with the
gateway events each change dispatches (seen by hub sessions attached to recording sinks)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import trio
from msgspec import to_builtins
from nacl.signing import SigningKey

from relay.chat.dms import dm_channels
from relay.chat.servers import ready_states
from relay.gateway.session import Session
from relay.permissions import DEFAULT_EVERYONE
from relay.storage import audience
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from relay.client import RelayClient
    from tests.conftest import RunningServer

API = "/v1/api"


@dataclass
class User:
    client: RelayClient
    id: str
    name: str

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        return await self.client.call(method, API + path, body)

    async def status(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await self.client.request(method, API + path, json=body)
        return response.status_code, response.json() if response.content else None

    async def error(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, str]:
        response = await self.client.request(method, API + path, json=body, **kw)
        error = response.json()["error"]
        assert isinstance(error["message"], str)
        return response.status_code, error["code"]

    async def bad_field(self, method: str, path: str, body: Any) -> dict[str, str]:
        """Send a body that must be refused with 400 invalid_field; return the fields named."""
        response = await self.client.request(method, API + path, json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_field", error
        fields: dict[str, str] = error["fields"]
        return fields


def user_maker(
    server: RunningServer, clients: list[RelayClient]
) -> Callable[[str], Awaitable[User]]:
    """Register (with an Ed25519 key: no password hashing) and log in a new user."""

    async def make(name: str) -> User:
        key = SigningKey.generate()
        client = server.client()
        clients.append(client)
        user = await client.register(name, public_key=bytes(key.verify_key))
        await client.login_with_key(name, key)
        return User(client, user["id"], name)

    return make


@pytest.fixture
async def make_user(relay_server: RunningServer) -> AsyncIterator[Callable[[str], Awaitable[User]]]:
    clients: list[RelayClient] = []
    yield user_maker(relay_server, clients)
    for client in clients:
        await client.aclose()


@dataclass
class Listener:
    """A gateway session's sink that records every event it is sent."""

    events: list[tuple[str, Any]] = field(default_factory=list)

    def send_frame(self, frame: bytes, write_now: bool = False, /) -> bool:
        length = frame[1] & 0x7F  # an unmasked server frame: the payload follows the header
        dispatch = json.loads(frame[2 + {126: 2, 127: 8}.get(length, 0) :])
        self.events.append((dispatch["t"], dispatch["d"]))
        return True

    def slow_consumer(self) -> None:
        raise AssertionError("a recording sink is never full")

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"nothing here revokes logins ({code} {reason})")

    def take(self) -> list[tuple[str, Any]]:
        events, self.events = self.events, []
        return events


async def listen(server: RunningServer, user: User) -> Listener:
    """Attach a session for `user` to the hub, as the gateway does on IDENTIFY."""
    rt = server.runtime
    uid = int(user.id)
    session = Session(uid, 0, "json", replay_size=1000, replay_age_s=600)
    listener = Listener()
    session.attach(listener)
    rt.hub.add_session(session, await rt.store.read(audience.server_ids_of, uid))
    return listener


async def new_server(owner: User, name: str = "Home") -> dict[str, Any]:
    """Create a server; return the server object (without the `channels` and `roles` it also
    comes with)."""
    server: dict[str, Any] = await owner.call("POST", "/servers", {"name": name})
    del server["channels"], server["roles"]
    return server


async def join(owner: User, server_id: str, *others: User) -> None:
    invite = await owner.call("POST", f"/servers/{server_id}/invites")
    for other in others:
        await other.call("POST", f"/invites/{invite['code']}")


BAD_IDS = ["abc", "0", "007", "-1", "1" * 25, "123"]  # malformed, non-canonical or unknown


# -- servers -----------------------------------------------------------------------------------


async def test_create_and_read_a_server(
    relay_server: RunningServer, make_user: Callable[[str], Awaitable[User]]
) -> None:
    ann = await make_user("ann")
    events = await listen(relay_server, ann)

    status, created = await ann.status("POST", "/servers", {"name": "Ann's place"})

    assert status == 201
    server = {k: v for k, v in created.items() if k not in ("channels", "roles")}
    assert set(server) == {
        "id",
        "name",
        "owner_id",
        "created_at",
        "description",
        "public",
        "icon_url",
    }
    assert (server["name"], server["owner_id"]) == ("Ann's place", ann.id)
    assert (server["description"], server["public"]) == (None, False)
    assert created["roles"] == [
        {
            "id": server["id"],  # @everyone
            "name": "@everyone",
            "permissions": str(DEFAULT_EVERYONE),
            "color": 0,
            "position": 0,
            "hoist": False,
            "mentionable": False,
        }
    ]
    assert server["created_at"].endswith("Z")
    assert await ann.call("GET", f"/servers/{server['id']}") == server
    assert await ann.call("GET", "/users/@me/servers") == [server]
    channels = await ann.call("GET", f"/servers/{server['id']}/channels")
    assert [(c["type"], c["name"], c["position"]) for c in channels] == [
        ("text", "general", 0),
        ("voice", "General", 1),
    ]
    assert channels[0] == {
        "id": channels[0]["id"],
        "server_id": server["id"],
        "type": "text",
        "name": "general",
        "topic": None,
        "position": 0,
        "parent_id": None,
        "last_message_id": None,
        "created_at": server["created_at"],
        "rate_limit_per_user": 0,
        "permissions_synced": False,
        "permission_overwrites": [],
    }
    assert created == {**server, "channels": channels, "roles": created["roles"]}
    assert events.take() == [("SERVER_CREATE", created)]
    # The creator's session now hears the new server's events.
    await ann.call("PATCH", f"/servers/{server['id']}", {"name": "Renamed"})
    assert events.take() == [("SERVER_UPDATE", {**server, "name": "Renamed"})]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "a\x85b"}, "name"),
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
        ({"name": "ok", "owner_id": "1"}, "owner_id"),
    ],
)
async def test_create_server_rejects_bad_bodies(
    make_user: Callable[[str], Awaitable[User]], body: dict[str, Any], field: str
) -> None:
    ann = await make_user("ann")
    assert field in await ann.bad_field("POST", "/servers", body)
    assert await ann.call("GET", "/users/@me/servers") == []


async def test_malformed_and_missing_bodies_and_tokens(
    make_user: Callable[[str], Awaitable[User]],
) -> None:
    ann = await make_user("ann")
    json_header = {"Content-Type": "application/json"}
    for content, code in [(b"{nope", "malformed_json"), (b"", "missing_body")]:
        response = await ann.client.request(
            "POST", f"{API}/servers", content=content, headers=json_header
        )
        assert (response.status_code, response.json()["error"]["code"]) == (400, code)
    assert await ann.error("POST", "/servers", {"name": "x"}, token="") == (401, "missing_token")
    assert await ann.error("GET", "/users/@me/servers", token="") == (401, "missing_token")
    assert await ann.error("GET", "/invites/abcdefghij", token="") == (401, "missing_token")


async def test_server_name_limits(make_user: Callable[[str], Awaitable[User]]) -> None:
    ann = await make_user("ann")
    exactly = "é" * 100  # characters, not bytes
    server = await new_server(ann, exactly)
    assert server["name"] == exactly
    assert "name" in await ann.bad_field("PATCH", f"/servers/{server['id']}", {"name": "x" * 101})


async def test_non_members_see_nothing_and_members_cannot_manage(
    relay_server: RunningServer, make_user: Callable[[str], Awaitable[User]]
) -> None:
    ann, bob, eve = await make_user("ann"), await make_user("bob"), await make_user("eve")
    server = await new_server(ann)
    sid = server["id"]
    await join(ann, sid, bob)
    general = (await ann.call("GET", f"/servers/{sid}/channels"))[0]["id"]

    # An outsider gets 404 for everything of the server, as for a server that does not exist.
    for method, path, body in [
        ("GET", f"/servers/{sid}", None),
        ("PATCH", f"/servers/{sid}", {"name": "mine"}),
        ("DELETE", f"/servers/{sid}", None),
        ("GET", f"/servers/{sid}/channels", None),
        ("POST", f"/servers/{sid}/channels", {"name": "x", "type": "text"}),
        ("POST", f"/servers/{sid}/invites", {}),
        ("GET", f"/servers/{sid}/members", None),
        ("DELETE", f"/servers/{sid}/members/@me", None),
    ]:
        assert await eve.error(method, path, body) == (404, "unknown_server"), path
        for bad in BAD_IDS:
            assert await ann.error(method, path.replace(sid, bad), body) == (404, "unknown_server")
    for method, body in [("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)]:
        assert await eve.error(method, f"/channels/{general}", body) == (404, "unknown_channel")
        for bad in BAD_IDS:
            assert await ann.error(method, f"/channels/{bad}", body) == (404, "unknown_channel")

    # A member sees it but cannot manage it: the permission it lacks is named; deleting the
    # server is the owner's alone.
    assert (await bob.call("GET", f"/servers/{sid}"))["id"] == sid
    assert (await bob.call("GET", f"/channels/{general}"))["id"] == general
    for method, path, body, permission in [
        ("PATCH", f"/servers/{sid}", {"name": "mine"}, "MANAGE_SERVER"),
        ("POST", f"/servers/{sid}/channels", {"name": "x", "type": "text"}, "MANAGE_CHANNELS"),
        ("PATCH", f"/channels/{general}", {"name": "x"}, "MANAGE_CHANNELS"),
        ("DELETE", f"/channels/{general}", None, "MANAGE_CHANNELS"),
    ]:
        response = await bob.client.request(method, API + path, json=body)
        assert response.status_code == 403, path
        error = response.json()["error"]
        assert (error["code"], error["fields"]) == (
            "missing_permission",
            {"permission": permission},
        )
        assert permission in error["message"]
    assert await bob.error("DELETE", f"/servers/{sid}") == (403, "not_owner")
    assert (await ann.call("GET", f"/servers/{sid}"))["name"] == "Home"
    assert len(await ann.call("GET", f"/servers/{sid}/channels")) == 2


async def test_update_and_delete_a_server(
    relay_server: RunningServer, make_user: Callable[[str], Awaitable[User]]
) -> None:
    ann, bob = await make_user("ann"), await make_user("bob")
    server = await new_server(ann)
    sid = server["id"]
    await join(ann, sid, bob)
    bob_events = await listen(relay_server, bob)

    assert await ann.call("PATCH", f"/servers/{sid}", {}) == server  # nothing to change
    updated = await ann.call("PATCH", f"/servers/{sid}", {"name": "New"})
    assert updated == {**server, "name": "New"}
    assert await bob.call("GET", f"/servers/{sid}") == updated
    assert "name" in await ann.bad_field("PATCH", f"/servers/{sid}", {"name": None})
    assert "owner_id" in await ann.bad_field("PATCH", f"/servers/{sid}", {"owner_id": bob.id})

    assert await ann.status("DELETE", f"/servers/{sid}") == (204, None)

    assert bob_events.take() == [("SERVER_UPDATE", updated), ("SERVER_DELETE", {"id": sid})]
    assert await bob.error("GET", f"/servers/{sid}") == (404, "unknown_server")
    assert await ann.error("DELETE", f"/servers/{sid}") == (404, "unknown_server")
    assert await bob.call("GET", "/users/@me/servers") == []
    assert sid not in relay_server.runtime.hub.online_members


async def test_servers_owned_are_limited(nursery: trio.Nursery, tmp_path: Path) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, max_servers_owned=3))
    make_user = user_maker(running, [])
    ann, bob = await make_user("ann"), await make_user("bob")
    owned = [await new_server(ann, f"s{n}") for n in range(3)]
    assert await ann.error("POST", "/servers", {"name": "one more"}) == (422, "too_many_servers")
    await join(bob, (await new_server(bob))["id"], ann)  # being a member does not count
    assert len(await ann.call("GET", "/users/@me/servers")) == 4
    await ann.call("DELETE", f"/servers/{owned[0]['id']}")
    await new_server(ann, "again")
    await shutdown()


# -- channels ----------------------------------------------------------------------------------


async def test_create_list_update_and_delete_channels(
    relay_server: RunningServer, make_user: Callable[[str], Awaitable[User]]
) -> None:
    ann, bob = await make_user("ann"), await make_user("bob")
    sid = (await new_server(ann))["id"]
    await join(ann, sid, bob)
    events = await listen(relay_server, bob)
    path = f"/servers/{sid}/channels"

    status, category = await ann.status("POST", path, {"name": "Talk", "type": "category"})
    assert status == 201
    assert (category["position"], category["parent_id"], category["topic"]) == (2, None, None)
    text = await ann.call(
        "POST",
        path,
        {"name": "news", "type": "text", "topic": "line 1\nline 2", "parent_id": category["id"]},
    )
    assert (text["topic"], text["parent_id"], text["position"]) == (
        "line 1\nline 2",
        category["id"],
        3,
    )
    voice = await ann.call("POST", path, {"name": "Radio", "type": "voice", "position": 0})
    listed = await bob.call("GET", path)
    assert [c["name"] for c in listed] == ["general", "Radio", "General", "Talk", "news"]
    assert await bob.call("GET", f"/channels/{text['id']}") == text

    moved = await ann.call(
        "PATCH",
        f"/channels/{text['id']}",
        {"name": "headlines", "topic": None, "position": 9, "parent_id": None},
    )
    # Made in a category, it followed the category's overwrites; moved out, it keeps a copy.
    assert text["permissions_synced"]
    assert moved == {
        **text,
        "name": "headlines",
        "topic": None,
        "position": 9,
        "parent_id": None,
        "permissions_synced": False,
    }
    assert await ann.call("PATCH", f"/channels/{text['id']}", {}) == moved
    back = await ann.call("PATCH", f"/channels/{text['id']}", {"parent_id": category["id"]})
    assert back["parent_id"] == category["id"]

    assert await ann.status("DELETE", f"/channels/{category['id']}") == (204, None)
    assert await bob.error("GET", f"/channels/{category['id']}") == (404, "unknown_channel")
    orphan = await bob.call("GET", f"/channels/{text['id']}")
    assert orphan["parent_id"] is None
    assert await ann.error("DELETE", f"/channels/{category['id']}") == (404, "unknown_channel")

    assert events.take() == [
        ("CHANNEL_CREATE", category),
        ("CHANNEL_CREATE", text),
        ("CHANNEL_CREATE", voice),
        ("CHANNEL_UPDATE", moved),
        ("CHANNEL_UPDATE", back),
        ("CHANNEL_DELETE", category),
        ("CHANNEL_UPDATE", orphan),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "text"}, "name"),
        ({"name": "x"}, "type"),
        ({"name": "x", "type": "dm"}, "type"),
        ({"name": "x", "type": "forum"}, "type"),
        ({"name": "", "type": "text"}, "name"),
        ({"name": "x" * 101, "type": "text"}, "name"),
        ({"name": "tab\there", "type": "text"}, "name"),
        ({"name": "x", "type": "text", "topic": "t" * 1025}, "topic"),
        ({"name": "x", "type": "text", "topic": "bell\x07"}, "topic"),
        ({"name": "x", "type": "voice", "topic": "no"}, "topic"),
        ({"name": "x", "type": "category", "topic": "no"}, "topic"),
        ({"name": "x", "type": "text", "position": -1}, "position"),
        ({"name": "x", "type": "text", "position": "1"}, "position"),
        ({"name": "x", "type": "text", "position": 1.5}, "position"),
        ({"name": "x", "type": "text", "parent_id": "abc"}, "parent_id"),
        ({"name": "x", "type": "text", "parent_id": 5}, "parent_id"),
        ({"name": "x", "type": "text", "parent_id": "9" * 19}, "parent_id"),
        ({"name": "x", "type": "text", "parent_id": "123"}, "parent_id"),
        ({"name": "x", "type": "text", "nsfw": True}, "nsfw"),
    ],
)
async def test_create_channel_rejects_bad_bodies(
    make_user: Callable[[str], Awaitable[User]], body: dict[str, Any], field: str
) -> None:
    ann = await make_user("ann")
    sid = (await new_server(ann))["id"]
    assert field in await ann.bad_field("POST", f"/servers/{sid}/channels", body)
    assert len(await ann.call("GET", f"/servers/{sid}/channels")) == 2


async def test_channel_parents_must_be_categories_of_the_same_server(
    make_user: Callable[[str], Awaitable[User]],
) -> None:
    ann = await make_user("ann")
    sid = (await new_server(ann))["id"]
    other = (await new_server(ann, "Other"))["id"]
    general, voice = await ann.call("GET", f"/servers/{sid}/channels")
    elsewhere = await ann.call(
        "POST", f"/servers/{other}/channels", {"name": "c", "type": "category"}
    )
    category = await ann.call("POST", f"/servers/{sid}/channels", {"name": "c", "type": "category"})
    path = f"/servers/{sid}/channels"

    for parent in (general["id"], elsewhere["id"]):
        body = {"name": "x", "type": "text", "parent_id": parent}
        assert "parent_id" in await ann.bad_field("POST", path, body)
        assert "parent_id" in await ann.bad_field(
            "PATCH", f"/channels/{general['id']}", {"parent_id": parent}
        )
    nested = {"name": "x", "type": "category", "parent_id": category["id"]}
    assert "parent_id" in await ann.bad_field("POST", path, nested)
    for target, body in [
        (category, {"parent_id": category["id"]}),  # a category has no parent, not even itself
        (voice, {"topic": "voice channels have none"}),
        (category, {"topic": "nor do categories"}),
        (general, {"name": None}),
        (general, {"position": None}),
        (general, {"position": 1_000_001}),
        (general, {"type": "voice"}),
    ]:
        assert await ann.bad_field("PATCH", f"/channels/{target['id']}", body)
    assert await ann.call("GET", f"/channels/{general['id']}") == general


async def test_channels_per_server_are_limited(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_channels_per_server=3)
    running, shutdown = await start_server(nursery, settings)
    ann = await user_maker(running, [])("ann")
    sid = (await new_server(ann))["id"]
    path = f"/servers/{sid}/channels"
    third = await ann.call("POST", path, {"name": "third", "type": "text"})
    assert await ann.error("POST", path, {"name": "fourth", "type": "text"}) == (
        422,
        "too_many_channels",
    )
    await ann.call("DELETE", f"/channels/{third['id']}")
    await ann.call("POST", path, {"name": "fourth", "type": "text"})
    await shutdown()


# -- invites -----------------------------------------------------------------------------------


async def test_invite_create_preview_join_and_events(
    relay_server: RunningServer, make_user: Callable[[str], Awaitable[User]]
) -> None:
    ann, bob = await make_user("ann"), await make_user("bob")
    server = await new_server(ann)
    sid = server["id"]
    ann_events = await listen(relay_server, ann)
    bob_events = await listen(relay_server, bob)

    # No body at all takes the defaults: a day, unlimited uses.
    status, invite = await ann.status("POST", f"/servers/{sid}/invites")
    assert status == 201
    assert len(invite["code"]) == 10
    assert invite["code"].replace("-", "").replace("_", "").isalnum()
    assert (invite["server_id"], invite["inviter_id"]) == (sid, ann.id)
    assert (invite["max_uses"], invite["uses"]) == (0, 0)
    assert invite["expires_at"] > invite["created_at"]  # ISO 8601 compares as text
    code = invite["code"]

    preview = await bob.call("GET", f"/invites/{code}")
    assert preview == {
        "code": code,
        "server": {"id": sid, "name": "Home"},
        "member_count": 1,
        "expires_at": invite["expires_at"],
    }
    assert await bob.error("GET", f"/servers/{sid}") == (404, "unknown_server")  # not joined

    status, joined = await bob.status("POST", f"/invites/{code}")
    assert status == 201
    channels = await ann.call("GET", f"/servers/{sid}/channels")
    roles = await ann.call("GET", f"/servers/{sid}/roles")
    assert joined == {**server, "channels": channels, "roles": roles}
    assert (await bob.call("GET", f"/invites/{code}"))["member_count"] == 2

    # Joining again: 200 with the server, and no use spent.
    assert await bob.status("POST", f"/invites/{code}") == (200, joined)
    assert await ann.status("POST", f"/invites/{code}") == (200, joined)

    members = await ann.call("GET", f"/servers/{sid}/members")
    bob_member = members[1]
    assert bob_member["user"] == {"id": bob.id, "username": "bob", "display_name": None}
    member_add = {
        "server_id": sid,
        "user": bob_member["user"],
        "joined_at": bob_member["joined_at"],
    }
    assert ann_events.take() == [("MEMBER_ADD", member_add)]
    assert bob_events.take() == [("MEMBER_ADD", member_add), ("SERVER_CREATE", joined)]

    # Bob's session now hears the server's events.
    await ann.call("PATCH", f"/servers/{sid}", {"name": "Ours"})
    assert [t for t, _ in bob_events.take()] == ["SERVER_UPDATE"]


async def test_invite_options_and_bad_bodies(make_user: Callable[[str], Awaitable[User]]) -> None:
    ann, bob = await make_user("ann"), await make_user("bob")
    sid = (await new_server(ann))["id"]
    path = f"/servers/{sid}/invites"

    forever = await ann.call("POST", path, {"max_age": 0, "max_uses": 100})
    assert (forever["expires_at"], forever["max_uses"]) == (None, 100)
    assert (await bob.call("GET", f"/invites/{forever['code']}"))["expires_at"] is None
    week = await ann.call("POST", path, {"max_age": 604_800, "max_uses": 0})
    assert week["max_uses"] == 0
    for body, bad in [
        ({"max_age": -1}, "max_age"),
        ({"max_age": 604_801}, "max_age"),
        ({"max_age": "60"}, "max_age"),
        ({"max_age": None}, "max_age"),
        ({"max_uses": -1}, "max_uses"),
        ({"max_uses": 101}, "max_uses"),
        ({"max_uses": True}, "max_uses"),
        ({"temporary": True}, "temporary"),
    ]:
        assert bad in await ann.bad_field("POST", path, body)
    response = await ann.client.request(
        "POST", API + path, content=b"[]", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    for code in ("nonexistent", "x" * 300, "%20"):
        for method in ("GET", "POST", "DELETE"):
            assert await bob.error(method, f"/invites/{code}") == (404, "unknown_invite")


async def test_invite_expiry(
    relay_server: RunningServer, make_user: Callable[[str], Awaitable[User]]
) -> None:
    ann, bob = await make_user("ann"), await make_user("bob")
    sid = (await new_server(ann))["id"]
    short = await ann.call("POST", f"/servers/{sid}/invites", {"max_age": 1})
    old = await ann.call("POST", f"/servers/{sid}/invites", {"max_age": 3600})
    # Age the second invite by editing the database file directly.
    with sqlite3.connect(relay_server.settings.db_path) as conn:
        conn.execute("UPDATE invites SET expires_at = 1 WHERE code = ?", (old["code"],))
    conn.close()

    await trio.sleep(1.1)

    for code in (short["code"], old["code"]):
        assert await bob.error("GET", f"/invites/{code}") == (410, "invite_expired")
        assert await bob.error("POST", f"/invites/{code}") == (410, "invite_expired")
    assert await bob.call("GET", "/users/@me/servers") == []
    # Members keep their answer: they are in already.
    assert (await ann.status("POST", f"/invites/{short['code']}"))[0] == 200


async def test_invite_exhaustion(make_user: Callable[[str], Awaitable[User]]) -> None:
    ann, bob, cat, dan = [await make_user(n) for n in ("ann", "bob", "cat", "dan")]
    sid = (await new_server(ann))["id"]
    invite = await ann.call("POST", f"/servers/{sid}/invites", {"max_uses": 2})
    code = invite["code"]

    await bob.call("POST", f"/invites/{code}")
    await bob.call("POST", f"/invites/{code}")  # a member again: no use spent
    await cat.call("POST", f"/invites/{code}")

    assert await dan.error("POST", f"/invites/{code}") == (410, "invite_exhausted")
    assert await dan.error("GET", f"/invites/{code}") == (410, "invite_exhausted")
    assert len(await ann.call("GET", f"/servers/{sid}/members")) == 3


async def test_concurrent_joins_on_a_single_use_invite(
    make_user: Callable[[str], Awaitable[User]],
) -> None:
    ann = await make_user("ann")
    joiners = [await make_user(f"joiner{n}") for n in range(8)]
    sid = (await new_server(ann))["id"]
    code = (await ann.call("POST", f"/servers/{sid}/invites", {"max_uses": 1}))["code"]
    results: list[tuple[int, str]] = []

    async def try_join(user: User) -> None:
        response = await user.client.request("POST", f"{API}/invites/{code}")
        body = response.json()
        results.append((response.status_code, body.get("error", {}).get("code", "joined")))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for user in joiners:
                nursery.start_soon(try_join, user)

    assert sorted(results) == [(201, "joined")] + [(410, "invite_exhausted")] * 7
    assert len(await ann.call("GET", f"/servers/{sid}/members")) == 2


async def test_delete_invite(make_user: Callable[[str], Awaitable[User]]) -> None:
    ann, bob, cat, eve = [await make_user(n) for n in ("ann", "bob", "cat", "eve")]
    sid = (await new_server(ann))["id"]
    await join(ann, sid, bob, cat)
    by_bob = await bob.call("POST", f"/servers/{sid}/invites", {})
    another = await bob.call("POST", f"/servers/{sid}/invites", {})

    assert await cat.error("DELETE", f"/invites/{by_bob['code']}") == (403, "missing_permission")
    assert await eve.error("DELETE", f"/invites/{by_bob['code']}") == (404, "unknown_invite")
    assert await bob.status("DELETE", f"/invites/{by_bob['code']}") == (204, None)
    assert await ann.status("DELETE", f"/invites/{another['code']}") == (204, None)
    for code in (by_bob["code"], another["code"]):
        assert await eve.error("GET", f"/invites/{code}") == (404, "unknown_invite")
        assert await eve.error("POST", f"/invites/{code}") == (404, "unknown_invite")


# -- members -----------------------------------------------------------------------------------


async def test_member_list_pagination(make_user: Callable[[str], Awaitable[User]]) -> None:
    ann = await make_user("ann")
    others = [await make_user(f"member{n}") for n in range(4)]
    sid = (await new_server(ann))["id"]
    await join(ann, sid, *others)
    path = f"/servers/{sid}/members"

    everyone = await others[0].call("GET", path)
    ids = [m["user"]["id"] for m in everyone]
    assert ids == sorted([ann.id] + [u.id for u in others], key=int)
    assert set(everyone[0]) == {
        "user",
        "nickname",
        "joined_at",
        "roles",
        "communication_disabled_until",
    }
    assert (everyone[0]["nickname"], everyone[0]["roles"]) == (None, [])
    assert everyone[0]["communication_disabled_until"] is None
    assert await ann.call("GET", f"{path}?after=0&limit=100") == everyone

    first = await ann.call("GET", f"{path}?limit=2")
    second = await ann.call("GET", f"{path}?limit=2&after={first[-1]['user']['id']}")
    third = await ann.call("GET", f"{path}?limit=2&after={second[-1]['user']['id']}")
    assert first + second + third == everyone
    assert len(third) == 1
    assert await ann.call("GET", f"{path}?after={ids[-1]}") == []
    assert await ann.call("GET", f"{path}?limit=1") == everyone[:1]

    for query, bad in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=", "limit"),
        ("limit=1e2", "limit"),
        ("after=abc", "after"),
        ("after=-5", "after"),
        ("after=", "after"),
    ]:
        response = await ann.client.request("GET", f"{API}{path}?{query}")
        assert response.status_code == 400, query
        assert bad in response.json()["error"]["fields"], query


async def test_leaving_a_server(
    relay_server: RunningServer, make_user: Callable[[str], Awaitable[User]]
) -> None:
    ann, bob = await make_user("ann"), await make_user("bob")
    sid = (await new_server(ann))["id"]
    await join(ann, sid, bob)
    ann_events = await listen(relay_server, ann)
    bob_events = await listen(relay_server, bob)

    assert await ann.error("DELETE", f"/servers/{sid}/members/@me") == (422, "owner_cannot_leave")
    assert await bob.status("DELETE", f"/servers/{sid}/members/@me") == (204, None)

    bob_user = {"id": bob.id, "username": "bob", "display_name": None}
    removed = ("MEMBER_REMOVE", {"server_id": sid, "user": bob_user})
    assert ann_events.take() == [removed]
    assert bob_events.take() == [removed, ("SERVER_DELETE", {"id": sid})]
    assert await bob.error("GET", f"/servers/{sid}") == (404, "unknown_server")
    assert await bob.error("DELETE", f"/servers/{sid}/members/@me") == (404, "unknown_server")
    assert [m["user"]["id"] for m in await ann.call("GET", f"/servers/{sid}/members")] == [ann.id]
    # Bob no longer hears the server.
    await ann.call("PATCH", f"/servers/{sid}", {"name": "Quiet"})
    assert bob_events.take() == []
    assert [t for t, _ in ann_events.take()] == ["SERVER_UPDATE"]


# -- DMs ---------------------------------------------------------------------------------------


async def test_direct_messages(
    relay_server: RunningServer, make_user: Callable[[str], Awaitable[User]]
) -> None:
    ann, bob, eve = await make_user("ann"), await make_user("bob"), await make_user("eve")
    sid = (await new_server(ann))["id"]
    await join(ann, sid, bob)
    ann_events = await listen(relay_server, ann)
    bob_events = await listen(relay_server, bob)

    status, dm = await ann.status("POST", "/users/@me/channels", {"recipient_id": bob.id})

    assert status == 201
    recipients = [
        {"id": u.id, "username": u.name, "display_name": None}
        for u in sorted([ann, bob], key=lambda u: int(u.id))
    ]
    assert dm == {
        "id": dm["id"],
        "server_id": None,
        "type": "dm",
        "name": None,
        "topic": None,
        "position": 0,
        "parent_id": None,
        "last_message_id": None,
        "created_at": dm["created_at"],
        "rate_limit_per_user": 0,
        "permissions_synced": False,
        "permission_overwrites": [],
        "recipients": recipients,
    }
    assert ann_events.take() == bob_events.take() == [("CHANNEL_CREATE", dm)]
    # Opening it again, from either side, returns the same channel.
    assert await ann.status("POST", "/users/@me/channels", {"recipient_id": bob.id}) == (200, dm)
    assert await bob.status("POST", "/users/@me/channels", {"recipient_id": ann.id}) == (200, dm)
    assert ann_events.take() == bob_events.take() == []
    assert await bob.call("GET", f"/channels/{dm['id']}") == dm
    assert await eve.error("GET", f"/channels/{dm['id']}") == (404, "unknown_channel")
    assert await ann.error("PATCH", f"/channels/{dm['id']}", {"name": "x"}) == (403, "dm_channel")
    assert await ann.error("DELETE", f"/channels/{dm['id']}") == (403, "dm_channel")
    assert await eve.error("DELETE", f"/channels/{dm['id']}") == (404, "unknown_channel")

    path = "/users/@me/channels"
    assert await ann.error("POST", path, {"recipient_id": ann.id}) == (400, "cannot_dm_self")
    assert await ann.error("POST", path, {"recipient_id": eve.id}) == (403, "no_shared_server")
    assert await eve.error("POST", path, {"recipient_id": ann.id}) == (403, "no_shared_server")
    assert await ann.error("POST", path, {"recipient_id": "123"}) == (404, "unknown_user")
    for body, bad in [
        ({}, "recipient_id"),
        ({"recipient_id": int(bob.id)}, "recipient_id"),
        ({"recipient_id": "bob"}, "recipient_id"),
        ({"recipient_id": "0"}, "recipient_id"),
        ({"recipient_id": "9" * 19}, "recipient_id"),
        ({"recipient_id": bob.id, "message": "hi"}, "message"),
    ]:
        assert bad in await ann.bad_field("POST", path, body)


# -- READY -------------------------------------------------------------------------------------


async def test_ready_helpers(
    relay_server: RunningServer, make_user: Callable[[str], Awaitable[User]]
) -> None:
    ann, bob, cat = await make_user("ann"), await make_user("bob"), await make_user("cat")
    first = await new_server(ann, "first")
    second = await new_server(bob, "second")
    await join(ann, first["id"], bob, cat)
    extra = await ann.call(
        "POST", f"/servers/{first['id']}/channels", {"name": "x", "type": "text"}
    )
    dm_ab = await bob.call("POST", "/users/@me/channels", {"recipient_id": ann.id})
    dm_bc = await bob.call("POST", "/users/@me/channels", {"recipient_id": cat.id})
    chat = relay_server.runtime.chat

    ready = await bob.call("GET", "/users/@me/servers")
    assert [s["id"] for s in ready] == [first["id"], second["id"]]
    states = [
        {
            **s,
            "channels": await bob.call("GET", f"/servers/{s['id']}/channels"),
            "roles": await bob.call("GET", f"/servers/{s['id']}/roles"),
        }
        for s in ready
    ]
    assert states[0]["channels"][-1] == extra

    assert to_builtins(await ready_states(chat, int(bob.id))) == states
    assert to_builtins(await dm_channels(chat, int(bob.id))) == [dm_ab, dm_bc]
    assert to_builtins(await dm_channels(chat, int(ann.id))) == [dm_ab]
    assert await ready_states(chat, 123) == []
    assert await dm_channels(chat, 123) == []
