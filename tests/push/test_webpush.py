"""The pure parts of Web Push: payload encryption round trips (hypothesis), keys and base64url
checked, the VAPID JWT, who is pushed and why (`push_reason`), Retry-After parsing."""

from __future__ import annotations

import base64
import email.utils
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, cast

import http_ece  # type: ignore[import-untyped]
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.chat.notify import Mentions, push_reason
from relay.chat.push import (
    MAX_TEXT_CHARS,
    Note,
    PushNotifier,
    PushPayload,
    encode_payload,
    load_vapid,
    parse_retry_after,
)
from relay.errors import ConfigError
from relay.netfetch import FetchPolicy
from relay.storage.areas import SQLITE
from relay.storage.messages import AuthorRow
from relay.storage.push import Preference
from relay.webpush import MAX_PLAINTEXT, Vapid, b64url, check_keys, encrypt, unb64url
from tests.conftest import settings_for

if TYPE_CHECKING:
    from pathlib import Path

    from relay.config import Settings
    from relay.storage.sqlite.db import Store

RECEIVER = ec.generate_private_key(ec.SECP256R1())
POINT = RECEIVER.public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
)
AUTH = os.urandom(16)


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=MAX_PLAINTEXT))
def test_payloads_decrypt_with_the_subscription_key(payload: bytes) -> None:
    body = encrypt(payload, POINT, AUTH)
    assert len(body) <= 4096
    plain = http_ece.decrypt(body, private_key=RECEIVER, auth_secret=AUTH, version="aes128gcm")
    assert plain == payload
    if not payload:
        return  # http_ece writes no record for nothing (Relay's payloads are never empty)
    with pytest.raises(Exception):  # noqa: B017, PT011 (http_ece raises InvalidTag or its own)
        http_ece.decrypt(
            body, private_key=RECEIVER, auth_secret=os.urandom(16), version="aes128gcm"
        )


def test_oversize_payloads_are_refused() -> None:
    with pytest.raises(ValueError, match="payload over"):
        encrypt(b"x" * (MAX_PLAINTEXT + 1), POINT, AUTH)


@given(st.binary(min_size=1, max_size=180))
def test_base64url_round_trips_with_or_without_padding(data: bytes) -> None:
    text = b64url(data)
    assert unb64url(text) == data
    assert unb64url(base64.urlsafe_b64encode(data).decode()) == data  # padded too


@given(st.text(max_size=300))
def test_key_checks_never_crash(text: str) -> None:
    try:
        point, auth = check_keys(text, text)
    except ValueError:
        return
    raise AssertionError(f"accepted {point!r} {auth!r}")  # one string cannot be both


def test_keys_are_checked() -> None:
    assert check_keys(b64url(POINT), b64url(AUTH)) == (POINT, AUTH)
    off_curve = b"\x04" + b"\x01" * 64
    for p256dh, auth, what in (
        (b64url(off_curve), b64url(AUTH), "not a point on P-256"),
        (b64url(POINT[:33]), b64url(AUTH), "uncompressed"),
        (b64url(POINT), b64url(AUTH + b"x"), "16 bytes"),
        (b64url(POINT) + "*", b64url(AUTH), "base64url"),
        ("A" * 400, b64url(AUTH), "longer than"),
    ):
        with pytest.raises(ValueError, match=what):
            check_keys(p256dh, auth)


def test_vapid_jwt_verifies_with_the_public_key() -> None:
    vapid = Vapid.from_pem(Vapid.generate_pem(), "mailto:ops@example.org")
    header = vapid.authorization("https://push.example.net:8443/send/abc?x=1", now=1000.0)
    token, key = header.removeprefix("vapid t=").split(", k=")
    assert key == vapid.public_key
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
    claims = jwt.decode(
        token,
        public,
        algorithms=["ES256"],
        audience="https://push.example.net:8443",
        options={"verify_exp": False},
    )
    assert claims == {
        "aud": "https://push.example.net:8443",
        "exp": 1000 + 12 * 3600,
        "sub": "mailto:ops@example.org",
    }
    other = ec.generate_private_key(ec.SECP384R1())
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="P-256"):
        Vapid.from_pem(pem, "mailto:x@y")


ME = 7
NOW = 1_000_000


def reason(
    *,
    dm: bool = False,
    users: frozenset[int] = frozenset(),
    roles: frozenset[int] = frozenset(),
    everyone: bool = False,
    mine: frozenset[int] = frozenset(),
    server: Preference | None = None,
    channel: Preference | None = None,
) -> str | None:
    mentions = Mentions(users, roles, everyone)
    return push_reason(
        ME, dm=dm, mentions=mentions, roles=mine, server=server, channel=channel, now_ms=NOW
    )


def test_who_is_pushed_and_why() -> None:
    # Defaults: DMs and mentions of every kind; plain server messages not.
    assert reason(dm=True) == "dm"
    assert reason(users=frozenset({ME})) == "mention"
    assert reason(roles=frozenset({3}), mine=frozenset({3, 4})) == "role"
    assert reason(roles=frozenset({3}), mine=frozenset({4})) is None
    assert reason(everyone=True) == "everyone"
    assert reason() is None
    assert reason(users=frozenset({8})) is None
    # Levels: the channel's wins over the server's.
    every = Preference("all")
    assert reason(server=every) == "message"
    assert reason(server=every, channel=Preference("mentions")) is None
    assert reason(server=Preference("none"), users=frozenset({ME})) is None
    assert reason(server=Preference("none"), channel=every) == "message"
    assert reason(dm=True, channel=Preference("none")) is None
    assert reason(dm=True, channel=Preference("mentions")) == "dm"
    # Mutes: either silences until then; a past mute does nothing.
    assert reason(users=frozenset({ME}), server=Preference(None, NOW + 1)) is None
    assert reason(dm=True, channel=Preference("all", NOW + 1)) is None
    assert reason(users=frozenset({ME}), channel=Preference(None, NOW)) == "mention"


def test_retry_after_is_seconds_or_a_date() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("99999999") == 86_400.0
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    got = parse_retry_after(later)
    assert got is not None
    assert 25 <= got <= 31
    assert parse_retry_after(email.utils.formatdate(0, usegmt=True)) == 0.0


def note(user_id: int, message_id: int, reason: str = "message") -> Note:
    author = AuthorRow(1, "alice", None)
    return Note(user_id, 50, 60, message_id, author, True, reason)  # type: ignore[arg-type]


async def test_the_coalescer_merges_and_full_queues_drop_the_newest(tmp_path: Path) -> None:
    """No store needed: `offer` only coalesces and queues (nothing reads the queue here)."""
    settings = settings_for(tmp_path, push_queue=2, push_coalesce_s=10.0)
    vapid = Vapid.from_pem(Vapid.generate_pem(), "mailto:x@y")
    notifier = PushNotifier(
        cast("Store", None), SQLITE, settings, vapid, FetchPolicy(), lambda _user: False
    )
    notifier.offer(note(1, 100))
    for message_id, reason in ((101, "message"), (102, "mention"), (103, "message")):
        notifier.offer(note(1, message_id, reason))  # the same window: merged, not queued
    window = notifier._windows[1, 50]
    assert window.pending is not None
    assert (window.pending.message_id, window.pending.reason, window.pending.count) == (
        103,
        "mention",
        3,
    )
    notifier.offer(note(2, 200))
    notifier.offer(note(3, 300))  # a third push with room for two: dropped
    assert notifier.dropped == 1
    queued = [notifier._out.receive_nowait().message_id for _ in range(2)]
    assert queued == [100, 200]


def test_the_vapid_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    first = load_vapid(settings)
    made = tmp_path / "data" / "vapid.pem"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert load_vapid(settings).public_key == first.public_key  # a restart keeps it
    given = tmp_path / "mine.pem"
    given.write_bytes(Vapid.generate_pem())
    mine = load_vapid(settings_for(tmp_path, push_vapid_key=str(given)))
    assert mine.public_key != first.public_key
    given.write_text("not a key")
    with pytest.raises(ConfigError, match="push_vapid_key"):
        load_vapid(settings_for(tmp_path, push_vapid_key=str(given)))


def _start_together(config: Settings, nodes: int) -> tuple[list[str], list[Exception]]:
    """`load_vapid` in `nodes` threads released at once: their keys, and what they raised."""
    start = threading.Barrier(nodes)
    keys: list[str] = []
    errors: list[Exception] = []

    def node() -> None:
        start.wait()
        try:
            keys.append(load_vapid(config).public_key)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=node) for _ in range(nodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return keys, errors


def test_nodes_starting_together_on_one_data_dir_make_one_vapid_key(tmp_path: Path) -> None:
    """Cluster nodes share a data_dir (docs/cluster.md) and start at once: none may read the
    file while another is still writing it, and all end up with the same key."""
    for attempt in range(20):
        keys, errors = _start_together(settings_for(tmp_path / str(attempt)), 4)
        assert errors == []
        assert len(set(keys)) == 1


@settings(max_examples=40)
@given(st.text(max_size=MAX_TEXT_CHARS), st.text(min_size=1, max_size=64))
def test_payloads_fit_whatever_the_text(content: str, name: str) -> None:
    payload = PushPayload(
        type="message",
        reason="dm",
        channel_id="1" * 19,
        message_id="2" * 19,
        author_id="3" * 19,
        author_name=name,
        count=1,
        content=content or None,
    )
    data = encode_payload(payload)
    assert len(data) <= MAX_PLAINTEXT
    decoded = msgspec.json.decode(data, type=PushPayload)
    assert content.startswith(decoded.content or "")
    assert name.startswith(decoded.author_name)
    if len(msgspec.json.encode(payload)) <= MAX_PLAINTEXT:
        assert decoded == payload


def test_a_long_text_of_wide_characters_is_cut_to_fit() -> None:
    wide = "\x01" * MAX_TEXT_CHARS  # six bytes each in JSON
    payload = PushPayload("message", "dm", "1", "2", "3", "a", 1, content=wide)
    decoded = msgspec.json.decode(encode_payload(payload), type=PushPayload)
    assert decoded.content is not None
    assert 0 < len(decoded.content) < MAX_TEXT_CHARS
