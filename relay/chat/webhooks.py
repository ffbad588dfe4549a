"""Incoming webhooks: managing them (MANAGE_WEBHOOKS) and executing them with their token.

A webhook's token is 256 random bits shown once (on creation and on each reset), stored as
its SHA-256 and compared in constant time. Executing needs no user: the token is the
permission. Each webhook has its own message budget (`webhook_rate` per `webhook_window_s`),
spent only once the token was right, so strangers cannot use it up. Its messages travel the
channel's order like any other (`Fanout.post`) and are written by
relay.storage.messages.post_as_webhook, which refuses them if the webhook was deleted or moved
meanwhile: a deleted webhook's URL is 404 at once.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from msgspec import UnsetType

from relay import crypto
from relay.chat import github
from relay.chat.applications import checked_name
from relay.chat.args import field_error, id_field, snowflake
from relay.chat.messages import channel_busy, content_of, posted, queue_post
from relay.chat.objects import Webhook, WebhookWithToken, message_out, webhook_out
from relay.errors import NotFound, RateLimited, Unauthorized
from relay.ids import parse_id
from relay.storage import messages
from relay.storage.access import now_ms
from relay.storage.messages import NewMessage, WebhookAuthor

if TYPE_CHECKING:
    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.chat.objects import Message
    from relay.storage.webhooks import WebhookRow

GITHUB_NAME = "GitHub"


def _with_token(w: WebhookRow, token: str, base_url: str) -> WebhookWithToken:
    plain = webhook_out(w)
    return WebhookWithToken(
        id=plain.id,
        server_id=plain.server_id,
        channel_id=plain.channel_id,
        name=plain.name,
        creator_id=plain.creator_id,
        created_at=plain.created_at,
        token=token,
        url=f"{base_url.rstrip('/')}/v1/api/webhooks/{w.id}/{token}",
    )


def checked_avatar_url(url: str) -> str:
    """An http(s) URL with a host and no white space or control characters."""
    reason = "must be an http or https URL"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise field_error("avatar_url", reason)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise field_error("avatar_url", reason) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise field_error("avatar_url", reason)
    return url


async def create(
    chat: Chat,
    user_id: int,
    channel_id: str,
    data: commands.CreateWebhook,
    base_url: str,
    reason: str | None,
) -> WebhookWithToken:
    cid = snowflake(channel_id, "channel")
    token = crypto.new_refresh_token()
    webhook = await chat.store.write(
        chat.q.webhooks.create_webhook,
        chat.store.ids.next(),
        cid,
        user_id,
        checked_name(data.name),
        crypto.hash_token(token),
        now_ms(),
        chat.settings.max_webhooks_per_channel,
        reason,
    )
    return _with_token(webhook, token, base_url)


async def of_channel(chat: Chat, user_id: int, channel_id: str) -> list[Webhook]:
    cid = snowflake(channel_id, "channel")
    return [
        webhook_out(w)
        for w in await chat.store.read(chat.q.webhooks.channel_webhooks, cid, user_id)
    ]


async def of_server(chat: Chat, user_id: int, server_id: str) -> list[Webhook]:
    sid = snowflake(server_id, "server")
    return [
        webhook_out(w) for w in await chat.store.read(chat.q.webhooks.server_webhooks, sid, user_id)
    ]


def _webhook_id(text: str) -> int:
    found = parse_id(text)
    if found is None:
        raise NotFound("unknown webhook", code="unknown_webhook")
    return found


async def get(chat: Chat, user_id: int, webhook_id: str) -> Webhook:
    wid = _webhook_id(webhook_id)
    return webhook_out(await chat.store.read(chat.q.webhooks.get_webhook, wid, user_id))


async def update(
    chat: Chat, user_id: int, webhook_id: str, data: commands.UpdateWebhook, reason: str | None
) -> Webhook:
    wid = _webhook_id(webhook_id)
    name = None if isinstance(data.name, UnsetType) else checked_name(data.name)
    channel = None
    if not isinstance(data.channel_id, UnsetType):
        channel = id_field(data.channel_id, "channel_id")
    webhook = await chat.store.write(
        chat.q.webhooks.update_webhook,
        wid,
        user_id,
        now_ms(),
        name=name,
        channel_id=channel,
        reason=reason,
    )
    return webhook_out(webhook)


async def delete(chat: Chat, user_id: int, webhook_id: str, reason: str | None) -> None:
    wid = _webhook_id(webhook_id)
    await chat.store.write(chat.q.webhooks.delete_webhook, wid, user_id, reason)


async def reset_token(chat: Chat, user_id: int, webhook_id: str, base_url: str) -> WebhookWithToken:
    """A new token (shown this once); the old one is refused from now on."""
    wid = _webhook_id(webhook_id)
    token = crypto.new_refresh_token()
    webhook = await chat.store.write(
        chat.q.webhooks.reset_webhook_token, wid, user_id, crypto.hash_token(token)
    )
    return _with_token(webhook, token, base_url)


# -- executing -----------------------------------------------------------------------------------


async def authorized(chat: Chat, webhook_id: str, token: str) -> WebhookRow:
    """The webhook if `token` is its token (compared in constant time), once its budget allows
    another message. Raises NotFound("unknown_webhook"), Unauthorized("invalid_webhook_token"),
    RateLimited."""
    wid = _webhook_id(webhook_id)
    found = await chat.store.read(chat.q.webhooks.webhook_secret, wid)
    if found is None:
        raise NotFound("unknown webhook", code="unknown_webhook")
    if not hmac.compare_digest(crypto.hash_token(token), found.token_hash):
        raise Unauthorized("the webhook token is not valid", code="invalid_webhook_token")
    return found.webhook


def _spend(chat: Chat, webhook: WebhookRow) -> None:
    decision = chat.webhook_limiter.hit(str(webhook.id), trio.current_time())
    if not decision.allowed:
        window = chat.settings.webhook_window_s
        raise RateLimited.refusing(
            f"a webhook may post {decision.limit} messages per {window:g} s",
            decision,
            "webhook_rate",
        )


async def _post(
    chat: Chat,
    webhook: WebhookRow,
    content: str,
    username: str,
    avatar_url: str | None,
    *,
    mentions: bool = True,
) -> Message:
    new = NewMessage(
        channel_id=webhook.channel_id,
        author_id=webhook.id,
        content=content,
        nonce=None,
        reply_to=None,
        mentions=messages.parse_mentions(content) if mentions else [],
        now_ms=now_ms(),
        webhook=WebhookAuthor(webhook.id, username, avatar_url),
    )
    with trio.move_on_after(chat.settings.send_timeout_s):
        done = await posted(await queue_post(chat, new))
        return message_out(done.message)
    raise channel_busy()


async def execute(
    chat: Chat, webhook_id: str, token: str, data: commands.ExecuteWebhook
) -> Message:
    """Post a message as the webhook, with this message's username and avatar_url if given.
    Raises what `authorized` raises, BadRequest("invalid_field"), NotFound("unknown_webhook")
    if it was deleted meanwhile, Unavailable("channel_busy")."""
    webhook = await authorized(chat, webhook_id, token)
    content = content_of(data.content)
    username = checked_name(data.username, "username") if data.username is not None else None
    avatar = checked_avatar_url(data.avatar_url) if data.avatar_url is not None else None
    _spend(chat, webhook)
    return await _post(chat, webhook, content, username or webhook.name, avatar)


async def execute_github(
    chat: Chat, webhook_id: str, token: str, event: str, body: bytes
) -> Message | None:
    """Post a summary of a GitHub delivery (push, pull_request, issues, release) as the
    webhook, named GitHub; None for an event that is not summarised (nothing posted)."""
    webhook = await authorized(chat, webhook_id, token)
    text = github.summary(event, body)
    if text is None:
        return None
    _spend(chat, webhook)
    # Text from GitHub (commit messages, titles) is anyone's: it mentions nobody.
    return await _post(chat, webhook, text, GITHUB_NAME, None, mentions=False)
