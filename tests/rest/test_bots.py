"""Bot accounts through the real server: applications and their tokens (stolen, reset,
malformed), bots refused on account routes, adding a bot with a managed role (its rules, and
no escalation), bot rate limits, and a bot's gateway session closed with 4004 on a reset."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from sqlite_utils import Database

from relay.client import GatewayClosed, open_gateway
from relay.permissions import P
from relay.storage import users
from tests.conftest import settings_for, start_server
from tests.rest.conftest import API, add_role, gather, give, join, new_server, serve_shared

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

    from relay.client import Gateway
    from tests.rest.conftest import Person, SharedServer

BOT_REQUESTS_PER_S = 10
BOT_MESSAGE_RATE = 3


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServer]:
    settings = settings_for(
        tmp_path_factory.mktemp("bots"),
        presence_grace_s=0.2,
        bot_requests_per_s=BOT_REQUESTS_PER_S,
        bot_message_rate=BOT_MESSAGE_RATE,
    )
    yield from serve_shared(settings)


async def as_bot(
    server: SharedServer, token: str, method: str, path: str, body: Any = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as http:
        headers = {"Authorization": f"Bot {token}"}
        return await http.request(method, API + path, json=body, headers=headers)


async def until_closed(gw: Gateway) -> None:
    while True:
        await gw.receive()


def code_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_application_lifecycle_and_tokens(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    dev, other = await gather(partial(people, "dev"), partial(people, "other"))
    app = await dev.call("POST", "/applications", {"name": "Deploy Helper"})
    token = app["token"]
    assert app["owner_id"] == dev.id
    assert app["public"] is False
    assert app["bot"]["bot"] is True
    assert app["bot"]["display_name"] == "Deploy Helper"
    assert app["bot"]["username"].startswith("deploy_helper-bot")
    app_path = f"/applications/{app['id']}"
    listed = await dev.call("GET", "/applications")
    assert [a["id"] for a in listed] == [app["id"]]
    assert "token" not in listed[0]
    assert (await dev.call("GET", app_path))["name"] == "Deploy Helper"
    # Someone else's application is not there for them.
    for method in ("GET", "PATCH", "DELETE"):
        body = {"name": "x"} if method == "PATCH" else None
        assert (await other.error(method, app_path, body))[:2] == (404, "unknown_application")
    assert (await other.error("POST", f"{app_path}/bot/reset-token"))[:2] == (
        404,
        "unknown_application",
    )
    # Names: bounded, no control characters, nothing that passes for Relay itself.
    for bad in ({"name": ""}, {"name": "x" * 81}, {"name": "a\nb"}, {"name": "Relay Support"},
                {"name": "SYSTEM"}, {}, {"name": "ok", "admin": True}):  # fmt: skip
        assert (await dev.error("POST", "/applications", bad))[:2] == (400, "invalid_field"), bad
    renamed = await dev.call("PATCH", app_path, {"name": "Deployer"})
    assert renamed["bot"]["display_name"] == "Deployer"

    # The bot is a user with bot: true wherever users appear.
    me = await as_bot(shared_server, token, "GET", "/users/@me")
    assert me.status_code == 200, me.text
    assert me.json()["bot"] is True
    assert me.json()["has_password"] is False
    profile = await dev.call("GET", f"/users/{app['bot']['id']}")
    assert profile["bot"] is True
    assert "bot" not in await dev.call("GET", f"/users/{dev.id}")  # people: left out

    # Bots cannot use account routes; a bot has no password and cannot log in.
    refused = [
        ("POST", "/auth/logout", None),
        ("GET", "/auth/sessions", None),
        ("DELETE", "/auth/sessions/123", None),
        ("PATCH", "/users/@me", {"display_name": "x"}),
        ("POST", "/users/@me/keys", {"public_key": "A" * 43 + "="}),
        ("POST", "/applications", {"name": "child"}),
        ("GET", "/applications", None),
        ("POST", "/auth/refresh", {"refresh_token": token}),
        ("POST", "/auth/login", {"username": me.json()["username"], "password": "x" * 12}),
    ]
    for method, path, body in refused:
        response = await as_bot(shared_server, token, method, path, body)
        assert code_of(response) == (403, "bots_not_allowed"), (method, path, response.text)
    async with httpx.AsyncClient(base_url=shared_server.url) as http:
        login = await http.post(
            f"{API}/auth/login", json={"username": me.json()["username"], "password": "x" * 12}
        )
        assert code_of(login) == (401, "invalid_credentials")
        # Malformed and stolen-looking tokens.
        for header, code in [
            ("Bot not-a-token", "invalid_bot_token"),
            (f"Bot {token}x", "invalid_bot_token"),
            (f"Bearer {token}", "invalid_token"),
            (f"Bot{token}", "invalid_token"),
        ]:
            response = await http.get(f"{API}/users/@me", headers={"Authorization": header})
            assert code_of(response) == (401, code), header
        assert code_of(await http.get(f"{API}/users/@me", headers={"Authorization": "Bot"})) == (
            401,
            "invalid_bot_token",
        )

    # A reset shows a new token once; the old one is refused at once.
    reset = await dev.call("POST", f"{app_path}/bot/reset-token")
    assert reset["token"] != token
    assert reset["id"] == app["id"]
    assert code_of(await as_bot(shared_server, token, "GET", "/users/@me")) == (
        401,
        "invalid_bot_token",
    )
    assert (await as_bot(shared_server, reset["token"], "GET", "/users/@me")).status_code == 200

    await dev.call("DELETE", app_path)
    assert code_of(await as_bot(shared_server, reset["token"], "GET", "/users/@me")) == (
        401,
        "invalid_bot_token",
    )
    assert (await dev.error("GET", app_path))[:2] == (404, "unknown_application")
    assert await dev.call("GET", "/applications") == []


async def test_adding_a_bot_and_its_managed_role(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, dev, admin, member = await gather(
        partial(people, "owner"), partial(people, "dev"), partial(people, "admin"),
        partial(people, "member"),
    )  # fmt: skip
    server, text = await new_server(owner)
    await join(owner, server, admin, member)
    app = await dev.call("POST", "/applications", {"name": "Modbot"})
    bot_id = app["bot"]["id"]
    add = f"/servers/{server}/bots"
    wanted = str(int(P.VIEW_CHANNEL | P.SEND_MESSAGES | P.KICK_MEMBERS))
    body = {"application_id": app["id"], "permissions": wanted}

    # A private application: only its owner may add it (and must be in the server).
    assert (await owner.error("POST", add, body))[:2] == (404, "unknown_application")
    assert (await dev.error("POST", add, body))[:2] == (404, "unknown_server")
    await dev.call("PATCH", f"/applications/{app['id']}", {"public": True})
    # MANAGE_SERVER is needed; and nobody grants what they lack or adds above themselves.
    assert await member.error("POST", add, body) == (403, "missing_permission", "MANAGE_SERVER")
    managers = await add_role(owner, server, int(P.MANAGE_SERVER | P.VIEW_CHANNEL), position=5)
    await give(owner, server, admin, managers)
    assert await admin.error("POST", add, body) == (403, "missing_permission", "KICK_MEMBERS")
    low = {"application_id": app["id"], "permissions": str(int(P.VIEW_CHANNEL))}
    await owner.call("PATCH", f"/servers/{server}/roles", [{"id": managers, "position": 1}])
    assert (await admin.error("POST", add, low))[:2] == (403, "role_hierarchy")
    for bad in ({"application_id": "x", "permissions": "0"},
                {"application_id": app["id"], "permissions": str(1 << 62)},
                {"application_id": app["id"], "permissions": "-1"},
                {"application_id": "123"}):  # fmt: skip
        status, code, _ = await owner.error("POST", add, bad)
        assert (status, code) in {(400, "invalid_field"), (404, "unknown_application")}, bad

    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(member.token)
        added = await owner.call("POST", add, body)
        role = added["role"]
        assert role["managed"] is True
        assert role["permissions"] == wanted
        assert added["member"]["user"] == {
            "id": bot_id, "username": app["bot"]["username"], "display_name": "Modbot", "bot": True
        }  # fmt: skip
        assert added["member"]["roles"] == [role["id"]]
        assert (await gw.dispatch("ROLE_CREATE"))["d"]["role"] == role
        assert (await gw.dispatch("MEMBER_ADD"))["d"]["user"]["bot"] is True
        assert (await owner.error("POST", add, body))[:2] == (409, "bot_already_member")
        # A bot joins only when added: never through an invite or a public server.
        invite = await owner.call("POST", f"/servers/{server}/invites")
        for path in (f"/invites/{invite['code']}", f"/servers/{server}/join"):
            joined = await as_bot(shared_server, app["token"], "POST", path)
            assert code_of(joined) == (403, "bots_not_allowed"), path

        # A managed role cannot be changed, given, taken or deleted by hand.
        role_path = f"/servers/{server}/roles/{role['id']}"
        for method, path, rbody in [
            ("PATCH", role_path, {"name": "mine"}),
            ("PATCH", role_path, {"permissions": "0"}),
            ("DELETE", role_path, None),
            ("PUT", f"/servers/{server}/members/{member.id}/roles/{role['id']}", None),
            ("DELETE", f"/servers/{server}/members/{bot_id}/roles/{role['id']}", None),
            ("PATCH", f"/servers/{server}/roles", [{"id": role["id"], "position": 2}]),
        ]:
            assert (await owner.error(method, path, rbody))[:2] == (403, "managed_role"), path

        # The bot posts like a member; its messages say it is a bot.
        posted = await as_bot(
            shared_server, app["token"], "POST", f"/channels/{text}/messages", {"content": "hi"}
        )
        assert posted.status_code == 201, posted.text
        assert posted.json()["author"]["bot"] is True
        created = await gw.dispatch("MESSAGE_CREATE")
        assert created["d"]["author"]["id"] == bot_id
        assert created["d"]["author"]["bot"] is True
        members = await owner.call("GET", f"/servers/{server}/members")
        assert next(m for m in members if m["user"]["id"] == bot_id)["user"]["bot"] is True

        # A kick removes it, and its role with it.
        await owner.call("DELETE", f"/servers/{server}/members/{bot_id}")
        assert (await gw.dispatch("ROLE_DELETE"))["d"]["role_id"] == role["id"]
        roles = await owner.call("GET", f"/servers/{server}/roles")
        assert role["id"] not in [r["id"] for r in roles]
        gone = await as_bot(shared_server, app["token"], "GET", f"/servers/{server}/roles")
        assert code_of(gone) == (404, "unknown_server")

        # Added again, then the application deleted: it leaves, its role goes.
        again = await owner.call("POST", add, body)
        await dev.call("DELETE", f"/applications/{app['id']}")
        members = await owner.call("GET", f"/servers/{server}/members")
        assert bot_id not in [m["user"]["id"] for m in members]
        roles = await owner.call("GET", f"/servers/{server}/roles")
        assert again["role"]["id"] not in [r["id"] for r in roles]


async def test_bot_gateway_session_closes_on_reset(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    dev = await people("dev")
    app = await dev.call("POST", "/applications", {"name": "Watcher"})
    async with open_gateway(shared_server.ws_url) as gw:
        ready = await gw.identify(f"Bot {app['token']}")
        assert (ready["user"]["id"], ready["user"]["bot"]) == (app["bot"]["id"], True)
        await dev.call("POST", f"/applications/{app['id']}/bot/reset-token")
        with trio.fail_after(5), pytest.raises(GatewayClosed) as closed:
            await until_closed(gw)
        assert closed.value.code == 4004
    async with open_gateway(shared_server.ws_url) as gw:  # the old token cannot come back
        with trio.fail_after(5), pytest.raises(GatewayClosed) as closed:
            await gw.identify(f"Bot {app['token']}")
        assert closed.value.code == 4004


async def test_bot_rate_limits(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner = await people("owner")
    server, text = await new_server(owner)
    app = await owner.call("POST", "/applications", {"name": "Chatty"})
    await owner.call(
        "POST",
        f"/servers/{server}/bots",
        {"application_id": app["id"], "permissions": str(int(P.VIEW_CHANNEL | P.SEND_MESSAGES))},
    )
    statuses = []
    for n in range(BOT_MESSAGE_RATE + 1):
        path = f"/channels/{text}/messages"
        response = await as_bot(shared_server, app["token"], "POST", path, {"content": f"m{n}"})
        statuses.append(response.status_code)
    assert statuses == [201] * BOT_MESSAGE_RATE + [429]
    # Requests of any kind: a burst of bot_requests_per_s, then 429 with Retry-After.
    async with httpx.AsyncClient(base_url=shared_server.url) as http:
        headers = {"Authorization": f"Bot {app['token']}"}
        refused = None
        for _ in range(BOT_REQUESTS_PER_S * 3):
            response = await http.get(f"{API}/users/@me", headers=headers)
            if response.status_code == 429:
                refused = response
                break
        assert refused is not None
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
    # People are not affected by a bot's budget.
    assert (await owner.call("GET", "/users/@me"))["id"] == owner.id


async def test_bot_tokens_survive_a_restart_stored_hashed(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    running, shutdown = await start_server(nursery, settings)
    owner = running.client()
    await owner.register("owner", "correct horse battery")
    await owner.login("owner", "correct horse battery")
    app = await owner.call("POST", f"{API}/applications", {"name": "Keeper"})
    stale = await owner.call("POST", f"{API}/applications/{app['id']}/bot/reset-token")
    fresh = await owner.call("POST", f"{API}/applications/{app['id']}/bot/reset-token")
    disabled = await owner.call("POST", f"{API}/applications", {"name": "Disabled"})
    await shutdown()
    with sqlite3.connect(settings.db_path) as db:  # only the hash is on disk
        stored = db.execute("SELECT token_hash FROM applications WHERE id = ?", (int(app["id"]),))
        assert stored.fetchall() == [(hashlib.sha256(fresh["token"].encode()).digest(),)]
    # What `relay user disable` does to the second bot (its function, on the file).
    disable(settings.db_path, int(disabled["bot"]["id"]))
    running, shutdown = await start_server(nursery, settings)
    async with httpx.AsyncClient(base_url=running.url) as http:
        for token, status in [
            (fresh["token"], 200),
            (stale["token"], 401),
            (app["token"], 401),
            (disabled["token"], 401),
        ]:
            response = await http.get(f"{API}/users/@me", headers={"Authorization": f"Bot {token}"})
            assert response.status_code == status
        # Disabled while the server runs: within a poll its gateway session closes (4004) and
        # its token is refused.
        async with open_gateway(running.ws_url) as gw:
            await gw.identify(f"Bot {fresh['token']}")
            await trio.to_thread.run_sync(disable, settings.db_path, int(app["bot"]["id"]))
            with trio.fail_after(5), pytest.raises(GatewayClosed) as closed:
                await until_closed(gw)
            assert closed.value.code == 4004
        response = await http.get(
            f"{API}/users/@me", headers={"Authorization": f"Bot {fresh['token']}"}
        )
        assert code_of(response) == (401, "invalid_bot_token")
    await shutdown()


def disable(db_path: Path, user_id: int) -> None:
    """What `relay user disable` does, from another connection (users.set_disabled)."""
    database = Database(db_path)
    try:
        database.conn.execute("BEGIN IMMEDIATE")
        users.set_disabled(database, user_id, True, int(time.time() * 1000))
        database.conn.execute("COMMIT")
    finally:
        database.close()
