"""Request and response bodies of the account API, as msgspec Structs.

Requests forbid unknown fields and bound every string, so a client cannot make the server hold
more than it allows. IDs go out as strings (snowflakes exceed JavaScript's safe integers).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from relay.chat.commands import Request
from relay.chat.objects import Me

Username = Annotated[str, Meta(min_length=2, max_length=32, pattern=r"^[A-Za-z0-9_.]+$")]
Password = Annotated[str, Meta(min_length=8, max_length=256)]
DisplayName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
AnyUsername = Annotated[str, Meta(min_length=1, max_length=64)]  # login: wrong is just a 401
AnyPassword = Annotated[str, Meta(min_length=1, max_length=256)]
Base64 = Annotated[str, Meta(min_length=1, max_length=128)]
Token = Annotated[str, Meta(min_length=1, max_length=256)]


class Register(Request, frozen=True):
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


class UpdateMe(Request, frozen=True):
    display_name: DisplayName | UnsetType | None = UNSET  # null clears it
    password: Password | UnsetType = UNSET
    current_password: AnyPassword | UnsetType = UNSET  # required to change an existing password


class AddKey(Request, frozen=True):
    public_key: Base64


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


class Session(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    created_at: str
    last_used_at: str
    expires_at: str
    user_agent: str | None
    ip: str | None
    current: bool
