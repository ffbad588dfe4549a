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

import msgspec
import trio
from msgspec import UnsetType

from relay import crypto
from relay.chat import github, mentions
from relay.chat.applications import checked_name
from relay.chat.args import field_error, id_field, snowflake
from relay.chat.embedmedia import relay_image
from relay.chat.embeds import checked_embeds
from relay.chat.files import Uploads
from relay.chat.imagerefs import image_digests, release_images, show_images
from relay.chat.mentions import Mentions
from relay.chat.messages import channel_busy, content_of, posted, queue_post
from relay.chat.objects import Webhook, WebhookWithToken, message_out, webhook_out
from relay.errors import NotFound, RateLimited, RelayError, Unauthorized
from relay.ids import parse_id
from relay.media.images import AVATAR_SIDE
from relay.storage.access import now_ms
from relay.storage.messages import NewMessage, WebhookAuthor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.chat.embeds import EmbedImage
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
    avatar: EmbedImage | None,
    *,
    mentions: Mentions | None = None,
    embeds: str | None = None,
    upload_ids: Sequence[int] = (),
) -> Message:
    new = NewMessage(
        channel_id=webhook.channel_id,
        author_id=webhook.id,
        content=content,
        nonce=None,
        reply_to=None,
        mentions=mentions.mentions if mentions else [],
        role_mentions=mentions.role_mentions if mentions else [],
        everyone=mentions.everyone if mentions else 0,
        now_ms=now_ms(),
        embeds=embeds,
        attachments=list(upload_ids),
        webhook=WebhookAuthor(webhook.id, username, avatar.url if avatar else None),
    )
    avatar_digests = image_digests(avatar.url) if avatar else []
    with trio.move_on_after(chat.settings.send_timeout_s):
        try:
            done = await posted(await queue_post(chat, new))
        except RelayError:
            await release_images(chat, avatar_digests)  # not stored: nothing shows it
            raise
        await show_images(chat, done.message.id, avatar_digests)  # released with the message
        return message_out(done.message, urls=chat.file_urls)
    raise channel_busy()  # an avatar no message ends up showing goes with the hourly prune


async def admit(chat: Chat, webhook_id: str, token: str) -> WebhookRow:
    """The webhook, its token checked and one message of its budget spent (before any file of
    the message is stored). Raises what `authorized` raises, RateLimited."""
    webhook = await authorized(chat, webhook_id, token)
    _spend(chat, webhook)
    return webhook


async def uploads(chat: Chat, webhook: WebhookRow) -> Uploads:
    """Where an admitted webhook's files go: uploads to its channel, stored as the webhook's
    (its own daily quota; no member permissions: the token is its permission)."""
    return await Uploads.for_uploader(chat, webhook.id, webhook.channel_id)


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook message's body, checked (`check`)."""

    content: str
    username: str | None
    avatar_url: str | None
    embeds: str | None
    mentions: Mentions


def check(data: commands.ExecuteWebhook, with_files: bool = False) -> Checked:
    """Check a webhook message's body before its token is (a bad body costs no budget):
    content (may be empty with embeds or files), embeds as a user's send's, allowed_mentions,
    username, avatar_url. Raises BadRequest("invalid_field")."""
    embeds = checked_embeds(data.embeds) if data.embeds else None
    content = data.content
    if content or (embeds is None and not with_files):
        content = content_of(content)
    return Checked(
        content=content,
        username=checked_name(data.username, "username") if data.username is not None else None,
        avatar_url=checked_avatar_url(data.avatar_url) if data.avatar_url is not None else None,
        embeds=embeds,
        mentions=mentions.of_content(content, data.allowed_mentions, None),
    )


async def execute(
    chat: Chat, webhook: WebhookRow, checked: Checked, upload_ids: Sequence[int] = ()
) -> Message:
    """Post a checked message as an admitted webhook, with its files (`upload_ids`). Embed
    images are fetched and served by Relay after the commit (relay.chat.previews); the
    avatar_url now (left out if it cannot become an image Relay serves). Raises
    NotFound("unknown_webhook") if it was deleted meanwhile, Unavailable("channel_busy")."""
    avatar = None
    if checked.avatar_url is not None:
        avatar = await relay_image(
            chat, checked.avatar_url, chat.fetch_policy, max_side=AVATAR_SIDE
        )
    return await _post(
        chat,
        webhook,
        checked.content,
        checked.username or webhook.name,
        avatar,
        mentions=checked.mentions,
        embeds=checked.embeds,
        upload_ids=upload_ids,
    )


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
    return await _post(chat, webhook, text, GITHUB_NAME, None)
