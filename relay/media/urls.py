"""Signed, expiring file URLs: an HMAC-SHA256 over the path and the expiry, like a CDN's
signed parameters, so `<img src>` works without an Authorization header and a URL handed to
someone stops working once it expires. The signing key is derived from the media key."""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol
from urllib.parse import quote

SIG_HEX = 32  # 128 bits of the HMAC: enough against forgery, shorter URLs
MAX_EXPIRY_DIGITS = 12


def signing_key(media_key: bytes) -> bytes:
    return hmac.new(media_key, b"relay file url signing v1", hashlib.sha256).digest()


def _mac(key: bytes, path: str, expires: int) -> str:
    message = f"{path}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:SIG_HEX]


def sign(key: bytes, path: str, expires: int) -> str:
    """`path?ex=<unix seconds>&sig=<hmac>`."""
    return f"{path}?ex={expires}&sig={_mac(key, path, expires)}"


def verify(key: bytes, path: str, ex: str | None, sig: str | None, now: float) -> bool:
    """Whether `ex`/`sig` (the query parameters as given) sign `path` and have not expired."""
    if ex is None or sig is None or len(sig) != SIG_HEX or not sig.isascii():
        return False  # compare_digest refuses non-ASCII text
    if not (0 < len(ex) <= MAX_EXPIRY_DIGITS and ex.isascii() and ex.isdigit()):
        return False
    expires = int(ex)
    if expires < now:
        return False
    return hmac.compare_digest(_mac(key, path, expires), sig)


class FileUrls(Protocol):
    def sign(self, path: str) -> str:
        """`path` with a fresh expiry and signature."""


FILES_PREFIX = "/v1/files"


def attachment_path(attachment_id: int, filename: str) -> str:
    return f"{FILES_PREFIX}/attachments/{attachment_id}/{quote(filename, safe='')}"


def preview_path(attachment_id: int) -> str:
    return f"{FILES_PREFIX}/previews/{attachment_id}.webp"


def thumbnail_path(attachment_id: int) -> str:
    return f"{FILES_PREFIX}/thumbnails/{attachment_id}.webp"


def avatar_path(user_id: int, digest: str) -> str:
    return f"{FILES_PREFIX}/avatars/{user_id}/{digest}.webp"


def icon_path(server_id: int, digest: str) -> str:
    return f"{FILES_PREFIX}/icons/{server_id}/{digest}.webp"


def group_icon_path(channel_id: int, digest: str) -> str:
    return f"{FILES_PREFIX}/channel-icons/{channel_id}/{digest}.webp"


def emoji_path(emoji_id: int) -> str:
    return f"{FILES_PREFIX}/emojis/{emoji_id}.webp"


def image_path(digest: str) -> str:
    return f"{FILES_PREFIX}/images/{digest}.webp"
