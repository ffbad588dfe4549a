"""Accounts end to end through the real server: register, the three logins, refresh, logout,
sessions, profile, keys, and the bad input each of them must refuse."""

from __future__ import annotations

import base64
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from nacl.signing import SigningKey

from relay.accounts import now_ms
from relay.client import KEY_LOGIN_PREFIX, ApiError, GatewayClosed, RelayClient, open_gateway
from relay.protocol.gateway import Close
from relay.storage import users
from relay.storage.sqlite.db import connect
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import Gateway
    from tests.conftest import RunningServer

PASSWORD = "correct horse battery"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def error_of(client: RelayClient, method: str, path: str, **kw: Any) -> tuple[int, str]:
    response = await client.request(method, path, **kw)
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str)
    return response.status_code, body["error"]["code"]


async def test_register_and_password_login(client: RelayClient) -> None:
    user = await client.register("Alice.B_1", PASSWORD, display_name="Alice")
    assert user["username"] == "alice.b_1"  # folded to lower case
    assert user["display_name"] == "Alice"
    assert user["has_password"] is True
    assert isinstance(user["id"], str)
    assert int(user["id"]) > 0
    result = await client.login("ALICE.b_1", PASSWORD)
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 900
    assert result["user"]["id"] == user["id"]
    me = await client.me()
    assert me["id"] == user["id"]
    assert "password_hash" not in me


async def test_username_is_unique_case_insensitively(client: RelayClient) -> None:
    await client.register("bob", PASSWORD)
    status, code = await error_of(
        client, "POST", "/v1/api/auth/register", json={"username": "BOB", "password": PASSWORD}
    )
    assert (status, code) == (409, "username_taken")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "a", "password": PASSWORD}, "username"),
        ({"username": "x" * 33, "password": PASSWORD}, "username"),
        ({"username": "no spaces", "password": PASSWORD}, "username"),
        ({"username": "émile", "password": PASSWORD}, "username"),
        ({"username": "carol", "password": "short"}, "password"),
        ({"username": "carol", "password": "p" * 257}, "password"),
        ({"username": "carol"}, "password"),
        ({"username": "carol", "public_key": "not base64!"}, "public_key"),
        ({"username": "carol", "public_key": b64(b"x" * 31)}, "public_key"),
        ({"username": 5, "password": PASSWORD}, "username"),
        ({"username": "carol", "password": PASSWORD, "admin": True}, "admin"),
        ({"username": "carol", "password": PASSWORD, "display_name": "a\nb"}, "display_name"),
        ({"password": PASSWORD}, "username"),
    ],
)
async def test_register_rejects_bad_fields(
    client: RelayClient, body: dict[str, Any], field: str
) -> None:
    response = await client.request("POST", "/v1/api/auth/register", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_field"
    assert field in error["fields"], error
    # Nothing was created.
    check = await client.request(
        "POST", "/v1/api/auth/login", json={"username": "carol", "password": PASSWORD}
    )
    assert check.status_code == 401


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"", "missing_body"),
        (b"[1, 2]", "invalid_field"),
        (b'"text"', "invalid_field"),
        (b'{"username": "dave", "password": "' + b"\xff" * 10 + b'"}', "malformed_json"),
    ],
)
async def test_malformed_bodies(client: RelayClient, content: bytes, code: str) -> None:
    status, got = await error_of(
        client,
        "POST",
        "/v1/api/auth/register",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert (status, got) == (400, code)


async def test_wrong_password_and_unknown_user(client: RelayClient) -> None:
    await client.register("erin", PASSWORD)
    for body in (
        {"username": "erin", "password": "wrong password"},
        {"username": "nobody", "password": PASSWORD},
    ):
        status, code = await error_of(client, "POST", "/v1/api/auth/login", json=body, token="")
        assert (status, code) == (401, "invalid_credentials")


async def test_key_only_account_cannot_use_password_login(client: RelayClient) -> None:
    key = SigningKey.generate()
    user = await client.register("keyonly", public_key=bytes(key.verify_key))
    assert user["has_password"] is False
    assert user["keys"][0]["public_key"] == b64(bytes(key.verify_key))
    status, code = await error_of(
        client, "POST", "/v1/api/auth/login", json={"username": "keyonly", "password": PASSWORD}
    )
    assert (status, code) == (401, "invalid_credentials")
    result = await client.login_with_key("keyonly", key)
    assert result["user"]["id"] == user["id"]


async def key_login(
    client: RelayClient, username: str, challenge: bytes, signature: bytes
) -> tuple[int, str]:
    body = {"username": username, "challenge": b64(challenge), "signature": b64(signature)}
    response = await client.request("POST", "/v1/api/auth/login/key", json=body, token="")
    if response.status_code == 200:
        return 200, "ok"
    return response.status_code, response.json()["error"]["code"]


async def test_key_login_challenge_rules(client: RelayClient) -> None:
    key = SigningKey.generate()
    other = SigningKey.generate()
    await client.register("frank", PASSWORD, public_key=bytes(key.verify_key))

    challenge = await client.challenge("frank")
    assert len(challenge) == 32
    # Signed by a key the account does not have; the challenge is spent by the attempt.
    signed = other.sign(KEY_LOGIN_PREFIX + challenge).signature
    assert await key_login(client, "frank", challenge, signed) == (401, "invalid_signature")
    good = key.sign(KEY_LOGIN_PREFIX + challenge).signature
    assert await key_login(client, "frank", challenge, good) == (401, "invalid_challenge")

    # Signature over the raw challenge, without the domain prefix.
    challenge = await client.challenge("frank")
    raw = key.sign(challenge).signature
    assert await key_login(client, "frank", challenge, raw) == (401, "invalid_signature")

    # A correct login works once; replaying it fails.
    challenge = await client.challenge("frank")
    good = key.sign(KEY_LOGIN_PREFIX + challenge).signature
    assert await key_login(client, "frank", challenge, good) == (200, "ok")
    assert await key_login(client, "frank", challenge, good) == (401, "invalid_challenge")

    # A challenge that was never issued, and one issued for another user.
    made_up = bytes(32)
    forged = key.sign(KEY_LOGIN_PREFIX + made_up).signature
    assert await key_login(client, "frank", made_up, forged) == (401, "invalid_challenge")
    await client.register("grace", PASSWORD)
    for_grace = await client.challenge("grace")
    signed = key.sign(KEY_LOGIN_PREFIX + for_grace).signature
    assert await key_login(client, "frank", for_grace, signed) == (401, "invalid_challenge")

    # Unknown users still get a challenge (no username probing), which never works.
    ghost = await client.challenge("ghost")
    signed = key.sign(KEY_LOGIN_PREFIX + ghost).signature
    assert await key_login(client, "ghost", ghost, signed) == (401, "invalid_signature")

    # Malformed encodings are 400s naming the field.
    response = await client.request(
        "POST",
        "/v1/api/auth/login/key",
        json={"username": "frank", "challenge": "%%%", "signature": b64(good)},
    )
    assert response.json()["error"]["fields"] == {
        "challenge": response.json()["error"]["fields"]["challenge"]
    }
    response = await client.request(
        "POST",
        "/v1/api/auth/login/key",
        json={"username": "frank", "challenge": b64(made_up), "signature": b64(b"short")},
    )
    assert "signature" in response.json()["error"]["fields"]


async def test_expired_challenge(nursery: trio.Nursery, tmp_path: Path) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, challenge_ttl_s=1))
    key = SigningKey.generate()
    async with running.client() as client:
        await client.register("heidi", public_key=bytes(key.verify_key))
        challenge = await client.challenge("heidi")
        await trio.sleep(1.1)
        signed = key.sign(KEY_LOGIN_PREFIX + challenge).signature
        assert await key_login(client, "heidi", challenge, signed) == (401, "invalid_challenge")
    await shutdown()


async def test_refresh_rotates_and_reuse_revokes_the_family(client: RelayClient) -> None:
    await client.register("ivan", PASSWORD)
    first = await client.login("ivan", PASSWORD)
    second = await client.refresh()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["session_id"] == first["session_id"]
    await client.me()  # the new access token works

    # Replaying the spent token (a thief, say) revokes the whole session...
    response = await client.request(
        "POST", "/v1/api/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "refresh_token_reused"
    # ...so the legitimate holder's newer refresh token and access token stop working too.
    with pytest.raises(ApiError) as caught:
        await client.refresh()
    assert caught.value.code == "session_revoked"
    status, code = await error_of(client, "GET", "/v1/api/users/@me", token=second["access_token"])
    assert (status, code) == (401, "session_revoked")


async def test_unknown_refresh_token(client: RelayClient) -> None:
    status, code = await error_of(
        client, "POST", "/v1/api/auth/refresh", json={"refresh_token": "made-up"}
    )
    assert (status, code) == (401, "invalid_refresh_token")


async def test_logout_revokes_access_and_refresh(client: RelayClient) -> None:
    await client.register("judy", PASSWORD)
    tokens = await client.login("judy", PASSWORD)
    await client.logout()
    status, code = await error_of(client, "GET", "/v1/api/users/@me", token=tokens["access_token"])
    assert (status, code) == (401, "session_revoked")
    response = await client.request(
        "POST", "/v1/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert response.json()["error"]["code"] == "session_revoked"


async def test_sessions_list_and_revoke(relay_server: RunningServer) -> None:
    async with relay_server.client() as laptop, relay_server.client() as phone:
        await laptop.register("kim", PASSWORD)
        await laptop.login("kim", PASSWORD)
        await phone.login("kim", PASSWORD)
        sessions = await laptop.call("GET", "/v1/api/auth/sessions")
        assert len(sessions) == 2
        assert [s["current"] for s in sessions] == [True, False]
        phone_session = sessions[1]["id"]
        await laptop.call("DELETE", f"/v1/api/auth/sessions/{phone_session}")
        with pytest.raises(ApiError) as caught:
            await phone.me()
        assert caught.value.code == "session_revoked"
        assert len(await laptop.call("GET", "/v1/api/auth/sessions")) == 1
        # Revoking it again, or a made-up or malformed id, is a 404.
        for sid in (phone_session, "123", "not-an-id"):
            status, code = await error_of(laptop, "DELETE", f"/v1/api/auth/sessions/{sid}")
            assert (status, code) == (404, "unknown_session")


async def test_cannot_revoke_someone_elses_session(relay_server: RunningServer) -> None:
    async with relay_server.client() as a, relay_server.client() as b:
        await a.register("leo", PASSWORD)
        await b.register("mia", PASSWORD)
        await a.login("leo", PASSWORD)
        result = await b.login("mia", PASSWORD)
        status, _ = await error_of(a, "DELETE", f"/v1/api/auth/sessions/{result['session_id']}")
        assert status == 404
        await b.me()


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_token"),
        ("Basic abc", "invalid_token"),
        ("Bearer", "invalid_token"),
        ("Bearer not.a.jwt", "invalid_token"),
    ],
)
async def test_missing_or_malformed_token(
    client: RelayClient, header: str | None, code: str
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = await client.http.get("/v1/api/users/@me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


async def test_tampered_and_expired_tokens(
    client: RelayClient, relay_server: RunningServer
) -> None:
    import jwt

    await client.register("nina", PASSWORD)
    tokens = await client.login("nina", PASSWORD)
    header, _payload, signature = tokens["access_token"].split(".")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    other = dict(claims, sub="1")
    forged_payload = jwt.encode(other, "x" * 32, algorithm="HS256").split(".")[1]
    for token in (
        f"{header}.{forged_payload}.{signature}",  # someone else's id under nina's signature
        jwt.encode(other, "guessed-secret-guessed-secret-00", algorithm="HS256"),
        jwt.encode(claims, "", algorithm="none"),
        tokens["access_token"][:-2] + ("AA" if not tokens["access_token"].endswith("AA") else "BB"),
    ):
        status, code = await error_of(client, "GET", "/v1/api/users/@me", token=token)
        assert (status, code) == (401, "invalid_token"), token
    # An expired token signed with the server's real key (read from its database).
    import sqlite3

    db = sqlite3.connect(relay_server.settings.db_path)
    key = db.execute(
        "SELECT value FROM server_secrets WHERE name = 'token_signing_key'"
    ).fetchone()[0]
    db.close()
    expired = jwt.encode(
        dict(claims, iat=claims["iat"] - 2000, exp=claims["iat"] - 1000), key, algorithm="HS256"
    )
    status, code = await error_of(client, "GET", "/v1/api/users/@me", token=expired)
    assert (status, code) == (401, "token_expired")
    valid = jwt.encode(claims, key, algorithm="HS256")
    assert (await client.request("GET", "/v1/api/users/@me", token=valid)).status_code == 200


async def test_profile_update_and_password_change(relay_server: RunningServer) -> None:
    async with relay_server.client() as main, relay_server.client() as other:
        await main.register("olga", PASSWORD)
        await main.login("olga", PASSWORD)
        await other.login("olga", PASSWORD)
        me = await main.call("PATCH", "/v1/api/users/@me", {"display_name": "Olga K"})
        assert me["display_name"] == "Olga K"
        me = await main.call("PATCH", "/v1/api/users/@me", {})
        assert me["display_name"] == "Olga K"  # absent fields stay as they were
        me = await main.call("PATCH", "/v1/api/users/@me", {"display_name": None})
        assert me["display_name"] is None

        status, code = await error_of(
            main, "PATCH", "/v1/api/users/@me", json={"password": "new password 1"}
        )
        assert (status, code) == (400, "invalid_field")
        status, code = await error_of(
            main,
            "PATCH",
            "/v1/api/users/@me",
            json={"password": "new password 1", "current_password": "wrong"},
        )
        assert (status, code) == (403, "invalid_credentials")
        await main.call(
            "PATCH",
            "/v1/api/users/@me",
            {"password": "new password 1", "current_password": PASSWORD},
        )
        # The session that changed it lives on; every other session is signed out.
        await main.me()
        with pytest.raises(ApiError):
            await other.me()
        with pytest.raises(ApiError):
            await other.login("olga", PASSWORD)
        await other.login("olga", "new password 1")


async def test_add_key_then_login_with_it(client: RelayClient) -> None:
    await client.register("pat", PASSWORD)
    await client.login("pat", PASSWORD)
    key = SigningKey.generate()
    added = await client.call(
        "POST", "/v1/api/users/@me/keys", {"public_key": b64(bytes(key.verify_key))}
    )
    assert added["public_key"] == b64(bytes(key.verify_key))
    status, code = await error_of(
        client, "POST", "/v1/api/users/@me/keys", json={"public_key": b64(bytes(key.verify_key))}
    )
    assert (status, code) == (409, "key_taken")
    status, code = await error_of(
        client, "POST", "/v1/api/users/@me/keys", json={"public_key": "AAAA"}
    )
    assert (status, code) == (400, "invalid_field")
    async with RelayClient(str(client.http.base_url)) as fresh:
        await fresh.login_with_key("pat", key)
        assert len((await fresh.me())["keys"]) == 1


async def test_key_limit(nursery: trio.Nursery, tmp_path: Path) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, max_keys_per_user=2))
    async with running.client() as client:
        key = SigningKey.generate()
        await client.register("quinn2", public_key=bytes(key.verify_key))
        await client.login_with_key("quinn2", key)
        body = {"public_key": b64(bytes(SigningKey.generate().verify_key))}
        await client.call("POST", "/v1/api/users/@me/keys", body)
        body = {"public_key": b64(bytes(SigningKey.generate().verify_key))}
        status, code = await error_of(client, "POST", "/v1/api/users/@me/keys", json=body)
        assert (status, code) == (422, "too_many_keys")
    await shutdown()


async def test_get_user_by_id(client: RelayClient) -> None:
    user = await client.register("rita", PASSWORD, display_name="Rita")
    await client.login("rita", PASSWORD)
    public = await client.call("GET", f"/v1/api/users/{user['id']}")
    assert public == {
        "id": user["id"],
        "username": "rita",
        "display_name": "Rita",
        "created_at": user["created_at"],
    }
    for unknown in ("1", "abc", "99999999999999999999999"):
        status, code = await error_of(client, "GET", f"/v1/api/users/{unknown}")
        assert (status, code) == (404, "unknown_user")
    status, code = await error_of(client, "GET", f"/v1/api/users/{user['id']}", token="")
    assert (status, code) == (401, "missing_token")


async def test_login_rate_limited_per_username(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, login_per_username=3, rate_window_s=600)
    running, shutdown = await start_server(nursery, settings)
    async with running.client() as client:
        await client.register("sam", PASSWORD)
        body = {"username": "sam", "password": "wrong password"}
        for _ in range(3):
            response = await client.request("POST", "/v1/api/auth/login", json=body)
            assert response.status_code == 401
        response = await client.request("POST", "/v1/api/auth/login", json=body)
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert float(response.headers["X-RateLimit-Reset-After"]) > 0
        # Even the right password is refused while limited; other usernames are not affected.
        body["password"] = PASSWORD
        assert (await client.request("POST", "/v1/api/auth/login", json=body)).status_code == 429
        response = await client.request("POST", "/v1/api/auth/challenge", json={"username": "SAM"})
        assert response.status_code == 429
        await client.register("tom", PASSWORD)
        await client.login("tom", PASSWORD)
    await shutdown()


async def test_refreshes_count_per_ip_not_against_one_shared_username(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # Refreshes once all went to the username bucket "": a few clients' refreshes used it up
    # and every other refresh on the server was refused.
    settings = settings_for(tmp_path, login_per_username=2, login_per_ip=100, rate_window_s=600)
    running, shutdown = await start_server(nursery, settings)
    for name in ("ann", "bob", "cat", "dan"):
        async with running.client() as client:
            await client.register(name, PASSWORD)
            await client.login(name, PASSWORD)
            await client.refresh()
    await shutdown()


async def test_login_rate_limited_per_ip(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, login_per_ip=4, register_per_ip=2, rate_window_s=600)
    running, shutdown = await start_server(nursery, settings)
    async with running.client() as client:
        await client.register("uma", PASSWORD)
        await client.register("vic", PASSWORD)
        status, code = await error_of(
            client, "POST", "/v1/api/auth/register", json={"username": "wes", "password": PASSWORD}
        )
        assert (status, code) == (429, "rate_limited")
        for name in ("a1", "a2", "a3", "a4"):
            body = {"username": name, "password": PASSWORD}
            assert (
                await client.request("POST", "/v1/api/auth/login", json=body)
            ).status_code == 401
        body = {"username": "uma", "password": PASSWORD}
        assert (await client.request("POST", "/v1/api/auth/login", json=body)).status_code == 429
    await shutdown()


async def test_a_wrong_password_flood_does_not_hold_up_another_addresss_login(
    relay_server: RunningServer,
) -> None:
    # Password hashes run two at a time. Four addresses send 8 wrong passwords each (the most
    # one address may have in flight); once the first is answered, a fifth logs in. In one FIFO
    # it waited for the whole flood: at most one flood login finished after it.
    async with relay_server.client() as client:
        await client.register("zoe", PASSWORD)
    finished: list[tuple[str, int]] = []
    first_answer = trio.Event()

    def from_address(ip: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=ip)
        return httpx.AsyncClient(base_url=relay_server.url, transport=transport, timeout=60)

    async def login(http: httpx.AsyncClient, who: str, password: str) -> None:
        body = {"username": "zoe", "password": password}
        response = await http.post("/v1/api/auth/login", json=body)
        finished.append((who, response.status_code))
        first_answer.set()

    async with AsyncExitStack() as clients:
        flooders = [
            await clients.enter_async_context(from_address(f"127.0.0.{i}")) for i in (1, 2, 3, 4)
        ]
        quiet = await clients.enter_async_context(from_address("127.0.0.5"))
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for http in flooders:
                    for _ in range(8):
                        nursery.start_soon(login, http, "flood", "wrong password")
                await first_answer.wait()
                nursery.start_soon(login, quiet, "quiet", PASSWORD)
    assert sorted(set(finished)) == [("flood", 401), ("quiet", 200)]
    floods_after = len(finished) - 1 - finished.index(("quiet", 200))
    assert floods_after >= 16, finished


async def test_a_login_beyond_the_cap_revokes_the_least_recently_used(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, max_logins_per_user=2))
    key = SigningKey.generate()
    async with running.client() as first, running.client() as second:
        await first.register("kim", public_key=bytes(key.verify_key))
        await first.login_with_key("kim", key)
        await second.login_with_key("kim", key)
        await first.refresh()  # used more recently than the second now
        async with running.client() as third:
            await third.login_with_key("kim", key)
            status, code = await error_of(second, "GET", "/v1/api/users/@me")
            assert (status, code) == (401, "session_revoked")
            status, code = await error_of(
                second, "POST", "/v1/api/auth/refresh", json={"refresh_token": second.refresh_token}
            )
            assert status == 401
            await first.me()
            await third.me()
            sessions = await third.call("GET", "/v1/api/auth/sessions")
            assert len(sessions) == 2
    await shutdown()


async def close_code(gateway: Gateway) -> int | None:
    """Read until the server closes the gateway connection (within 5 s); its close code."""
    with trio.fail_after(5):
        try:
            while True:
                await gateway.receive()
        except GatewayClosed as e:
            return e.code


def set_disabled(db_path: Path, user_id: int, disabled: bool) -> list[int]:
    """Disable or enable an account from another connection, as the admin CLI does."""
    db = connect(db_path)
    try:
        db.conn.execute("BEGIN IMMEDIATE")
        ended = users.set_disabled(db, user_id, disabled, now_ms())
        db.conn.execute("COMMIT")
    finally:
        db.close()
    return ended


async def test_an_account_disabled_by_another_process_is_logged_out_within_a_poll(
    relay_server: RunningServer,
) -> None:
    alice = relay_server.client()
    user = await alice.register("alice", PASSWORD)
    await alice.login("alice", PASSWORD)
    key = SigningKey.generate()
    await alice.call("POST", "/v1/api/users/@me/keys", {"public_key": b64(bytes(key.verify_key))})
    bob = relay_server.client()
    bob_key = SigningKey.generate()
    await bob.register("bob", public_key=bytes(bob_key.verify_key))
    await bob.login_with_key("bob", bob_key)
    path = relay_server.settings.db_path

    async with open_gateway(relay_server.ws_url) as gateway:
        await gateway.identify(alice.access_token or "")
        ended = await trio.to_thread.run_sync(set_disabled, path, int(user["id"]), True)
        assert len(ended) == 1
        # The server polls for revocations it did not make (REVOCATION_POLL_S): the gateway
        # session is closed as for a logout, without waiting for the token to expire.
        assert await close_code(gateway) == Close.AUTHENTICATION_FAILED

    assert await error_of(alice, "GET", "/v1/api/users/@me") == (401, "session_revoked")
    refresh = {"refresh_token": alice.refresh_token}
    assert await error_of(alice, "POST", "/v1/api/auth/refresh", json=refresh) == (
        403,
        "account_disabled",
    )
    login = {"username": "alice", "password": PASSWORD}
    assert await error_of(alice, "POST", "/v1/api/auth/login", json=login) == (
        403,
        "account_disabled",
    )
    wrong = {"username": "alice", "password": "not the password"}  # tells nothing more
    assert await error_of(alice, "POST", "/v1/api/auth/login", json=wrong) == (
        401,
        "invalid_credentials",
    )
    with pytest.raises(ApiError) as refused:
        await alice.login_with_key("alice", key)
    assert (refused.value.status, refused.value.code) == (403, "account_disabled")
    assert (await bob.me())["username"] == "bob"

    assert await trio.to_thread.run_sync(set_disabled, path, int(user["id"]), False) == []
    await alice.login_with_key("alice", key)
    assert (await alice.me())["username"] == "alice"
