"""Message routes: /v1/api/channels/{id}/messages/*, reactions, pins, bulk delete, read acks
and typing; and the read states that READY carries.

A channel the caller cannot see (no VIEW_CHANNEL, not a member or recipient) is 404; what it may
not do there is 403 naming the permission. Reads are checked here; writes are checked again by
their write function, in the transaction that makes the change.

New messages go through the channel's actor (`Hub.queue_message`), which gives them their id
and publishes MESSAGE_CREATE in the same order as history. The gateway's MESSAGE_SEND (op 12)
posts through the same functions as the REST route (`sendable_channel`, `queue_message`,
`message_posted`), so both check, store and announce a message alike. Every other change is
written first and announced after its commit through `Hub.dispatch_channel`, so it also travels
the actor's queue and cannot overtake the message it is about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import emoji as emoji_db
import trio
from quart import Blueprint, Response, request

from actors import ActorStopped
from relay.accounts import now_ms
from relay.chat import commands, objects
from relay.chat.objects import author_out, iso, message_out
from relay.errors import BadRequest, NotFound, Unavailable
from relay.ids import parse_id
from relay.permissions import P
from relay.ratelimit import RateLimiter
from relay.rest.http import (
    audit_reason,
    body,
    field_error,
    json_response,
    no_content,
    principal,
    snowflake,
)
from relay.storage import audience, messages

if TYPE_CHECKING:
    import outcome
    from sqlite_utils import Database

    from actors import Asked
    from relay.runtime import Runtime
    from relay.storage.audience import VisibleChannel

MAX_LIMIT = 100
DEFAULT_LIMIT = 50
TYPING_EVERY_S = 5.0  # a user's typing in one channel is announced at most this often
TYPING_KEYS = 50_000  # (user, channel) pairs remembered for that; the idlest are forgotten
MAX_EMOJI_CHARS = 32  # longer than any emoji sequence; bounds the work is_emoji does
SEND_TIMEOUT_S = 10.0  # a new message's wait for its channel's actor, and then for its commit


def post_message(
    db: Database,
    message_id: int,
    channel_id: int,
    author_id: int,
    content: str,
    nonce: str | None,
    reply_to: int | None,
    mention_ids: list[int],
    now: int,
) -> tuple[objects.Message, bool]:
    """The channel actor's write function: `messages.create`, answered as the message object.

    A new message has no reactions yet, so its object is also the MESSAGE_CREATE payload. A
    repeated nonce answers the earlier message as a `RepeatedMessage` (same JSON, and `me` is
    the author's, which is who is asking)."""
    row, created = messages.create(
        db, message_id, channel_id, author_id, content, nonce, reply_to, mention_ids, now
    )
    return message_out(row, kind=objects.Message if created else objects.RepeatedMessage), created


async def read_states(rt: Runtime, user_id: int) -> list[objects.ReadState]:
    """For READY: read position, newest message and unread mention count of every channel the
    user can see that takes messages (one query)."""
    rows = await rt.store.read(messages.read_states, user_id)
    return [
        objects.ReadState(
            channel_id=str(r.channel_id),
            last_read_id=str(r.last_read_id) if r.last_read_id else None,
            last_message_id=str(r.last_message_id) if r.last_message_id is not None else None,
            mention_count=r.mention_count,
        )
        for r in rows
    ]


def reaction_event(
    channel_id: int, message_id: int, user_id: int, emoji: str
) -> objects.ReactionEvent:
    return objects.ReactionEvent(
        message_id=str(message_id), channel_id=str(channel_id), user_id=str(user_id), emoji=emoji
    )


def content_of(text: str) -> str:
    """Message content as REST's body decoder and the gateway both require it."""
    if not 0 < len(text) <= commands.MAX_CONTENT_CHARS:  # REST bodies were checked already
        raise field_error("content", f"must be 1 to {commands.MAX_CONTENT_CHARS} characters")
    if not text.strip():
        raise field_error("content", "must not be only whitespace")
    return text


# -- posting a message (REST and gateway op 12) --------------------------------------------------


async def text_channel(rt: Runtime, user_id: int, channel_id: str) -> VisibleChannel:
    """The channel if the user can see it (else 404 unknown_channel, also for a malformed id)
    and it takes messages (else 400 not_a_text_channel)."""
    channel = await rt.store.read(
        audience.visible_channel, snowflake(channel_id, "channel"), user_id
    )
    if channel is None:
        raise NotFound("unknown channel", code="unknown_channel")
    if channel.type not in messages.TEXT_TYPES:
        raise BadRequest("this channel does not take messages", code="not_a_text_channel")
    return channel


async def sendable_channel(rt: Runtime, user_id: int, channel_id: str) -> VisibleChannel:
    """A text channel the user may post in (403 missing_permission or timed_out otherwise)."""
    channel = await text_channel(rt, user_id, channel_id)
    channel.require(P.SEND_MESSAGES)  # fail fast; the write checks again
    return channel


def post_args(
    user_id: int, channel: VisibleChannel, content: str, nonce: str | None, reply_to: str | None
) -> tuple[Any, ...]:
    """Check a new message's content and reply_to; the arguments of `post_message` after its
    message id. Raises what `content_of` raises, and BadRequest("invalid_field") for a
    reply_to that is not an id."""
    content = content_of(content)
    reply_id = None
    if reply_to is not None:
        reply_id = parse_id(reply_to)
        if reply_id is None:
            raise field_error("reply_to", "must be a message id")
    mentions = messages.parse_mentions(content)
    return (channel.id, user_id, content, nonce, reply_id, mentions, now_ms())


async def queue_message(
    rt: Runtime,
    user_id: int,
    channel: VisibleChannel,
    content: str,
    nonce: str | None,
    reply_to: str | None,
) -> Asked[objects.Message]:
    """Check a new message (`post_args`) and queue it with the channel's actor.

    Returns once it is queued (messages queued one after the other commit in that order);
    `message_posted` waits for the result.
    """
    args = post_args(user_id, channel, content, nonce, reply_to)
    asked: Asked[objects.Message] = await rt.hub.queue_message(channel.id, post_message, *args)
    return asked


async def message_posted(asked: Asked[objects.Message]) -> objects.Message:
    """The message once committed: a `RepeatedMessage` for a nonce seen before. No timeout of
    its own (callers bound it, then answer `channel_busy()`).

    Raises the write's errors (`messages.create`), or NotFound("unknown_channel") if the
    channel's actor stopped without answering (the channel was deleted meanwhile).
    """
    try:
        return await asked.answer()
    except ActorStopped:
        raise NotFound("unknown channel", code="unknown_channel") from None


def message_of(result: outcome.Outcome[objects.Message]) -> objects.Message:
    """`message_posted` for an answer passed to a callback (`Hub.queue_message_with`)."""
    try:
        return result.unwrap()
    except ActorStopped:
        raise NotFound("unknown channel", code="unknown_channel") from None


def channel_busy() -> Unavailable:
    # The write may still commit; a retry with the same nonce finds it.
    return Unavailable("the channel is too busy; retry with the same nonce", code="channel_busy")


def query_id(name: str) -> int | None:
    text = request.args.get(name)
    if text is None:
        return None
    value = parse_id(text)
    if value is None:
        raise field_error(name, "must be an id")
    return value


def query_limit() -> int:
    text = request.args.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    # Length first: int() of thousands of digits is slow, and refused past 4300.
    if not (0 < len(text) <= 3 and text.isascii() and text.isdigit()) or not (
        1 <= int(text) <= MAX_LIMIT
    ):
        raise field_error("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(text)


def checked_emoji(text: str) -> str:
    """The emoji of a reaction path segment (already URL-decoded): one emoji, nothing else."""
    if len(text) > MAX_EMOJI_CHARS or not emoji_db.is_emoji(text):
        raise BadRequest(f"not a single emoji: {text[:MAX_EMOJI_CHARS]!r}", code="invalid_emoji")
    return text


def messages_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("messages", __name__, url_prefix="/v1/api/channels")
    typing = RateLimiter(1, TYPING_EVERY_S, max_keys=TYPING_KEYS)

    async def readable(user_id: int, channel_id: str) -> VisibleChannel:
        """A text channel whose history the user may read."""
        channel = await text_channel(rt, user_id, channel_id)
        channel.require(P.READ_MESSAGE_HISTORY)
        return channel

    @bp.post("/<channel_id>/messages")
    async def create_message(channel_id: str) -> Response:
        who = principal(rt)
        if (refused := rt.hub.message_refused(who.user_id)) is not None:
            raise refused  # one budget with the gateway's MESSAGE_SEND: 429 and Retry-After
        channel = await sendable_channel(rt, who.user_id, channel_id)
        data = await body(commands.CreateMessage)
        with trio.move_on_after(SEND_TIMEOUT_S):
            asked = await queue_message(
                rt, who.user_id, channel, data.content, data.nonce, data.reply_to
            )
            payload = await message_posted(asked)
            status = 200 if isinstance(payload, objects.RepeatedMessage) else 201
            return json_response(payload, status)
        raise channel_busy()

    @bp.get("/<channel_id>/messages")
    async def list_messages(channel_id: str) -> Response:
        who = principal(rt)
        channel = await readable(who.user_id, channel_id)
        given = [name for name in ("before", "after", "around") if name in request.args]
        if len(given) > 1:
            reason = "give at most one of before, after and around"
            raise BadRequest(reason, code="invalid_field", fields=dict.fromkeys(given, reason))
        rows = await rt.store.read(
            messages.history,
            channel.id,
            who.user_id,
            before=query_id("before"),
            after=query_id("after"),
            around=query_id("around"),
            limit=query_limit(),
        )
        return json_response([message_out(row) for row in rows])

    @bp.get("/<channel_id>/messages/<message_id>")
    async def get_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        channel = await readable(who.user_id, channel_id)
        row = await rt.store.read(
            messages.get, channel.id, snowflake(message_id, "message"), who.user_id
        )
        if row is None:
            raise NotFound("unknown message", code="unknown_message")
        return json_response(message_out(row))

    @bp.patch("/<channel_id>/messages/<message_id>")
    async def edit_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        if (refused := rt.hub.action_refused(who.user_id)) is not None:
            raise refused
        channel = await text_channel(rt, who.user_id, channel_id)
        mid = snowflake(message_id, "message")
        data = await body(commands.EditMessage)
        content = content_of(data.content)
        row = await rt.store.write(
            messages.edit,
            channel.id,
            mid,
            who.user_id,
            content,
            messages.parse_mentions(content),
            now_ms(),
        )
        await rt.hub.dispatch_channel(
            channel.id, "MESSAGE_UPDATE", message_out(row, for_event=True)
        )
        return json_response(message_out(row))

    @bp.delete("/<channel_id>/messages/<message_id>")
    async def delete_message(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        channel = await text_channel(rt, who.user_id, channel_id)
        mid = snowflake(message_id, "message")
        await rt.store.write(messages.delete, channel.id, mid, who.user_id, audit_reason())
        await rt.hub.dispatch_channel(
            channel.id,
            "MESSAGE_DELETE",
            objects.MessageDeleted(id=str(mid), channel_id=str(channel.id)),
        )
        return no_content()

    @bp.post("/<channel_id>/messages/bulk-delete")
    async def bulk_delete(channel_id: str) -> Response:
        who = principal(rt)
        channel = await text_channel(rt, who.user_id, channel_id)
        data = await body(commands.BulkDelete)
        ids = [parse_id(text) for text in data.messages]
        if None in ids or len(set(ids)) != len(ids):
            raise field_error("messages", "must be 2 to 100 different message ids")
        deleted = await rt.store.write(
            messages.bulk_delete,
            channel.id,
            who.user_id,
            [i for i in ids if i is not None],
            audit_reason(),
        )
        if deleted:
            await rt.hub.dispatch_channel(
                channel.id,
                "MESSAGE_DELETE_BULK",
                objects.MessagesDeleted(ids=[str(i) for i in deleted], channel_id=str(channel.id)),
            )
        return no_content()

    # -- pins ----------------------------------------------------------------------------------

    @bp.get("/<channel_id>/pins")
    async def list_pins(channel_id: str) -> Response:
        who = principal(rt)
        channel = await readable(who.user_id, channel_id)
        rows = await rt.store.read(messages.pinned, channel.id, who.user_id)
        return json_response([message_out(row) for row in rows])

    async def change_pin(channel_id: str, message_id: str, pin: bool) -> None:
        who = principal(rt)
        channel = await text_channel(rt, who.user_id, channel_id)
        mid = snowflake(message_id, "message")
        if pin:
            changed = await rt.store.write(
                messages.pin, channel.id, mid, who.user_id, now_ms(), audit_reason()
            )
        else:
            changed = await rt.store.write(
                messages.unpin, channel.id, mid, who.user_id, audit_reason()
            )
        if changed:
            await rt.hub.dispatch_channel(
                channel.id,
                "CHANNEL_PINS_UPDATE",
                objects.PinsUpdate(channel_id=str(channel.id), message_id=str(mid), pinned=pin),
            )

    @bp.put("/<channel_id>/pins/<message_id>")
    async def pin_message(channel_id: str, message_id: str) -> Response:
        await change_pin(channel_id, message_id, pin=True)
        return no_content()

    @bp.delete("/<channel_id>/pins/<message_id>")
    async def unpin_message(channel_id: str, message_id: str) -> Response:
        await change_pin(channel_id, message_id, pin=False)
        return no_content()

    # -- reactions -----------------------------------------------------------------------------

    @bp.put("/<channel_id>/messages/<message_id>/reactions/<emoji>/@me")
    async def add_reaction(channel_id: str, message_id: str, emoji: str) -> Response:
        return await react(channel_id, message_id, emoji, add=True)

    @bp.delete("/<channel_id>/messages/<message_id>/reactions/<emoji>/@me")
    async def remove_reaction(channel_id: str, message_id: str, emoji: str) -> Response:
        return await react(channel_id, message_id, emoji, add=False)

    async def react(channel_id: str, message_id: str, emoji: str, *, add: bool) -> Response:
        """Add or remove the caller's reaction; an event only when something changed."""
        who = principal(rt)
        if (refused := rt.hub.action_refused(who.user_id)) is not None:
            raise refused
        channel = await text_channel(rt, who.user_id, channel_id)
        mid = snowflake(message_id, "message")
        emoji = checked_emoji(emoji)
        if add:
            changed = await rt.store.write(
                messages.add_reaction, channel.id, mid, who.user_id, emoji, now_ms()
            )
        else:
            changed = await rt.store.write(
                messages.remove_reaction, channel.id, mid, who.user_id, emoji
            )
        if changed:
            await rt.hub.dispatch_channel(
                channel.id,
                "MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE",
                reaction_event(channel.id, mid, who.user_id, emoji),
            )
        return no_content()

    @bp.get("/<channel_id>/messages/<message_id>/reactions/<emoji>")
    async def list_reactions(channel_id: str, message_id: str, emoji: str) -> Response:
        who = principal(rt)
        channel = await readable(who.user_id, channel_id)
        mid = snowflake(message_id, "message")
        emoji = checked_emoji(emoji)
        rows = await rt.store.read(
            messages.reactors, channel.id, mid, emoji, query_id("after") or 0, query_limit()
        )
        return json_response([author_out(row) for row in rows])

    # -- read state and typing -----------------------------------------------------------------

    @bp.post("/<channel_id>/messages/<message_id>/ack")
    async def ack(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        channel = await text_channel(rt, who.user_id, channel_id)
        mid = snowflake(message_id, "message")
        if await rt.store.write(messages.ack, who.user_id, channel.id, mid):
            rt.hub.dispatch_user(
                who.user_id,
                "MESSAGE_ACK",
                objects.MessageAck(channel_id=str(channel.id), message_id=str(mid)),
            )
        return no_content()

    @bp.post("/<channel_id>/typing")
    async def start_typing(channel_id: str) -> Response:
        who = principal(rt)
        channel = await text_channel(rt, who.user_id, channel_id)
        channel.require(P.SEND_MESSAGES)
        if typing.hit(f"{who.user_id}:{channel.id}", trio.current_time()).allowed:
            await rt.hub.dispatch_channel(
                channel.id,
                "TYPING_START",
                objects.TypingStart(
                    channel_id=str(channel.id), user_id=str(who.user_id), timestamp=iso(now_ms())
                ),
            )
        return no_content()

    return bp
