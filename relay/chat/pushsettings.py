"""The chat operations behind the push routes: subscribe and unsubscribe a login, read and
change notification settings (docs/push.md). Request and response Structs live here too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from relay.chat.commands import IdText, Request
from relay.chat.notify import Level  # noqa: TC001 (msgspec reads it at runtime)
from relay.chat.push import MAX_ENDPOINT_CHARS, check_endpoint, checked_keys, now_ms
from relay.errors import BadRequest, NotFound
from relay.ids import parse_id
from relay.storage.push import Preference

if TYPE_CHECKING:
    from relay.accounts import Principal
    from relay.chat.context import Chat
    from relay.chat.push import PushNotifier
    from relay.storage.push import NotificationSettings

MAX_CHANGES = 100  # server and channel entries in one PATCH
MAX_MUTE_MS = 10 * 365 * 86_400_000  # muted_until at most ten years ahead


class PushKeys(Request, frozen=True):
    p256dh: Annotated[str, Meta(min_length=1, max_length=256)]
    auth: Annotated[str, Meta(min_length=1, max_length=64)]


class Subscribe(Request, frozen=True):
    """A browser's PushSubscription.toJSON(); expirationTime is accepted and ignored."""

    endpoint: Annotated[str, Meta(min_length=1, max_length=MAX_ENDPOINT_CHARS)]
    keys: PushKeys
    expirationTime: Annotated[int, Meta(ge=0)] | None = None


class Unsubscribe(Request, frozen=True):
    endpoint: Annotated[str, Meta(min_length=1, max_length=MAX_ENDPOINT_CHARS)]


class VapidKey(msgspec.Struct, frozen=True):
    public_key: str  # base64url, uncompressed P-256: PushManager.subscribe's applicationServerKey


class PreferenceIn(Request, frozen=True):
    """null removes that field's setting (level: inherit; muted_until: not muted)."""

    level: Level | UnsetType | None = UNSET
    muted_until: Annotated[int, Meta(ge=0)] | UnsetType | None = UNSET  # Unix ms


class UpdateNotificationSettings(Request, frozen=True):
    hide_content: bool | UnsetType = UNSET
    servers: Annotated[dict[IdText, PreferenceIn], Meta(max_length=MAX_CHANGES)] = msgspec.field(
        default_factory=dict
    )
    channels: Annotated[dict[IdText, PreferenceIn], Meta(max_length=MAX_CHANGES)] = msgspec.field(
        default_factory=dict
    )


class PreferenceOut(msgspec.Struct, frozen=True):
    level: str | None
    muted_until: int | None


class NotificationSettingsOut(msgspec.Struct, frozen=True):
    hide_content: bool  # pushes leave message text out
    servers: dict[str, PreferenceOut]
    channels: dict[str, PreferenceOut]


def _notifier(chat: Chat) -> PushNotifier:
    if chat.push is None:
        raise NotFound("push notifications are off on this server", code="push_disabled")
    return chat.push


def vapid_key(chat: Chat) -> VapidKey:
    return VapidKey(_notifier(chat).vapid.public_key)


async def subscribe(chat: Chat, who: Principal, data: Subscribe) -> None:
    """Store a subscription for the caller's login, after checking its endpoint (https, a
    public address) and keys. Counts against the user's action budget (429 rate_limited):
    each may cost a DNS lookup of a name the client chose."""
    push = _notifier(chat)
    if (refused := await chat.action_refused(who.user_id)) is not None:
        raise refused
    p256dh, auth = checked_keys(data.keys.p256dh, data.keys.auth)
    endpoint = await check_endpoint(data.endpoint, push.policy)
    await chat.store.write(
        chat.q.push.add_subscription,
        who.user_id,
        who.session_id,
        endpoint,
        p256dh,
        auth,
        now_ms(),
        chat.settings.push_subscriptions_per_session,
    )
    push.subscribers.add(who.user_id)


async def unsubscribe(chat: Chat, who: Principal, data: Unsubscribe) -> None:
    _notifier(chat)
    await chat.store.write(chat.q.push.remove_subscription, who.user_id, data.endpoint)


def _out(found: NotificationSettings) -> NotificationSettingsOut:
    def prefs(entries: dict[int, Preference]) -> dict[str, PreferenceOut]:
        return {str(k): PreferenceOut(v.level, v.muted_until) for k, v in entries.items()}

    return NotificationSettingsOut(found.hide_content, prefs(found.servers), prefs(found.channels))


async def settings_of(chat: Chat, user_id: int) -> NotificationSettingsOut:
    return _out(await chat.store.read(chat.q.push.notification_settings, user_id))


async def update_settings(
    chat: Chat, user_id: int, data: UpdateNotificationSettings
) -> NotificationSettingsOut:
    """Apply a change; fields left out keep their values (per entry too)."""
    current = await chat.store.read(chat.q.push.notification_settings, user_id)
    limit = now_ms() + MAX_MUTE_MS

    def changes(
        given: dict[str, PreferenceIn], known: dict[int, Preference], what: str
    ) -> list[tuple[int, Preference]]:
        found = []
        for text, change in given.items():
            target = parse_id(text)
            if target is None:
                raise BadRequest(f"{what}: {text!r} is not an id", code="invalid_field")
            old = known.get(target, Preference())
            level = old.level if change.level is UNSET else change.level
            muted = old.muted_until if change.muted_until is UNSET else change.muted_until
            if muted is not None and muted > limit:
                raise BadRequest(f"{what}: muted_until too far ahead", code="invalid_field")
            found.append((target, Preference(level, muted)))
        return found

    updated = await chat.store.write(
        chat.q.push.update_notification_settings,
        user_id,
        None if data.hide_content is UNSET else data.hide_content,
        changes(data.servers, current.servers, "servers"),
        changes(data.channels, current.channels, "channels"),
        chat.settings.max_notification_settings,
    )
    return _out(updated)
