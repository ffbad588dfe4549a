"""Webhook routes: managing a channel's incoming webhooks (MANAGE_WEBHOOKS) and executing one
with its token (`/webhooks/{id}/{token}`, no user token; `/github` for GitHub's deliveries).
Each decodes, calls relay.chat.webhooks and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qs

import msgspec
from msgspec import Meta
from quart import Blueprint, Response, request

from relay.chat import commands, objects
from relay.chat import webhooks as chat_webhooks
from relay.chat.args import field_error
from relay.rest.apidoc import doc
from relay.rest.files import body_chunks, decode_form_json, is_multipart
from relay.rest.http import audit_reason, body, json_response, no_content, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime

EVENT_HEADER = "X-GitHub-Event"
MAX_EVENT_CHARS = 64


class ExecuteQuery(msgspec.Struct, frozen=True, kw_only=True):
    wait: Annotated[
        bool, Meta(description="true: answer 200 with the message; false: 204 (the default)")
    ] = False


class Pong(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to GitHub's ping (sent when a webhook is set up there)."""

    pong: bool = True


def _wait() -> bool:
    text = request.args.get("wait")
    if text is None:
        return False
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise field_error("wait", "must be true or false")


def _base_url() -> str:
    return request.host_url


_EXECUTE_ERRORS = ("unknown_webhook", "invalid_webhook_token", "channel_busy")
_execute = msgspec.json.Decoder(commands.ExecuteWebhook)


def webhooks_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("webhooks", __name__, url_prefix="/v1/api")

    @bp.post("/channels/<channel_id>/webhooks")
    @doc(
        "Create an incoming webhook for a text channel (MANAGE_WEBHOOKS); its token and URL "
        "are in this answer only",
        body=commands.CreateWebhook,
        response=objects.WebhookWithToken,
        status=201,
        errors=(
            "unknown_channel",
            "missing_permission",
            "not_a_text_channel",
            "too_many_webhooks",
        ),
    )
    async def create_webhook(channel_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.CreateWebhook)
        webhook = await chat_webhooks.create(
            rt.chat, who.user_id, channel_id, data, _base_url(), audit_reason()
        )
        return json_response(webhook, 201)

    @bp.get("/channels/<channel_id>/webhooks")
    @doc(
        "The channel's webhooks (MANAGE_WEBHOOKS), without their tokens",
        response=list[objects.Webhook],
        errors=("unknown_channel", "missing_permission", "not_a_text_channel"),
    )
    async def channel_webhooks(channel_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_webhooks.of_channel(rt.chat, who.user_id, channel_id))

    @bp.get("/servers/<server_id>/webhooks")
    @doc(
        "The server's webhooks (MANAGE_WEBHOOKS), without their tokens",
        response=list[objects.Webhook],
        errors=("unknown_server", "missing_permission"),
    )
    async def server_webhooks(server_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_webhooks.of_server(rt.chat, who.user_id, server_id))

    @bp.get("/webhooks/<webhook_id>")
    @doc(
        "A webhook (MANAGE_WEBHOOKS in its channel), without its token",
        response=objects.Webhook,
        errors=("unknown_webhook", "missing_permission"),
    )
    async def get_webhook(webhook_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_webhooks.get(rt.chat, who.user_id, webhook_id))

    @bp.patch("/webhooks/<webhook_id>")
    @doc(
        "Rename a webhook or move it to another text channel of its server (MANAGE_WEBHOOKS "
        "in both)",
        body=commands.UpdateWebhook,
        response=objects.Webhook,
        errors=(
            "unknown_webhook",
            "unknown_channel",
            "missing_permission",
            "not_a_text_channel",
        ),
    )
    async def update_webhook(webhook_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateWebhook)
        webhook = await chat_webhooks.update(rt.chat, who.user_id, webhook_id, data, audit_reason())
        return json_response(webhook)

    @bp.delete("/webhooks/<webhook_id>")
    @doc(
        "Delete a webhook (MANAGE_WEBHOOKS): its URL is refused from now on",
        errors=("unknown_webhook", "missing_permission"),
    )
    async def delete_webhook(webhook_id: str) -> Response:
        who = principal(rt)
        await chat_webhooks.delete(rt.chat, who.user_id, webhook_id, audit_reason())
        return no_content()

    @bp.post("/webhooks/<webhook_id>/reset-token")
    @doc(
        "A new token and URL for the webhook (MANAGE_WEBHOOKS), shown this once: the old "
        "ones stop working",
        response=objects.WebhookWithToken,
        errors=("unknown_webhook", "missing_permission"),
    )
    async def reset_webhook_token(webhook_id: str) -> Response:
        who = principal(rt)
        webhook = await chat_webhooks.reset_token(rt.chat, who.user_id, webhook_id, _base_url())
        return json_response(webhook)

    @bp.post("/webhooks/<webhook_id>/<token>")
    @doc(
        "Post a message as the webhook (no user token: the URL's token is the permission): "
        "content, embeds, allowed_mentions, this message's username and avatar_url; files as "
        "multipart/form-data (payload_json and files[0]..files[9], as a user's message)",
        body=commands.ExecuteWebhook,
        response=objects.Message,
        status={200: "posted (?wait=true): the message", 204: "posted"},
        query=ExecuteQuery,
        errors=(
            *_EXECUTE_ERRORS,
            "invalid_field",
            "malformed_form",
            "file_too_large",
            "too_many_files",
            "upload_quota",
            "upload_too_slow",
            "insufficient_storage",
            "payload_too_large",
        ),
    )
    async def execute_webhook(webhook_id: str, token: str) -> Response:
        wait = _wait()
        content_type = request.headers.get("Content-Type", "")
        if not is_multipart(content_type):
            checked = chat_webhooks.check(await body(commands.ExecuteWebhook))
            webhook = await chat_webhooks.admit(rt.chat, webhook_id, token)
            message = await chat_webhooks.execute(rt.chat, webhook, checked)
            return json_response(message) if wait else no_content()
        # The token is checked and the budget spent before any file is stored.
        webhook = await chat_webhooks.admit(rt.chat, webhook_id, token)
        uploads = await chat_webhooks.uploads(rt.chat, webhook)
        form = await uploads.receive_form(content_type, body_chunks(), rt.settings.max_body_bytes)
        data = decode_form_json(form.payload, _execute, commands.ExecuteWebhook())
        checked = chat_webhooks.check(data, with_files=bool(form.upload_ids))
        message = await chat_webhooks.execute(rt.chat, webhook, checked, form.upload_ids)
        return json_response(message) if wait else no_content()

    @bp.post("/webhooks/<webhook_id>/<token>/github")
    @doc(
        "Post a summary of a GitHub delivery (X-GitHub-Event: push, pull_request, issues, "
        "release; ping is answered; other events are ignored), as JSON or as a form's payload",
        response=Pong,
        status={200: "a ping, answered", 204: "posted, or an event that is not summarised"},
        errors=(*_EXECUTE_ERRORS, "malformed_json", "invalid_field", "missing_body"),
    )
    async def execute_github(webhook_id: str, token: str) -> Response:
        event = request.headers.get(EVENT_HEADER, "").strip()
        if not event or len(event) > MAX_EVENT_CHARS:
            raise field_error(EVENT_HEADER, "the GitHub event header is required")
        raw = await request.get_data(cache=False, as_text=False)
        if isinstance(raw, str):  # not with as_text=False; for the type checker
            raw = raw.encode("utf-8")
        if request.mimetype == "application/x-www-form-urlencoded":
            payload = parse_qs(raw.decode("utf-8", "replace")).get("payload", [""])[0]
            raw = payload.encode("utf-8")
        if event == "ping":
            await chat_webhooks.authorized(rt.chat, webhook_id, token)
            return json_response(Pong())
        if not raw:
            raise field_error("$", "a JSON body is required")
        await chat_webhooks.execute_github(rt.chat, webhook_id, token, event, raw)
        return no_content()

    return bp
