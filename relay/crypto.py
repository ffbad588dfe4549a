"""Pure cryptographic helpers: password hashes (argon2id), Ed25519 signatures (PyNaCl), signed
access tokens (JWT, HS256, via PyJWT) and opaque refresh tokens stored as SHA-256 hashes.

Argon2 is deliberately slow (tens of ms): callers run hash/verify in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from typing import Any

import jwt
import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

KEY_LOGIN_PREFIX = b"relay-login-v1:"
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError, UnicodeEncodeError):  # non-ASCII hash: malformed
        return False


def b64decode_exact(text: str, size: int | None = None) -> bytes | None:
    """Standard base64 (with padding) to bytes, or None if malformed or of the wrong size."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    if size is not None and len(raw) != size:
        return None
    return raw


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def verify_login_signature(public_key: bytes, challenge: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature over b"relay-login-v1:" + challenge."""
    try:
        VerifyKey(public_key).verify(KEY_LOGIN_PREFIX + challenge, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """Refresh tokens are 256 random bits, so one SHA-256 pass is enough (no salt, no argon2)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


class AccessClaims(msgspec.Struct, frozen=True):
    user_id: int
    session_id: int
    expires_at: int  # Unix seconds


class TokenError(Exception):
    """An access token that is malformed, tampered with or expired (`code` says which)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TokenSigner:
    """Issues and checks short-lived access tokens: JWTs signed with HMAC-SHA256."""

    _ALGORITHM = "HS256"

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the signing key needs at least 32 bytes")
        self._key = key

    def issue(self, user_id: int, session_id: int, now_s: int, ttl_s: int) -> str:
        payload = {
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": now_s,
            "exp": now_s + ttl_s,
            "typ": "access",
        }
        return jwt.encode(payload, self._key, algorithm=self._ALGORITHM)

    def verify(self, token: str, now_s: int) -> AccessClaims:
        """Raises TokenError("token_expired" | "invalid_token")."""
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[self._ALGORITHM],
                # Expiry is checked below against now_s; PyJWT checks iat against the wall clock.
                options={
                    "require": ["sub", "sid", "exp", "iat"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            claims = AccessClaims(
                user_id=int(payload["sub"]),
                session_id=int(payload["sid"]),
                expires_at=int(payload["exp"]),
            )
        except (jwt.InvalidTokenError, ValueError, TypeError, KeyError):
            raise TokenError(
                "invalid_token", "the access token is malformed or tampered with"
            ) from None
        if payload.get("typ") != "access":
            raise TokenError("invalid_token", "not an access token")
        if claims.expires_at <= now_s:
            raise TokenError("token_expired", "the access token has expired; refresh it")
        return claims
