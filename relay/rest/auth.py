"""Account routes: /v1/api/auth/* and /v1/api/users/*."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from quart import Blueprint, Response, request

from relay import crypto
from relay.chat import commands, objects
from relay.chat import files as chat_files
from relay.chat import images as chat_images
from relay.chat import users as chat_users
from relay.chat.args import field_error, snowflake
from relay.chat.objects import iso
from relay.errors import NotFound
from relay.rest import bodies
from relay.rest.apidoc import doc
from relay.rest.files import body_chunks, decode_form_json, is_multipart
from relay.rest.http import (
    body,
    client_ip,
    json_response,
    no_bot_header,
    no_bots,
    no_content,
    principal,
)

if TYPE_CHECKING:
    from relay.accounts import Tokens
    from relay.runtime import Runtime
    from relay.storage.users import UserRow


def auth_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("auth", __name__, url_prefix="/v1/api/auth")

    async def login_result(user: UserRow, tokens: Tokens) -> Response:
        return json_response(
            bodies.LoginResult(
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_in=tokens.expires_in,
                session_id=str(tokens.session_id),
                user=await chat_users.me_of(rt.chat, user),
            )
        )

    @bp.post("/register")
    @doc(
        "Create an account, with a password, an Ed25519 public key or both",
        body=bodies.Register,
        response=objects.Me,
        status=201,
        errors=("username_taken", "key_taken"),
    )
    async def register() -> Response:
        data = await body(bodies.Register)
        if data.password is None and data.public_key is None:
            raise field_error("password", "give a password, a public_key, or both")
        key = chat_users.public_key(data.public_key) if data.public_key is not None else None
        rt.accounts.check_register_rate(client_ip())
        user = await rt.accounts.register(
            data.username.lower(), data.password, key, data.display_name, client_ip()
        )
        return json_response(await chat_users.me_of(rt.chat, user), 201)

    @bp.post("/login")
    @doc(
        "Log in with a password",
        body=bodies.Login,
        response=bodies.LoginResult,
        errors=("invalid_credentials", "account_disabled", "bots_not_allowed"),
    )
    async def login() -> Response:
        no_bot_header()
        data = await body(bodies.Login)
        rt.accounts.check_login_rate(data.username, client_ip())
        user, tokens = await rt.accounts.login_password(
            data.username, data.password, request.headers.get("User-Agent"), client_ip()
        )
        return await login_result(user, tokens)

    @bp.post("/challenge")
    @doc(
        "Get a single-use challenge to sign for a key login",
        body=bodies.ChallengeRequest,
        response=bodies.Challenge,
        errors=("bots_not_allowed",),
    )
    async def challenge() -> Response:
        no_bot_header()
        data = await body(bodies.ChallengeRequest)
        rt.accounts.check_login_rate(data.username, client_ip())
        raw, expires_at = await rt.accounts.challenge(data.username)
        return json_response(
            bodies.Challenge(challenge=crypto.b64encode(raw), expires_at=iso(expires_at))
        )

    @bp.post("/login/key")
    @doc(
        "Log in by signing a challenge with an Ed25519 key",
        body=bodies.KeyLogin,
        response=bodies.LoginResult,
        errors=("invalid_challenge", "invalid_signature", "account_disabled", "bots_not_allowed"),
    )
    async def login_key() -> Response:
        no_bot_header()
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
    @doc(
        "Trade a refresh token for new tokens (the old refresh token is spent)",
        body=bodies.Refresh,
        response=bodies.TokenPair,
        errors=(
            "invalid_refresh_token",
            "refresh_token_reused",
            "session_revoked",
            "account_disabled",
            "bots_not_allowed",
        ),
    )
    async def refresh() -> Response:
        no_bot_header()
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
    @doc("Log out: revoke this login's session", errors=("bots_not_allowed",))
    async def logout() -> Response:
        who = no_bots(principal(rt))
        await rt.accounts.revoke(who.user_id, who.session_id, "logout")
        return no_content()

    @bp.get("/sessions")
    @doc(
        "List the caller's logins",
        response=list[objects.LoginSession],
        errors=("bots_not_allowed",),
    )
    async def list_sessions() -> Response:
        who = no_bots(principal(rt))
        return json_response(await chat_users.logins(rt.chat, who))

    @bp.delete("/sessions/<session_id>")
    @doc("Revoke one of the caller's logins", errors=("unknown_session", "bots_not_allowed"))
    async def revoke_session(session_id: str) -> Response:
        who = no_bots(principal(rt))
        sid = snowflake(session_id, "session")
        if not await rt.accounts.revoke(who.user_id, sid, "revoked_by_user"):
            raise NotFound("unknown session", code="unknown_session")
        return no_content()

    return bp


_update_me = msgspec.json.Decoder(commands.UpdateMe)


def users_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("users", __name__, url_prefix="/v1/api/users")

    @bp.get("/@me")
    @doc("The caller's own account", response=objects.Me, errors=("unknown_user",))
    async def get_me() -> Response:
        return json_response(await chat_users.me(rt.chat, principal(rt).user_id))

    @bp.patch("/@me")
    @doc(
        "Change the caller's display name or password (a new password ends the other logins); "
        "as multipart/form-data (payload_json and an `avatar` part), the avatar too",
        body=commands.UpdateMe,
        response=objects.Me,
        errors=(
            "unknown_user",
            (403, "invalid_credentials"),
            "bots_not_allowed",
            "malformed_form",
            "bad_image",
            "file_too_large",
            "upload_too_slow",
            "insufficient_storage",
        ),
    )
    async def update_me() -> Response:
        who = no_bots(principal(rt))
        content_type = request.headers.get("Content-Type", "")
        if is_multipart(content_type):
            media = chat_files.media_of(rt.chat)
            media.require_disk()
            got = await chat_images.read_image_form(
                media, content_type, body_chunks(), "avatar", rt.settings.max_body_bytes
            )
            data = decode_form_json(got.payload, _update_me, commands.UpdateMe())
            if got.image is not None:  # first: a bad image changes nothing
                await chat_images.set_avatar(rt.chat, who.user_id, got.image)
        else:
            data = await body(commands.UpdateMe)
        me = await chat_users.update_me(rt.chat, rt.accounts, who, data, client_ip())
        return json_response(me)

    @bp.post("/@me/keys")
    @doc(
        "Add an Ed25519 public key to the caller's account",
        body=commands.AddKey,
        response=objects.Key,
        status=201,
        errors=("key_taken", "too_many_keys", "bots_not_allowed"),
    )
    async def add_key() -> Response:
        who = no_bots(principal(rt))
        data = await body(commands.AddKey)
        return json_response(await chat_users.add_key(rt.chat, who.user_id, data), 201)

    @bp.get("/<user_id>")
    @doc("A user's public profile", response=objects.User, errors=("unknown_user",))
    async def get_user(user_id: str) -> Response:
        principal(rt)
        return json_response(await chat_users.get(rt.chat, user_id))

    return bp
