"""Pure crypto helpers: argon2 passwords, exact base64, Ed25519 key-login signatures, HS256 access
tokens and refresh-token hashes. Argon2 is slow, so the suite hashes only a handful of times."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from relay import crypto
from relay.crypto import AccessClaims, TokenError, TokenSigner

PASSWORD = "correct horse battery staple"
KEY = b"k" * 32
NOW = 1_700_000_000


@pytest.fixture(scope="module")
def password_hash() -> str:
    return crypto.hash_password(PASSWORD)


# -- passwords --------------------------------------------------------------------------------


def test_password_hash_is_argon2id_and_salted(password_hash: str) -> None:
    assert password_hash.startswith("$argon2id$")
    assert PASSWORD not in password_hash
    assert crypto.hash_password(PASSWORD) != password_hash  # a fresh salt every time


def test_verify_password(password_hash: str) -> None:
    assert crypto.verify_password(password_hash, PASSWORD) is True
    assert crypto.verify_password(password_hash, PASSWORD + " ") is False


def test_verify_password_against_another_hash(password_hash: str) -> None:
    # Same parameters, another salt and digest: well formed, just not this password's hash.
    params = password_hash.rsplit("$", 2)[0]
    assert (
        crypto.verify_password(f"{params}$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", PASSWORD)
        is False
    )


@pytest.mark.parametrize(
    "bad_hash",
    [
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=65536,t=3,p=4$abc$def",
        "$argon2x$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "$argon2id$v=19$m=65536,t=3,p=4$sälz$häsh",  # non-ASCII: malformed, not an exception
    ],
)
def test_verify_password_malformed_hash_is_false(bad_hash: str) -> None:
    assert crypto.verify_password(bad_hash, PASSWORD) is False


@given(st.text(max_size=120))
def test_verify_password_garbage_hash_never_raises(bad_hash: str) -> None:
    assert crypto.verify_password(bad_hash, PASSWORD) is False


# -- base64 -----------------------------------------------------------------------------------


def test_b64decode_exact_sizes() -> None:
    raw = bytes(range(32))
    text = crypto.b64encode(raw)
    assert text == base64.b64encode(raw).decode()
    assert crypto.b64decode_exact(text) == raw
    assert crypto.b64decode_exact(text, 32) == raw
    assert crypto.b64decode_exact(text, 31) is None
    assert crypto.b64decode_exact(text, 33) is None
    assert crypto.b64decode_exact(crypto.b64encode(bytes(64)), 64) == bytes(64)
    assert crypto.b64decode_exact("", 0) == b""
    assert crypto.b64decode_exact("", 32) is None


@pytest.mark.parametrize(
    "text",
    [
        "YQ",  # missing padding
        "YQ=",  # short padding
        "YW Jj",  # whitespace
        "YWJj\n",
        "-_-_",  # URL-safe alphabet
        "YWJj!",
        "é",  # not ASCII
        "YQ==YQ==",  # padding in the middle
    ],
)
def test_b64decode_exact_refuses_malformed(text: str) -> None:
    assert crypto.b64decode_exact(text) is None


@given(st.text(), st.none() | st.integers(min_value=0, max_value=100))
def test_b64decode_exact_garbage_never_raises(text: str, size: int | None) -> None:
    result = crypto.b64decode_exact(text, size)
    assert result is None or isinstance(result, bytes)
    if result is not None and size is not None:
        assert len(result) == size


@given(st.binary(max_size=200))
def test_b64_round_trip(raw: bytes) -> None:
    assert crypto.b64decode_exact(crypto.b64encode(raw), len(raw)) == raw


# -- key-login signatures ---------------------------------------------------------------------

SIGNING_KEY = SigningKey(bytes(range(32)))
PUBLIC_KEY = bytes(SIGNING_KEY.verify_key)
CHALLENGE = b"\x01" * 32


def sign(message: bytes, key: SigningKey = SIGNING_KEY) -> bytes:
    return key.sign(message).signature


def test_login_signature_verifies() -> None:
    signature = sign(crypto.KEY_LOGIN_PREFIX + CHALLENGE)
    assert crypto.KEY_LOGIN_PREFIX == b"relay-login-v1:"
    assert crypto.verify_login_signature(PUBLIC_KEY, CHALLENGE, signature) is True


@pytest.mark.parametrize(
    "message",
    [CHALLENGE, b"relay-login-v2:" + CHALLENGE, b"relay-login-v1" + CHALLENGE, CHALLENGE + b"x"],
)
def test_login_signature_over_wrong_message(message: bytes) -> None:
    assert crypto.verify_login_signature(PUBLIC_KEY, CHALLENGE, sign(message)) is False


def test_login_signature_wrong_challenge() -> None:
    signature = sign(crypto.KEY_LOGIN_PREFIX + CHALLENGE)
    assert crypto.verify_login_signature(PUBLIC_KEY, b"\x02" * 32, signature) is False


def test_login_signature_wrong_key() -> None:
    other = SigningKey(b"\x07" * 32)
    signature = sign(crypto.KEY_LOGIN_PREFIX + CHALLENGE, other)
    assert crypto.verify_login_signature(PUBLIC_KEY, CHALLENGE, signature) is False
    assert crypto.verify_login_signature(bytes(other.verify_key), CHALLENGE, signature) is True


def test_login_signature_tampered() -> None:
    signature = bytearray(sign(crypto.KEY_LOGIN_PREFIX + CHALLENGE))
    signature[10] ^= 1
    assert crypto.verify_login_signature(PUBLIC_KEY, CHALLENGE, bytes(signature)) is False


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (PUBLIC_KEY[:31], bytes(64)),
        (PUBLIC_KEY + b"\x00", bytes(64)),
        (b"", bytes(64)),
        (PUBLIC_KEY, bytes(63)),
        (PUBLIC_KEY, bytes(65)),
        (PUBLIC_KEY, b""),
        (bytes(32), bytes(64)),  # the all-zero (small-order) key
    ],
)
def test_login_signature_wrong_sizes_are_false(public_key: bytes, signature: bytes) -> None:
    assert crypto.verify_login_signature(public_key, CHALLENGE, signature) is False


@given(st.binary(max_size=80), st.binary(max_size=80), st.binary(max_size=80))
def test_login_signature_garbage_never_raises(key: bytes, challenge: bytes, sig: bytes) -> None:
    assert crypto.verify_login_signature(key, challenge, sig) is False


# -- access tokens ----------------------------------------------------------------------------


def test_signer_needs_a_long_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenSigner(b"k" * 31)
    TokenSigner(b"k" * 32)


def test_token_round_trip() -> None:
    signer = TokenSigner(KEY)
    token = signer.issue(42, 7, NOW, 900)
    assert signer.verify(token, NOW) == AccessClaims(user_id=42, session_id=7, expires_at=NOW + 900)
    assert signer.verify(token, NOW + 899).expires_at == NOW + 900


def test_token_claims_on_the_wire() -> None:
    token = TokenSigner(KEY).issue(2**62, 3, NOW, 60)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    payload = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False})
    assert payload == {"sub": str(2**62), "sid": "3", "iat": NOW, "exp": NOW + 60, "typ": "access"}


@pytest.mark.parametrize("now", [NOW + 900, NOW + 901, NOW + 10**6])
def test_token_expiry(now: int) -> None:
    signer = TokenSigner(KEY)
    token = signer.issue(1, 2, NOW, 900)
    with pytest.raises(TokenError) as info:
        signer.verify(token, now)
    assert info.value.code == "token_expired"


def test_token_verify_uses_the_injected_clock_not_the_wall_clock() -> None:
    """The signer is clock-injected: a token issued at a `now_s` ahead of the real clock (a test
    clock, a skewed caller) verifies at that `now_s`. PyJWT's own iat check used to refuse it."""
    signer = TokenSigner(KEY)
    future = int(time.time()) + 10 * 365 * 24 * 3600
    token = signer.issue(1, 2, future, 900)
    assert signer.verify(token, future + 1).expires_at == future + 900


def expect_invalid(token: str, signer: TokenSigner | None = None) -> None:
    with pytest.raises(TokenError) as info:
        (signer or TokenSigner(KEY)).verify(token, NOW)
    assert info.value.code == "invalid_token"


def test_token_signed_with_another_key() -> None:
    expect_invalid(TokenSigner(b"x" * 32).issue(1, 2, NOW, 900))


def test_tampered_token() -> None:
    header, payload, signature = TokenSigner(KEY).issue(1, 2, NOW, 900).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "2"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    expect_invalid(f"{header}.{forged}.{signature}")
    # Flipping a signature character is caught as well.
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    expect_invalid(f"{header}.{payload}.{flipped}")


def test_alg_none_is_refused() -> None:
    claims = {"sub": "1", "sid": "2", "iat": NOW, "exp": NOW + 900, "typ": "access"}
    expect_invalid(jwt.encode(claims, "", algorithm="none"))
    # An unsigned token with the HS256 header and no signature.
    header, payload, _ = TokenSigner(KEY).issue(1, 2, NOW, 900).split(".")
    expect_invalid(f"{header}.{payload}.")


def test_other_hmac_algorithm_is_refused() -> None:
    claims = {"sub": "1", "sid": "2", "iat": NOW, "exp": NOW + 900, "typ": "access"}
    expect_invalid(jwt.encode(claims, KEY + KEY, algorithm="HS512"))


@pytest.mark.parametrize(
    "claims",
    [
        {"sid": "2", "iat": NOW, "exp": NOW + 900, "typ": "access"},  # no sub
        {"sub": "1", "iat": NOW, "exp": NOW + 900, "typ": "access"},  # no sid
        {"sub": "1", "sid": "2", "exp": NOW + 900, "typ": "access"},  # no iat
        {"sub": "1", "sid": "2", "iat": NOW, "typ": "access"},  # no exp
        {"sub": "1", "sid": "2", "iat": NOW, "exp": NOW + 900},  # no typ
        {"sub": "1", "sid": "2", "iat": NOW, "exp": NOW + 900, "typ": "refresh"},
        {"sub": "one", "sid": "2", "iat": NOW, "exp": NOW + 900, "typ": "access"},
        {"sub": "1", "sid": "2.5", "iat": NOW, "exp": NOW + 900, "typ": "access"},
        {"sub": "1", "sid": None, "iat": NOW, "exp": NOW + 900, "typ": "access"},
        {"sub": "1", "sid": "2", "iat": NOW, "exp": "later", "typ": "access"},
    ],
)
def test_correctly_signed_but_wrong_claims(claims: dict[str, object]) -> None:
    expect_invalid(jwt.encode(claims, KEY, algorithm="HS256"))


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "....", "eyJhbGciOiJIUzI1NiJ9.e30."])
def test_garbage_tokens(token: str) -> None:
    expect_invalid(token)


@given(st.text(max_size=300))
def test_garbage_tokens_only_raise_token_error(token: str) -> None:
    expect_invalid(token)


# -- refresh tokens ---------------------------------------------------------------------------


def test_refresh_tokens_are_random_and_url_safe() -> None:
    tokens = {crypto.new_refresh_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert len(token) == 43  # 32 bytes, unpadded base64url
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_hash_token() -> None:
    assert crypto.hash_token("abc") == hashlib.sha256(b"abc").digest()
    assert len(crypto.hash_token(crypto.new_refresh_token())) == 32
    assert crypto.hash_token("abc") != crypto.hash_token("abd")
