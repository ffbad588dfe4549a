"""Web Push's cryptography, pure (no I/O, no trio): the server's VAPID key pair and its JWT
(RFC 8292), a subscription's keys checked (RFC 8291 section 3), and a payload encrypted for one
subscription (RFC 8291 with aes128gcm, RFC 8188).

Libraries: `http_ece` (Mozilla's, what pywebpush uses) does the aes128gcm record encryption
and the ECDH/HKDF key schedule; `cryptography` holds the P-256 keys; PyJWT (already used for
access tokens) signs the ES256 VAPID token. pywebpush itself is not used: it sends with
`requests`, and push endpoints are URLs users give, which must go through relay.netfetch.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import cast
from urllib.parse import urlsplit

import http_ece  # type: ignore[import-untyped]
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

P256DH_BYTES = 65  # an uncompressed P-256 point: 0x04 || X || Y
AUTH_BYTES = 16  # the subscription's authentication secret (RFC 8291 section 3.2)
JWT_TTL_S = 12 * 3600  # RFC 8292 section 2: exp at most 24 hours ahead
RECORD_SIZE = 4096  # one aes128gcm record holds the whole payload (at most 3993 bytes)
MAX_PLAINTEXT = 3993  # 4096 - 86 header - 16 tag - 1 delimiter: push services take 4096


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str, *, max_chars: int = 256) -> bytes:
    """Base64url (padding optional) to bytes.

    Raises:
        ValueError: too long, or not base64url.
    """
    if len(text) > max_chars:
        raise ValueError(f"longer than {max_chars} characters")
    if not text or not all(c.isascii() and (c.isalnum() or c in "-_=") for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def check_keys(p256dh: str, auth: str) -> tuple[bytes, bytes]:
    """A subscription's keys decoded and checked: p256dh a point on P-256 (65 bytes,
    uncompressed), auth 16 bytes.

    Raises:
        ValueError: naming which key is wrong and why.
    """
    try:
        point = unb64url(p256dh)
    except ValueError as e:
        raise ValueError(f"keys.p256dh: {e}") from None
    if len(point) != P256DH_BYTES or point[0] != 4:
        raise ValueError(f"keys.p256dh: not an uncompressed P-256 point ({P256DH_BYTES} bytes)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise ValueError("keys.p256dh: not a point on P-256") from None
    try:
        secret = unb64url(auth)
    except ValueError as e:
        raise ValueError(f"keys.auth: {e}") from None
    if len(secret) != AUTH_BYTES:
        raise ValueError(f"keys.auth: must be {AUTH_BYTES} bytes")
    return point, secret


class Vapid:
    """The server's VAPID identity: a P-256 key pair and the contact (`sub`) it signs with."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        self.private_key = private_key
        self.subject = subject
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.public_key = b64url(raw)  # the applicationServerKey browsers subscribe with

    @staticmethod
    def generate_pem() -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, pem: bytes, subject: str) -> Vapid:
        """Raises ValueError if `pem` is not a P-256 private key."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("the VAPID key must be a P-256 (prime256v1) private key")
        return cls(key, subject)

    def authorization(self, endpoint: str, now: float | None = None) -> str:
        """The Authorization header for a request to `endpoint` (RFC 8292 section 3)."""
        parts = urlsplit(endpoint)
        claims = {
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int((time.time() if now is None else now) + JWT_TTL_S),
            "sub": self.subject,
        }
        token = jwt.encode(claims, self.private_key, algorithm="ES256")
        return f"vapid t={token}, k={self.public_key}"


def encrypt(payload: bytes, p256dh: bytes, auth: bytes) -> bytes:
    """`payload` encrypted for one subscription (aes128gcm, a fresh sender key and salt).

    Raises:
        ValueError: the payload is over MAX_PLAINTEXT bytes.
    """
    if len(payload) > MAX_PLAINTEXT:
        raise ValueError(f"payload over {MAX_PLAINTEXT} bytes")
    sender = ec.generate_private_key(ec.SECP256R1())
    body = http_ece.encrypt(
        payload,
        private_key=sender,
        dh=p256dh,
        auth_secret=auth,
        version="aes128gcm",
        rs=RECORD_SIZE,
    )
    return cast("bytes", body)
