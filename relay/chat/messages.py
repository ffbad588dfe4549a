"""Messages: posting, history, edits, deletes, pins, reactions, read state and typing.

Every edge calls these (REST routes, the gateway's MESSAGE_SEND), so a message is checked,
stored and announced alike whichever way it came. A channel the user cannot see (no
VIEW_CHANNEL, not a member or recipient) is 404 unknown_channel; what they may not do there is
403 naming the permission. Reads are checked here; writes are checked again by their storage
function, in the transaction that makes the change.

New messages go through the channel's order (`Fanout.post`): the channel's actor gives them
their id and publishes MESSAGE_CREATE in the same order as history. Every other change is
written first and announced after its commit with `Fanout.to_channel`, which travels the same
order, so it cannot overtake the message it is about.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import emoji as emoji_db
import trio
from msgspec import UNSET, UnsetType

from actors import ActorStopped
from relay.chat import events, mentions, threads
from relay.chat.args import field_error, snowflake
from relay.chat.embeds import checked_embeds
from relay.chat.imagerefs import release_images, show_images
from relay.chat.objects import (
    MessageAck,
    MessageDeleted,
    MessagesDeleted,
    PinsUpdate,
    ReactionEvent,
    ReadState,
    TypingStart,
    author_out,
    iso,
    message_out,
)
from relay.errors import BadRequest, NotFound, RelayError, Unavailable
from relay.ids import parse_id
from relay.permissions import P
from relay.storage import emojis as stored_emojis
from relay.storage import files as stored_files
from relay.storage import mentions as more_mentions
from relay.storage import messages
from relay.storage.access import now_ms
from relay.storage.emojis import custom_reaction
from relay.storage.messages import NewMessage

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    import outcome

    from actors import Asked, Reply
    from relay.chat.context import Chat
    from relay.chat.embeds import EmbedIn
    from relay.chat.mentions import AllowedMentions
    from relay.chat.objects import Author, Message
    from relay.chat.views import Views
    from relay.media.urls import FileUrls
    from relay.storage.audience import VisibleChannel
    from relay.storage.messages import MessageRow, Posted

MAX_EMOJI_CHARS = 32  # longer than any emoji sequence; bounds the work is_emoji does
MAX_CONTENT_CHARS = 4000  # characters (code points), as sent
SENDABLE_TTL_S = 30.0  # see SendableMemo
SENDABLE_KEPT = 10_000  # (user, channel) pre-checks kept; more and the memo starts over


def created_event(row: MessageRow, urls: FileUrls | None = None) -> events.MessageCreate:
    """MESSAGE_CREATE for a message just stored (the channel actor's `created`)."""
    return events.MessageCreate(d=message_out(row, for_event=True, urls=urls))


def content_of(text: str) -> str:
    """Message content as every edge requires it (REST's body type checked the length)."""
    if not 0 < len(text) <= MAX_CONTENT_CHARS:
        raise field_error("content", f"must be 1 to {MAX_CONTENT_CHARS} characters")
    if not text.strip():
        raise field_error("content", "must not be only whitespace")
    return text


def checked_emoji(text: str) -> str:
    """A reaction's emoji (already URL-decoded): one emoji, or a custom emoji `name:id`
    (whether it exists is checked when it is added: `custom_emoji_here`)."""
    if custom_reaction(text) is not None:
        return text
    if len(text) > MAX_EMOJI_CHARS or not emoji_db.is_emoji(text):
        raise BadRequest(f"not a single emoji: {text[:MAX_EMOJI_CHARS]!r}", code="invalid_emoji")
    return text


def channel_busy() -> Unavailable:
    # The write may still commit; a retry with the same nonce finds it.
    return Unavailable("the channel is too busy; retry with the same nonce", code="channel_busy")


# -- which channel -------------------------------------------------------------------------------


async def text_channel(chat: Chat, user_id: int, channel_id: str) -> VisibleChannel:
    """The channel if the user can see it (else 404 unknown_channel, also for a malformed id)
    and it takes messages (else 400 not_a_text_channel)."""
    channel = await chat.store.read(
        chat.q.audience.visible_channel, snowflake(channel_id, "channel"), user_id
    )
    if channel is None:
        raise NotFound("unknown channel", code="unknown_channel")
    if channel.type not in messages.TEXT_TYPES:
        raise BadRequest("this channel does not take messages", code="not_a_text_channel")
    return channel


async def sendable_channel(chat: Chat, user_id: int, channel_id: str) -> VisibleChannel:
    """A text channel the user may post in (403 missing_permission or timed_out otherwise);
    in a thread, one that is unarchived and followed by the poster from now on.
    A positive answer is kept (`SendableMemo`): only the fail-fast, since the write checks
    again."""
    now = trio.current_time()
    channel = chat.sendable.get(user_id, channel_id, now)
    if channel is None:
        changes = chat.views.changes  # before the read: a change during it makes it stale
        channel = await text_channel(chat, user_id, channel_id)
        channel.require(P.SEND_MESSAGES)
        chat.sendable.put(user_id, channel_id, channel, changes, now)
    if channel.type == "thread":
        await threads.before_post(chat, user_id, channel)  # unarchive, join
    return channel


class SendableMemo:
    """Who may post where, as last checked: so a post usually needs no read before its write.

    The pre-check is only a fail-fast: `messages.create` checks visibility and SEND_MESSAGES
    again in its transaction and refuses with the same codes. Without it, that read (a worker
    thread round trip, and a permission load in a reader whose cache every commit clears) cost
    more than the write. An entry holds while no permission or membership changed anywhere
    (`Views.changes`), and for SENDABLE_TTL_S after its check or after the last post that
    committed there (which passed the write's check); a post the write refuses drops it.
    """

    __slots__ = ("_entries", "_views")

    def __init__(self, views: Views) -> None:
        self._views = views
        self._entries: dict[tuple[int, str], tuple[float, int, VisibleChannel]] = {}

    def get(self, user_id: int, channel_id: str, now: float) -> VisibleChannel | None:
        entry = self._entries.get((user_id, channel_id))
        if entry is None:
            return None
        at, changes, channel = entry
        if changes != self._views.changes or now - at >= SENDABLE_TTL_S:
            del self._entries[user_id, channel_id]
            return None
        return channel

    def put(
        self, user_id: int, channel_id: str, channel: VisibleChannel, changes: int, now: float
    ) -> None:
        if len(self._entries) >= SENDABLE_KEPT:
            self._entries.clear()
        self._entries[user_id, channel_id] = (now, changes, channel)

    def committed(self, user_id: int, channel_id: str, now: float) -> None:
        """A post there just passed the write's own check: the entry is fresh again."""
        entry = self._entries.get((user_id, channel_id))
        if entry is not None and entry[1] == self._views.changes:
            self._entries[user_id, channel_id] = (now, entry[1], entry[2])

    def refused(self, user_id: int, channel_id: str) -> None:
        """The write refused a post there: check before the next one."""
        self._entries.pop((user_id, channel_id), None)


async def readable_channel(chat: Chat, user_id: int, channel_id: str) -> VisibleChannel:
    """A text channel whose history the user may read."""
    channel = await text_channel(chat, user_id, channel_id)
    channel.require(P.READ_MESSAGE_HISTORY)
    return channel


# -- posting -------------------------------------------------------------------------------------


def new_message(
    user_id: int,
    channel: VisibleChannel,
    content: str,
    nonce: str | None,
    reply_to: str | None,
    attachments: Sequence[int] = (),
    *,
    embeds: list[EmbedIn] | None = None,
    flags: int = 0,
    allowed: AllowedMentions | None = None,
    online: Callable[[int], Collection[int]] | None = None,
) -> NewMessage:
    """Check a new message's content, reply_to, embeds and flags, and read its mentions
    (`allowed`: the send's allowed_mentions; `online`: a server's online members, for @here).
    Raises what `content_of` raises (content may be empty if there are embeds or files),
    BadRequest("invalid_field") for a reply_to that is not an id, for embeds past their limits
    or unknown flags, and Forbidden("missing_permission") for embeds without EMBED_LINKS.
    `attachments`: upload ids (relay.chat.files), checked by the write; they need
    ATTACH_FILES (403 missing_permission)."""
    if attachments:
        channel.require(P.ATTACH_FILES)
    stored_embeds = None
    if embeds:
        channel.require(P.EMBED_LINKS)
        stored_embeds = checked_embeds(embeds)
    if content or (stored_embeds is None and not attachments):
        content = content_of(content)
    reply_id = None
    if reply_to is not None:
        reply_id = parse_id(reply_to)
        if reply_id is None:
            raise field_error("reply_to", "must be a message id")
    found = mentions.of_content(content, allowed, channel, online)
    return NewMessage(
        channel_id=channel.id,
        author_id=user_id,
        content=content,
        nonce=nonce,
        reply_to=reply_id,
        mentions=found.mentions,
        now_ms=now_ms(),
        attachments=list(attachments),
        embeds=stored_embeds,
        flags=checked_flags(flags),
        role_mentions=found.role_mentions,
        everyone=found.everyone,
        here_candidates=found.here_candidates,
        mention_replied=found.mention_replied,
    )


def upload_ids(texts: Sequence[str]) -> list[int]:
    """The upload ids a send names (`attachments: [{id}]`). Raises BadRequest("invalid_field")
    for one that is not an id, or one named twice."""
    ids = [parse_id(text) for text in texts]
    if None in ids or len(set(ids)) != len(ids):
        raise field_error("attachments", "must be different upload ids")
    return [i for i in ids if i is not None]


def checked_flags(flags: int) -> int:
    """Message flags a sender may set: SUPPRESS_EMBEDS only."""
    if flags & ~messages.SUPPRESS_EMBEDS:
        raise field_error("flags", "only SUPPRESS_EMBEDS (4) may be set")
    return flags


async def queue_post(chat: Chat, new: NewMessage) -> Asked[Posted]:
    """Queue a checked message in its channel's order; returns once it is queued (messages
    queued one after the other commit in that order). `posted` waits for the outcome."""
    return await chat.fanout.post(new)


async def queue_post_with(
    chat: Chat,
    new: NewMessage,
    on_answer: Callable[[outcome.Outcome[Posted]], object],
    deadline: float,
) -> Reply[Posted]:
    """`queue_post`, with the outcome handed to `on_answer` (see `posted_of`)."""
    return await chat.fanout.post_with(new, on_answer, deadline=deadline)


async def posted(asked: Asked[Posted]) -> Posted:
    """A queued message once committed (`created` is False for a nonce seen before). No timeout
    of its own (callers bound it, then answer `channel_busy()`).

    Raises the write's errors (`messages.create`), or NotFound("unknown_channel") if the
    channel's actor stopped without answering (the channel was deleted meanwhile)."""
    try:
        return await asked.answer()
    except ActorStopped:
        raise _gone() from None


def posted_of(result: outcome.Outcome[Posted]) -> Posted:
    """`posted` for an outcome handed to a callback."""
    try:
        return result.unwrap()
    except ActorStopped:
        raise _gone() from None


def _gone() -> NotFound:
    return NotFound("unknown channel", code="unknown_channel")


async def post(
    chat: Chat,
    user_id: int,
    channel_id: str,
    content: str,
    nonce: str | None,
    reply_to: str | None,
    attachments: Sequence[int] = (),
    *,
    embeds: list[EmbedIn] | None = None,
    flags: int = 0,
    allowed: AllowedMentions | None = None,
) -> tuple[Message, bool]:
    """Post a message and wait for its commit: the message, and False if a post with the same
    nonce made it earlier. Raises 429 rate_limited over the user's budget, 503 channel_busy if
    it was not committed within `send_timeout_s`, and what the checks and the write raise.
    `attachments`: upload ids (relay.chat.files) the message claims, ATTACH_FILES needed."""
    if (refused := await chat.message_refused(user_id)) is not None:
        raise refused  # one budget with the gateway's MESSAGE_SEND
    channel = await sendable_channel(chat, user_id, channel_id)
    if attachments:
        channel.require(P.ATTACH_FILES)
    new = new_message(
        user_id,
        channel,
        content,
        nonce,
        reply_to,
        attachments,
        embeds=embeds,
        flags=flags,
        allowed=allowed,
        online=chat.fanout.online,
    )
    with trio.move_on_after(chat.settings.send_timeout_s):
        asked = await queue_post(chat, new)
        try:
            done = await posted(asked)
        except RelayError:
            chat.sendable.refused(user_id, channel_id)
            raise
        chat.sendable.committed(user_id, channel_id, trio.current_time())
        return message_out(done.message, urls=chat.file_urls), done.created
    raise channel_busy()


# -- reading -------------------------------------------------------------------------------------


async def history(
    chat: Chat,
    user_id: int,
    channel_id: str,
    *,
    before: int | None,
    after: int | None,
    around: int | None,
    limit: int,
) -> list[Message]:
    """A page of the channel's messages, newest first (oldest first with `after`)."""
    channel = await readable_channel(chat, user_id, channel_id)
    rows = await chat.store.read(
        chat.q.messages.history,
        channel.id,
        user_id,
        before=before,
        after=after,
        around=around,
        limit=limit,
    )
    return [message_out(row, urls=chat.file_urls) for row in rows]


async def get(chat: Chat, user_id: int, channel_id: str, message_id: str) -> Message:
    channel = await readable_channel(chat, user_id, channel_id)
    row = await chat.store.read(
        chat.q.messages.get, channel.id, snowflake(message_id, "message"), user_id
    )
    if row is None:
        raise NotFound("unknown message", code="unknown_message")
    return message_out(row, urls=chat.file_urls)


async def pins(chat: Chat, user_id: int, channel_id: str) -> list[Message]:
    channel = await readable_channel(chat, user_id, channel_id)
    rows = await chat.store.read(chat.q.messages.pinned, channel.id, user_id)
    return [message_out(row, urls=chat.file_urls) for row in rows]


async def reactors(
    chat: Chat, user_id: int, channel_id: str, message_id: str, emoji: str, after: int, limit: int
) -> list[Author]:
    """Who reacted with `emoji`, by user id, after `after`."""
    channel = await readable_channel(chat, user_id, channel_id)
    mid = snowflake(message_id, "message")
    rows = await chat.store.read(
        chat.q.messages.reactors, channel.id, mid, checked_emoji(emoji), after, limit
    )
    return [author_out(row) for row in rows]


async def read_states(chat: Chat, user_id: int) -> list[ReadState]:
    """Read position, newest message and unread mention count of every channel the user can
    see that takes messages (one query)."""
    rows = await chat.store.read(chat.q.messages.read_states, user_id)
    return [
        ReadState(
            channel_id=str(r.channel_id),
            last_read_id=str(r.last_read_id) if r.last_read_id else None,
            last_message_id=str(r.last_message_id) if r.last_message_id is not None else None,
            mention_count=r.mention_count,
        )
        for r in rows
    ]


# -- changing ------------------------------------------------------------------------------------


async def edit(
    chat: Chat,
    user_id: int,
    channel_id: str,
    message_id: str,
    content: str | None,
    *,
    embeds: list[EmbedIn] | UnsetType | None = UNSET,
    flags: int | None = None,
) -> Message:
    """Edit one's own message (429 over the action budget): its content, rich embeds (None or
    [] removes them, UNSET keeps them) and flags; what is None or UNSET stays."""
    if (refused := await chat.action_refused(user_id)) is not None:
        raise refused
    channel = await text_channel(chat, user_id, channel_id)
    mid = snowflake(message_id, "message")
    if content is None and isinstance(embeds, UnsetType) and flags is None:
        raise field_error("content", "give content, embeds or flags")
    if content is not None:
        content = content_of(content)
    stored_embeds: str | UnsetType | None = UNSET
    if not isinstance(embeds, UnsetType):
        if embeds:
            channel.require(P.EMBED_LINKS)
        stored_embeds = checked_embeds(embeds) if embeds else None
    row = await chat.store.write(
        chat.q.messages.edit,
        channel.id,
        mid,
        user_id,
        content,
        messages.parse_mentions(content) if content is not None else [],
        now_ms(),
        embeds=stored_embeds,
        flags=checked_flags(flags) if flags is not None else None,
        role_ids=more_mentions.parse_roles(content) if content is not None else (),
        everyone=more_mentions.parse_everyone(content) if content is not None else 0,
    )
    await chat.fanout.to_channel(
        channel.id, events.MessageUpdate(d=message_out(row, for_event=True, urls=chat.file_urls))
    )
    await show_images(chat, mid)  # images the edit took away (embeds, previews) are released
    if chat.link_previews is not None:
        chat.link_previews.submit(row)  # after the commit; never waits (see LinkPreviews)
    return message_out(row, urls=chat.file_urls)


async def delete(
    chat: Chat, user_id: int, channel_id: str, message_id: str, reason: str | None
) -> None:
    channel = await text_channel(chat, user_id, channel_id)
    mid = snowflake(message_id, "message")
    blobs = await chat.store.read(stored_files.digests_of_message, mid)
    images = await chat.store.read(stored_files.images_of_messages, [mid])
    await chat.store.write(chat.q.messages.delete, channel.id, mid, user_id, reason)
    await chat.fanout.to_channel(
        channel.id, events.MessageDelete(d=MessageDeleted(id=str(mid), channel_id=str(channel.id)))
    )
    if blobs and chat.media is not None:
        # Its files stop being served with the row; their blobs go once nothing else uses them.
        await chat.media.release(blobs, partial(chat.store.read, stored_files.unreferenced))
    await release_images(chat, images)  # embed images and a webhook avatar it showed


async def bulk_delete(
    chat: Chat, user_id: int, channel_id: str, message_ids: list[str], reason: str | None
) -> None:
    channel = await text_channel(chat, user_id, channel_id)
    ids = [parse_id(text) for text in message_ids]
    if None in ids or len(set(ids)) != len(ids):
        raise field_error("messages", "must be 2 to 100 different message ids")
    wanted = [i for i in ids if i is not None]
    blobs = await chat.store.read(stored_files.digests_of_messages, wanted)
    images = await chat.store.read(stored_files.images_of_messages, wanted)
    deleted = await chat.store.write(
        chat.q.messages.bulk_delete, channel.id, user_id, wanted, reason
    )
    if deleted:
        await announce_bulk_delete(chat, channel.id, deleted)
    if blobs and chat.media is not None:
        await chat.media.release(blobs, partial(chat.store.read, stored_files.unreferenced))
    await release_images(chat, images)


async def announce_bulk_delete(chat: Chat, channel_id: int, deleted: list[int]) -> None:
    payload = MessagesDeleted(ids=[str(i) for i in deleted], channel_id=str(channel_id))
    await chat.fanout.to_channel(channel_id, events.MessageDeleteBulk(d=payload))


async def set_pinned(
    chat: Chat, user_id: int, channel_id: str, message_id: str, pin: bool, reason: str | None
) -> None:
    """Pin or unpin; an event only when something changed."""
    channel = await text_channel(chat, user_id, channel_id)
    mid = snowflake(message_id, "message")
    if pin:
        changed = await chat.store.write(
            chat.q.messages.pin, channel.id, mid, user_id, now_ms(), reason, chat.settings.max_pins
        )
    else:
        changed = await chat.store.write(chat.q.messages.unpin, channel.id, mid, user_id, reason)
    if changed:
        payload = PinsUpdate(channel_id=str(channel.id), message_id=str(mid), pinned=pin)
        await chat.fanout.to_channel(channel.id, events.PinsUpdateEvent(d=payload))


async def react(
    chat: Chat, user_id: int, channel_id: str, message_id: str, emoji: str, *, add: bool
) -> None:
    """Add or remove the user's reaction (429 over the action budget); an event only when
    something changed."""
    if (refused := await chat.action_refused(user_id)) is not None:
        raise refused
    channel = await text_channel(chat, user_id, channel_id)
    mid = snowflake(message_id, "message")
    emoji = checked_emoji(emoji)
    if add and custom_reaction(emoji) is not None:
        emoji = await custom_emoji_here(chat, channel, emoji)
    if add:
        changed = await chat.store.write(
            chat.q.messages.add_reaction,
            channel.id,
            mid,
            user_id,
            emoji,
            now_ms(),
        )
    else:
        changed = await chat.store.write(
            chat.q.messages.remove_reaction, channel.id, mid, user_id, emoji
        )
    if changed:
        payload = ReactionEvent(
            message_id=str(mid), channel_id=str(channel.id), user_id=str(user_id), emoji=emoji
        )
        event = events.ReactionAdd(d=payload) if add else events.ReactionRemove(d=payload)
        await chat.fanout.to_channel(channel.id, event)


async def custom_emoji_here(chat: Chat, channel: VisibleChannel, text: str) -> str:
    """A custom emoji reaction being added: an emoji of the channel's server (else 400
    invalid_emoji), as `name:id` with its current name."""
    parsed = custom_reaction(text)
    found = None
    if parsed is not None and channel.server_id is not None:
        found = await chat.store.read(stored_emojis.get_emoji, channel.server_id, parsed[1])
    if found is None:
        raise BadRequest(f"no such custom emoji here: {text[:60]!r}", code="invalid_emoji")
    return f"{found.name}:{found.id}"


async def ack(chat: Chat, user_id: int, channel_id: str, message_id: str) -> None:
    """Mark the channel read up to a message; the user's sessions hear MESSAGE_ACK."""
    channel = await text_channel(chat, user_id, channel_id)
    mid = snowflake(message_id, "message")
    if await chat.store.write(chat.q.messages.ack, user_id, channel.id, mid):
        payload = MessageAck(channel_id=str(channel.id), message_id=str(mid))
        chat.fanout.to_users((user_id,), events.MessageAckEvent(d=payload))


async def start_typing(chat: Chat, user_id: int, channel_id: str) -> None:
    """TYPING_START to the channel, at most once per `typing_interval_s` per user and
    channel."""
    channel = await text_channel(chat, user_id, channel_id)
    channel.require(P.SEND_MESSAGES)
    if chat.typing_limiter.hit(f"{user_id}:{channel.id}", trio.current_time()).allowed:
        payload = TypingStart(
            channel_id=str(channel.id), user_id=str(user_id), timestamp=iso(now_ms())
        )
        await chat.fanout.to_channel(channel.id, events.TypingStartEvent(d=payload))
