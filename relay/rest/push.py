"""Web Push routes (`/push/...`) and notification settings
(`/users/@me/notification-settings`): each decodes, calls relay.chat.pushsettings and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from relay.chat import pushsettings
from relay.rest.apidoc import doc
from relay.rest.http import body, json_response, no_content, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime


def push_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("push", __name__, url_prefix="/v1/api")

    @bp.get("/push/vapid-key")
    @doc(
        "The server's VAPID public key (PushManager.subscribe's applicationServerKey)",
        response=pushsettings.VapidKey,
        errors=("push_disabled",),
    )
    async def vapid_key() -> Response:
        principal(rt)
        return json_response(pushsettings.vapid_key(rt.chat))

    @bp.post("/push/subscriptions")
    @doc(
        "Subscribe this login to Web Push (a browser's PushSubscription; https endpoints on"
        " public addresses only)",
        body=pushsettings.Subscribe,
        status=204,
        errors=(
            "push_disabled",
            "invalid_push_endpoint",
            "invalid_push_keys",
            "too_many_push_subscriptions",
        ),
    )
    async def subscribe() -> Response:
        who = principal(rt)
        data = await body(pushsettings.Subscribe)
        await pushsettings.subscribe(rt.chat, who, data)
        return no_content()

    @bp.delete("/push/subscriptions")
    @doc(
        "Unsubscribe: delete the caller's subscription with this endpoint",
        body=pushsettings.Unsubscribe,
        status=204,
        errors=("push_disabled", "unknown_push_subscription"),
    )
    async def unsubscribe() -> Response:
        who = principal(rt)
        data = await body(pushsettings.Unsubscribe)
        await pushsettings.unsubscribe(rt.chat, who, data)
        return no_content()

    @bp.get("/users/@me/notification-settings")
    @doc(
        "The caller's notification settings: per server and per channel, and whether pushes"
        " leave message text out",
        response=pushsettings.NotificationSettingsOut,
    )
    async def get_settings() -> Response:
        who = principal(rt)
        return json_response(await pushsettings.settings_of(rt.chat, who.user_id))

    @bp.patch("/users/@me/notification-settings")
    @doc(
        "Change notification settings (entries left out stay; null clears a field)",
        body=pushsettings.UpdateNotificationSettings,
        response=pushsettings.NotificationSettingsOut,
        errors=("unknown_server", "unknown_channel", "too_many_notification_settings"),
    )
    async def update_settings() -> Response:
        who = principal(rt)
        data = await body(pushsettings.UpdateNotificationSettings)
        return json_response(await pushsettings.update_settings(rt.chat, who.user_id, data))

    return bp
