"""Request and response bodies of the account API, as msgspec Structs.

Requests forbid unknown fields and bound every string, so a client cannot make the server hold
more than it allows. IDs go out as strings (snowflakes exceed JavaScript's safe integers).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from relay.chat.commands import AnyPassword, Base64, DisplayName, Password, Request
from relay.chat.objects import Me

Username = Annotated[str, Meta(min_length=2, max_length=32, pattern=r"^[A-Za-z0-9_.]+$")]
AnyUsername = Annotated[str, Meta(min_length=1, max_length=64)]  # login: wrong is just a 401
Token = Annotated[str, Meta(min_length=1, max_length=256)]


class Register(Request, frozen=True):
    """A password, a public_key (standard base64 of a 32-byte Ed25519 key), or both."""

    username: Username
    password: Password | None = None
    public_key: Base64 | None = None
    display_name: DisplayName | None = None


class Login(Request, frozen=True):
    username: AnyUsername
    password: AnyPassword


class ChallengeRequest(Request, frozen=True):
    username: AnyUsername


class KeyLogin(Request, frozen=True):
    username: AnyUsername
    challenge: Base64
    signature: Base64


class Refresh(Request, frozen=True):
    refresh_token: Token


class LoginResult(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    session_id: str
    user: Me


class TokenPair(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    session_id: str


class Challenge(msgspec.Struct, frozen=True, kw_only=True):
    challenge: str
    expires_at: str
