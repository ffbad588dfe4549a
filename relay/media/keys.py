"""The media key: from the `media_key` setting, else a file in the data directory made on
first start (mode 0600). Without it no stored file can be read: backups must include it."""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import TYPE_CHECKING

from relay.media.cipher import KEY_BYTES

if TYPE_CHECKING:
    from pathlib import Path

KEY_FILE = "media.key"


class MediaKeyError(Exception):
    """The media key file or setting is not a key."""


def parse_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise MediaKeyError("the media key must be 64 hex digits") from None
    if len(key) != KEY_BYTES:
        raise MediaKeyError("the media key must be 64 hex digits")
    return key


def load_or_create_key(data_dir: Path, setting: str | None) -> bytes:
    """The key of `setting` (64 hex digits) if given, else of <data_dir>/media.key, made with
    mode 0600 if it does not exist yet (O_EXCL: two starts cannot make two keys)."""
    if setting is not None:
        return parse_key(setting)
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole under a temp name, then linked in: a crash never leaves an empty key,
        # and of two starts at once only one key wins (link fails if the name exists).
        tmp = data_dir / f".{KEY_FILE}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()
    return parse_key(path.read_text())
