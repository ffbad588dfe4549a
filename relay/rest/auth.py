"""Account routes: /v1/api/auth/* and /v1/api/users/*."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from relay import crypto
from relay.accounts import now_ms
from relay.chat.args import field_error, snowflake
from relay.chat.objects import iso, key_out, me_out, user_out
from relay.errors import Forbidden, NotFound
from relay.rest import bodies
from relay.rest.http import body, client_ip, json_response, no_content, principal
from relay.storage import users

if TYPE_CHECKING:
    from relay.accounts import Tokens
    from relay.runtime import Runtime
    from relay.storage.users import UserRow


def public_key(text: str) -> bytes:
    raw = crypto.b64decode_exact(text, 32)
    if raw is None:
        raise field_error("public_key", "must be standard base64 of a 32-byte Ed25519 key")
    return raw


def auth_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("auth", __name__, url_prefix="/v1/api/auth")

    async def login_result(user: UserRow, tokens: Tokens) -> Response:
        keys = await rt.store.read(users.list_keys, user.id)
        return json_response(
            bodies.LoginResult(
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_in=tokens.expires_in,
                session_id=str(tokens.session_id),
                user=me_out(user, keys),
            )
        )

    @bp.post("/register")
    async def register() -> Response:
        data = await body(bodies.Register)
        if data.password is None and data.public_key is None:
            raise field_error("password", "give a password, a public_key, or both")
        key = public_key(data.public_key) if data.public_key is not None else None
        rt.accounts.check_register_rate(client_ip())
        user = await rt.accounts.register(
            data.username.lower(), data.password, key, data.display_name, client_ip()
        )
        keys = await rt.store.read(users.list_keys, user.id)
        return json_response(me_out(user, keys), 201)

    @bp.post("/login")
    async def login() -> Response:
        data = await body(bodies.Login)
        rt.accounts.check_login_rate(data.username, client_ip())
        user, tokens = await rt.accounts.login_password(
            data.username, data.password, request.headers.get("User-Agent"), client_ip()
        )
        return await login_result(user, tokens)

    @bp.post("/challenge")
    async def challenge() -> Response:
        data = await body(bodies.ChallengeRequest)
        rt.accounts.check_login_rate(data.username, client_ip())
        raw, expires_at = await rt.accounts.challenge(data.username)
        return json_response(
            bodies.Challenge(challenge=crypto.b64encode(raw), expires_at=iso(expires_at))
        )

    @bp.post("/login/key")
    async def login_key() -> Response:
        data = await body(bodies.KeyLogin)
        rt.accounts.check_login_rate(data.username, client_ip())
        challenge = crypto.b64decode_exact(data.challenge, 32)
        if challenge is None:
            raise field_error("challenge", "must be the base64 challenge the server issued")
        signature = crypto.b64decode_exact(data.signature, 64)
        if signature is None:
            raise field_error("signature", "must be standard base64 of a 64-byte signature")
        user, tokens = await rt.accounts.login_key(
            data.username, challenge, signature, request.headers.get("User-Agent"), client_ip()
        )
        return await login_result(user, tokens)

    @bp.post("/refresh")
    async def refresh() -> Response:
        data = await body(bodies.Refresh)
        rt.accounts.check_login_rate(None, client_ip())
        _, tokens = await rt.accounts.refresh(data.refresh_token)
        return json_response(
            bodies.TokenPair(
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_in=tokens.expires_in,
                session_id=str(tokens.session_id),
            )
        )

    @bp.post("/logout")
    async def logout() -> Response:
        who = principal(rt)
        await rt.accounts.revoke(who.user_id, who.session_id, "logout")
        return no_content()

    @bp.get("/sessions")
    async def list_sessions() -> Response:
        who = principal(rt)
        rows = await rt.store.read(users.list_sessions, who.user_id, now_ms())
        return json_response(
            [
                bodies.Session(
                    id=str(s.id),
                    created_at=iso(s.created_at),
                    last_used_at=iso(s.last_used_at),
                    expires_at=iso(s.expires_at),
                    user_agent=s.user_agent,
                    ip=s.ip,
                    current=s.id == who.session_id,
                )
                for s in rows
            ]
        )

    @bp.delete("/sessions/<session_id>")
    async def revoke_session(session_id: str) -> Response:
        who = principal(rt)
        sid = snowflake(session_id, "session")
        if not await rt.accounts.revoke(who.user_id, sid, "revoked_by_user"):
            raise NotFound("unknown session", code="unknown_session")
        return no_content()

    return bp


def users_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("users", __name__, url_prefix="/v1/api/users")

    async def load_me(user_id: int) -> UserRow:
        user = await rt.store.read(users.get_user, user_id)
        if user is None:  # the account was deleted while a token was still live
            raise NotFound("unknown user", code="unknown_user")
        return user

    @bp.get("/@me")
    async def get_me() -> Response:
        me = await load_me(principal(rt).user_id)
        return json_response(me_out(me, await rt.store.read(users.list_keys, me.id)))

    @bp.patch("/@me")
    async def update_me() -> Response:
        who = principal(rt)
        data = await body(bodies.UpdateMe)
        me = await load_me(who.user_id)
        new_hash = None
        if isinstance(data.password, str):
            if me.password_hash is not None:
                if not isinstance(data.current_password, str):
                    raise field_error("current_password", "required to change the password")
                current = data.current_password
                if not await rt.accounts.verify_password(me.password_hash, current, client_ip()):
                    raise Forbidden("current_password is wrong", code="invalid_credentials")
            new_hash = await rt.accounts.hash_password(data.password, client_ip())
        display_name = data.display_name if isinstance(data.display_name, str) else None
        updated = await rt.store.write(
            users.update_user,
            who.user_id,
            now_ms(),
            display_name=display_name,
            clear_display_name=data.display_name is None,
            password_hash=new_hash,
        )
        if new_hash is not None:  # a new password ends every other login
            await rt.accounts.revoke_all(who.user_id, "password_changed", keep=who.session_id)
        keys = await rt.store.read(users.list_keys, who.user_id)
        return json_response(me_out(updated, keys))

    @bp.post("/@me/keys")
    async def add_key() -> Response:
        who = principal(rt)
        data = await body(bodies.AddKey)
        key = await rt.store.write(
            users.add_key,
            rt.store.ids.next(),
            who.user_id,
            public_key(data.public_key),
            now_ms(),
            rt.settings.max_keys_per_user,
        )
        return json_response(key_out(key), 201)

    @bp.get("/<user_id>")
    async def get_user(user_id: str) -> Response:
        principal(rt)
        user = await rt.store.read(users.get_user, snowflake(user_id, "user"))
        if user is None:
            raise NotFound("unknown user", code="unknown_user")
        return json_response(user_out(user))

    return bp
