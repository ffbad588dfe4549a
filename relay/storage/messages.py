"""Queries for messages: create (with nonce dedup, mentions and slowmode), history, edit,
delete (one or in bulk), pins, reactions and read state.

Plain sync functions over a sqlite-utils Database, `db` first; the Store runs them in its writer
or reader threads. Whole messages are assembled with a fixed number of queries however many are
asked for (rows, then their mentions, then their reaction counts), never one query per message.
Write functions check what they depend on inside their own transaction, so a check and its write
cannot be raced (a nonce seen twice, a message deleted between the route's check and the write,
a permission taken away): each write checks that the user can see the channel (else 404
unknown_channel) and has the permission the action needs there (else 403, see
relay.storage.access).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from relay.errors import BadRequest, Forbidden, NotFound, RateLimited, Unprocessable
from relay.ids import EPOCH_MS, SEQUENCE_BITS, WORKER_BITS, parse_id, timestamp_ms
from relay.permissions import Member, P, compute
from relay.storage import audit, files
from relay.storage import mentions as more_mentions
from relay.storage.access import accesses_of, server_perms
from relay.storage.audience import VisibleChannel, visible_channel
from relay.storage.files import AttachmentRow
from relay.storage.fulltext import index_text
from relay.storage.roles import held_roles
from relay.storage.sqlite.writecache import cached
from relay.storage.together import execute_together

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlite_utils import Database

TEXT_TYPES = frozenset({"text", "dm", "thread", "group_dm"})  # the channel types that take messages
NONCE_WINDOW_MS = 10 * 60 * 1000  # a nonce repeated by its author within this returns the first
# The dedup lookup. Left to itself the planner took messages_author (author, channel, id) for the
# ORDER BY and checked the nonce row by row: every post scanned its author's last ten minutes in
# the channel (a third of the writer's time in a 50-sender benchmark). (author_id, nonce) finds
# the one row.
NONCE_SQL = (
    "SELECT id FROM messages INDEXED BY messages_nonce"
    " WHERE author_id = ? AND nonce = ? AND channel_id = ? AND id >= ? ORDER BY id LIMIT 1"
)
MAX_MENTIONS = 100  # mentions stored per message
MAX_REACTION_EMOJI = 20  # distinct emoji per message
SUPPRESS_EMBEDS = 1 << 2  # message flag (Discord's): no embeds shown, no link previews made
MAX_ID = (1 << 63) - 1  # SQLite's largest INTEGER; no snowflake reaches it
_MENTION = re.compile(r"<@([0-9]{1,20})>")  # ASCII digits only: \d would take other scripts'


class AuthorRow(msgspec.Struct, frozen=True):
    id: int
    username: str
    display_name: str | None
    bot: bool = False
    avatar: str | None = None  # the avatar's blob digest (relay.chat.images)


class WebhookAuthor(msgspec.Struct, frozen=True):
    """Who a webhook's message shows as: the webhook, with the name and avatar URL it was
    posted with (the webhook's name, or the message's override)."""

    webhook_id: int
    username: str
    avatar_url: str | None


class ReactionCount(msgspec.Struct, frozen=True):
    emoji: str
    count: int
    me: bool  # whether the viewer the message was read for is among them


class MessageRow(msgspec.Struct, frozen=True):
    id: int
    channel_id: int
    server_id: int | None
    author: AuthorRow
    content: str
    nonce: str | None
    reply_to: int | None
    edited_at: int | None
    mentions: list[int]  # ascending
    reactions: list[ReactionCount]  # in the order each emoji was first used
    pinned: bool = False
    embeds: str | None = None  # JSON array of embed objects (relay.chat.embeds), or None
    flags: int = 0  # message flags (SUPPRESS_EMBEDS)
    webhook: WebhookAuthor | None = None  # a webhook's message: who it shows as
    thread_id: int | None = None  # the thread started from it
    mention_roles: list[int] = []  # ascending (relay.storage.mentions)
    mention_everyone: bool = False  # @everyone or @here, by someone allowed to
    attachments: list[AttachmentRow] = msgspec.field(default_factory=list)  # in their order


class ReadStateRow(msgspec.Struct, frozen=True):
    channel_id: int
    last_read_id: int  # 0: nothing read yet
    last_message_id: int | None
    mention_count: int


def parse_mentions(content: str) -> list[int]:
    """The user ids of the `<@id>` tokens in `content`, first occurrence first, without repeats.
    Only canonical ids count (`<@007>` is text, not a mention)."""
    seen: dict[int, None] = {}
    for match in _MENTION.finditer(content):
        user_id = parse_id(match.group(1))
        if user_id is not None:
            seen.setdefault(user_id)
    return list(seen)


def first_id_at(ms: int) -> int:
    """The smallest snowflake made at or after Unix time `ms`."""
    return max(0, ms - EPOCH_MS) << (WORKER_BITS + SEQUENCE_BITS)


# -- reading whole messages ----------------------------------------------------------------------

_SELECT = (
    "SELECT m.id, m.channel_id, c.server_id, m.author_id, u.username, u.display_name,"
    " m.content, m.nonce, m.reply_to, m.edited_at,"
    " EXISTS (SELECT 1 FROM pins p WHERE p.message_id = m.id), m.embeds, m.flags,"
    " u.bot, w.webhook_id, w.username, w.avatar_url,"
    " (SELECT t.id FROM channels t WHERE t.starter_message_id = m.id), u.avatar"
    " FROM messages m JOIN users u ON u.id = m.author_id JOIN channels c ON c.id = m.channel_id"
    " LEFT JOIN webhook_messages w ON u.bot AND w.message_id = m.id"
)


_MENTIONS_OF = (
    "SELECT message_id, user_id FROM message_mentions"
    " WHERE message_id IN (SELECT value FROM json_each(?)) ORDER BY message_id, user_id"
)
_REACTIONS_OF = (
    "SELECT message_id, emoji, count(*), coalesce(max(user_id = ?), 0) FROM reactions"
    " WHERE message_id IN (SELECT value FROM json_each(?))"
    " GROUP BY message_id, emoji ORDER BY message_id, min(created_at), emoji"
)


def _complete(db: Database, rows: Sequence[Any], viewer: int | None) -> list[MessageRow]:
    """Attach mentions, reaction counts and files to message rows (in the order given)."""
    if not rows:
        return []
    ids = json.dumps([row[0] for row in rows])
    # Five reads that depend only on the ids: one round trip on PostgreSQL.
    found = execute_together(
        db,
        [
            (_MENTIONS_OF, (ids,)),
            (_REACTIONS_OF, (viewer, ids)),
            (more_mentions.EXTRA_ROLES_SQL, (ids,)),
            (more_mentions.EXTRA_EVERYONE_SQL, (ids,)),
            (files.OF_MESSAGES_SQL, (ids,)),
        ],
    )
    mentions: dict[int, list[int]] = {}
    for message_id, user_id in found[0]:
        mentions.setdefault(message_id, []).append(user_id)
    reactions: dict[int, list[ReactionCount]] = {}
    for message_id, emoji, count, me in found[1]:
        reactions.setdefault(message_id, []).append(ReactionCount(emoji, count, bool(me)))
    extras = more_mentions.extras_of(found[2], found[3])
    none = more_mentions.Extra()
    attachments = files.attachments_of(found[4])
    return [
        MessageRow(
            id=row[0],
            channel_id=row[1],
            server_id=row[2],
            author=AuthorRow(row[3], row[4], row[5], bool(row[13]), row[18]),
            content=row[6],
            nonce=row[7],
            reply_to=row[8],
            edited_at=row[9],
            mentions=mentions.get(row[0], []),
            reactions=reactions.get(row[0], []),
            pinned=bool(row[10]),
            embeds=row[11],
            flags=row[12],
            webhook=WebhookAuthor(row[14], row[15], row[16]) if row[14] is not None else None,
            thread_id=row[17],
            mention_roles=extras.get(row[0], none).roles,
            mention_everyone=extras.get(row[0], none).everyone,
            attachments=attachments.get(row[0], []),
        )
        for row in rows
    ]


def get(db: Database, channel_id: int, message_id: int, viewer: int | None) -> MessageRow | None:
    """One message of a channel; `viewer` decides `reactions[].me` (None: always false)."""
    rows = db.execute(
        f"{_SELECT} WHERE m.id = ? AND m.channel_id = ?", (message_id, channel_id)
    ).fetchall()
    found = _complete(db, rows, viewer)
    return found[0] if found else None


def by_ids(db: Database, ids: Sequence[int], viewer: int | None) -> list[MessageRow]:
    """Whole messages by id, in the order given (ids of no message are left out)."""
    rows = db.execute(
        f"{_SELECT} WHERE m.id IN (SELECT value FROM json_each(?))", (json.dumps(list(ids)),)
    ).fetchall()
    order = {message_id: i for i, message_id in enumerate(ids)}
    return _complete(db, sorted(rows, key=lambda row: order[row[0]]), viewer)


def history(
    db: Database,
    channel_id: int,
    viewer: int | None,
    *,
    before: int | None = None,
    after: int | None = None,
    around: int | None = None,
    limit: int = 50,
) -> list[MessageRow]:
    """Up to `limit` messages, oldest first: the newest ones, those just before or just after
    an id, or those around one (`limit // 2` older than it, the rest from it on)."""
    where = f"{_SELECT} WHERE m.channel_id = ?"
    if after is not None:
        rows = db.execute(
            f"{where} AND m.id > ? ORDER BY m.id LIMIT ?", (channel_id, after, limit)
        ).fetchall()
    elif around is not None:
        older = db.execute(
            f"{where} AND m.id < ? ORDER BY m.id DESC LIMIT ?", (channel_id, around, limit // 2)
        ).fetchall()
        newer = db.execute(
            f"{where} AND m.id >= ? ORDER BY m.id LIMIT ?",
            (channel_id, around, limit - limit // 2),
        ).fetchall()
        rows = older[::-1] + newer
    else:
        below = before if before is not None else MAX_ID
        rows = db.execute(
            f"{where} AND m.id < ? ORDER BY m.id DESC LIMIT ?", (channel_id, below, limit)
        ).fetchall()[::-1]
    return _complete(db, rows, viewer)


def _seen(db: Database, channel_id: int, user_id: int, need: int = 0) -> VisibleChannel:
    """The channel if the user can see it (else 404) and has `need` in it (else 403)."""
    channel = visible_channel(db, channel_id, user_id)
    if channel is None:
        raise NotFound("unknown channel", code="unknown_channel")
    if need:
        channel.require(need)
    return channel


def _author_of(db: Database, channel_id: int, message_id: int) -> int:
    """The author of a message of this channel; NotFound("unknown_message") if there is none."""
    row = db.execute(
        "SELECT author_id FROM messages WHERE id = ? AND channel_id = ?", (message_id, channel_id)
    ).fetchone()
    if row is None:
        raise NotFound("unknown message", code="unknown_message")
    return int(row[0])


def _visible_users(
    db: Database, channel_id: int, server_id: int | None, candidates: list[int]
) -> list[int]:
    """Those of `candidates` who can see the channel, in the order given, at most MAX_MENTIONS."""
    if not candidates:
        return []
    ids = json.dumps(candidates)
    if server_id is None:
        sql = (
            "SELECT user_id FROM dm_recipients"
            " WHERE channel_id = ? AND user_id IN (SELECT value FROM json_each(?))"
        )
        allowed = {row[0] for row in db.execute(sql, (channel_id, ids))}
        return [u for u in candidates if u in allowed][:MAX_MENTIONS]
    members = [
        row[0]
        for row in db.execute(
            "SELECT user_id FROM members"
            " WHERE server_id = ? AND user_id IN (SELECT value FROM json_each(?))",
            (server_id, ids),
        )
    ]
    server = server_perms(db, server_id, [channel_id])
    if server is None:
        return []
    roles = held_roles(db, server_id, members)
    allowed = {
        u
        for u in members
        if compute(server, Member(u, frozenset(roles.get(u, ()))), channel_id) & P.VIEW_CHANNEL
    }
    return [u for u in candidates if u in allowed][:MAX_MENTIONS]


def _store_mentions(
    db: Database,
    message_id: int,
    channel_id: int,
    server_id: int | None,
    candidates: list[int],
    *,
    new: bool = False,
) -> list[int]:
    """Store (replace, unless the message is `new`) a message's mentions; returns the user ids
    stored, ascending (the order `get` reads them in)."""
    if not new:
        db.execute("DELETE FROM message_mentions WHERE message_id = ?", (message_id,))
    stored = _visible_users(db, channel_id, server_id, candidates)
    for user_id in stored:
        db.execute(
            "INSERT INTO message_mentions (message_id, user_id, channel_id) VALUES (?, ?, ?)",
            (message_id, user_id, channel_id),
        )
    return sorted(stored)


_ADVANCE_READ_STATE = (
    "INSERT INTO read_states (user_id, channel_id, last_read_id) VALUES (?, ?, ?)"
    " ON CONFLICT (user_id, channel_id) DO UPDATE SET last_read_id = excluded.last_read_id"
    " WHERE excluded.last_read_id > read_states.last_read_id"
)
_INSERT = (
    "INSERT INTO messages (id, channel_id, author_id, content, nonce, reply_to, embeds, flags)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INDEX = "INSERT INTO message_search (rowid, body) VALUES (?, ?)"
_LAST_MESSAGE = (
    "UPDATE channels SET last_message_id = ? WHERE id = ?"
    " AND (last_message_id IS NULL OR last_message_id < ?)"
)


def _advance_read_state(db: Database, user_id: int, channel_id: int, message_id: int) -> bool:
    cursor = db.execute(_ADVANCE_READ_STATE, (user_id, channel_id, message_id))
    return cursor.rowcount == 1


# -- writes --------------------------------------------------------------------------------------


class NewMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message to store, checked and parsed: what travels from the chat layer through the
    channel's actor to the writer (plain data: it round-trips through msgpack)."""

    channel_id: int
    author_id: int
    content: str
    nonce: str | None
    reply_to: int | None
    mentions: list[int]
    now_ms: int
    embeds: str | None = None  # checked JSON (relay.chat.embeds)
    flags: int = 0
    # A webhook's message (author_id is the webhook's id): written by `post_as_webhook`, the
    # token having been checked by the caller.
    webhook: WebhookAuthor | None = None
    # Mentions beyond users (relay.storage.mentions): the write keeps what the author may do.
    role_mentions: list[int] = []
    everyone: int = 0  # more_mentions.NONE | EVERYONE | HERE
    here_candidates: list[int] = []  # for @here: the server's members online at the send
    mention_replied: bool = False  # allowed_mentions.replied_user: mention reply_to's author
    attachments: list[int] = msgspec.field(default_factory=list)  # upload ids to claim


class Posted(msgspec.Struct, frozen=True):
    """A post's outcome: the stored message, and False if it is an earlier one with the same
    nonce (nothing was stored)."""

    message: MessageRow
    created: bool


def post(db: Database, message_id: int, new: NewMessage) -> Posted:
    """`create` for a `NewMessage` (the channel actor's write)."""
    if new.webhook is not None:
        return Posted(post_as_webhook(db, message_id, new, new.webhook), True)
    row, created = create(
        db,
        message_id,
        new.channel_id,
        new.author_id,
        new.content,
        new.nonce,
        new.reply_to,
        new.mentions,
        new.now_ms,
        embeds=new.embeds,
        flags=new.flags,
        role_ids=new.role_mentions,
        everyone=new.everyone,
        here_candidates=new.here_candidates,
        mention_replied=new.mention_replied,
    )
    if created and new.attachments:
        claimed = files.claim(
            db, message_id, new.channel_id, new.author_id, new.attachments, new.now_ms
        )
        row = msgspec.structs.replace(row, attachments=claimed)
    return Posted(row, created)


def create(
    db: Database,
    message_id: int,
    channel_id: int,
    author_id: int,
    content: str,
    nonce: str | None,
    reply_to: int | None,
    mention_ids: list[int],
    now_ms: int,
    *,
    embeds: str | None = None,
    flags: int = 0,
    role_ids: Sequence[int] = (),
    everyone: int = more_mentions.NONE,
    here_candidates: Sequence[int] = (),
    mention_replied: bool = False,
) -> tuple[MessageRow, bool]:
    """Store a message and return it with True; or, if the author sent the same nonce to this
    channel within NONCE_WINDOW_MS, return that message with False and store nothing.

    Mentions keep only users who can see the channel. The channel's last_message_id moves to
    the new message, and so does the author's read state (one's own message is read). In a
    channel with slowmode, an author without BYPASS_SLOWMODE must wait `rate_limit_per_user`
    seconds after their previous message.

    Raises NotFound("unknown_channel"), Forbidden("missing_permission" | "timed_out"),
    BadRequest("not_a_text_channel" | "invalid_field" for a reply_to that is not a message of
    this channel), RateLimited("slowmode"). `embeds` need EMBED_LINKS (403 otherwise).
    """
    channel = _seen(db, channel_id, author_id)
    if channel.type not in TEXT_TYPES:
        raise BadRequest("this channel does not take messages", code="not_a_text_channel")
    allowed = channel.require(P.SEND_MESSAGES | (P.EMBED_LINKS if embeds else 0))
    if nonce is not None:
        row = db.execute(
            NONCE_SQL, (author_id, nonce, channel_id, first_id_at(now_ms - NONCE_WINDOW_MS))
        ).fetchone()
        if row is not None:
            first = get(db, channel_id, row[0], author_id)
            assert first is not None
            return first, False
    if channel.rate_limit_per_user and not allowed & P.BYPASS_SLOWMODE:
        _check_slowmode(db, channel_id, author_id, channel.rate_limit_per_user, now_ms)
    if reply_to is not None:
        found = db.execute(
            "SELECT author_id FROM messages WHERE id = ? AND channel_id = ?", (reply_to, channel_id)
        ).fetchone()
        if found is None:
            reason = "not a message of this channel"
            raise BadRequest(
                f"reply_to: {reason}", code="invalid_field", fields={"reply_to": reason}
            )
        if mention_replied and found[0] not in mention_ids:
            mention_ids = [*mention_ids, found[0]]
    # The message, its search index (deletes: a trigger, see relay.storage.search), the
    # channel's last message and the author's read state (one's own message is read): sent
    # together, one round trip on PostgreSQL (relay.storage.together).
    execute_together(
        db,
        [
            (_INSERT, (message_id, channel_id, author_id, content, nonce, reply_to, embeds, flags)),
            (_INDEX, (message_id, index_text(content))),
            (_LAST_MESSAGE, (message_id, channel_id, message_id)),
            (_ADVANCE_READ_STATE, (author_id, channel_id, message_id)),
        ],
    )
    mentioned = _store_mentions(
        db, message_id, channel_id, channel.server_id, mention_ids, new=True
    )
    extra = more_mentions.store(
        db,
        message_id,
        channel_id,
        channel.server_id,
        allowed,
        role_ids,
        everyone,
        here_candidates,
    )
    # The row as `get` would read it back, from what was just written (one query, not three:
    # this runs in the single writer, once per message). New: no reactions, pin or edit yet.
    username, display_name, bot, avatar = cached(
        db, ("user", author_id), lambda: _names(db, author_id)
    )
    message = MessageRow(
        id=message_id,
        channel_id=channel_id,
        server_id=channel.server_id,
        author=AuthorRow(author_id, username, display_name, bot, avatar),
        content=content,
        nonce=nonce,
        reply_to=reply_to,
        edited_at=None,
        mentions=mentioned,
        reactions=[],
        pinned=False,
        embeds=embeds,
        flags=flags,
        mention_roles=extra.roles,
        mention_everyone=extra.everyone,
    )
    return message, True


def post_as_webhook(
    db: Database, message_id: int, new: NewMessage, webhook: WebhookAuthor
) -> MessageRow:
    """Store a webhook's message with its embeds, mentions and files. The webhook must still
    exist and post to this channel (it may have been deleted or moved since its token was
    checked): else NotFound("unknown_webhook"). No permission check: the webhook's token is its
    permission; for mentions it has no MENTION_EVERYONE (mentionable roles only, no
    @everyone/@here). Its files are uploads stored as the webhook's (relay.chat.files)."""
    found = db.execute(
        "SELECT channel_id FROM webhooks WHERE id = ?", (webhook.webhook_id,)
    ).fetchone()
    if found is None or found[0] != new.channel_id:
        raise NotFound("unknown webhook", code="unknown_webhook")
    channel = db.execute(
        "SELECT server_id FROM channels WHERE id = ?", (new.channel_id,)
    ).fetchone()
    db.execute(
        "INSERT INTO messages (id, channel_id, author_id, content, embeds) VALUES (?, ?, ?, ?, ?)",
        (message_id, new.channel_id, new.author_id, new.content, new.embeds),
    )
    db.execute(
        "INSERT INTO webhook_messages (message_id, webhook_id, username, avatar_url)"
        " VALUES (?, ?, ?, ?)",
        (message_id, webhook.webhook_id, webhook.username, webhook.avatar_url),
    )
    db.execute(
        "INSERT INTO message_search (rowid, body) VALUES (?, ?)",
        (message_id, index_text(new.content)),
    )
    _store_mentions(db, message_id, new.channel_id, channel[0], new.mentions, new=True)
    more_mentions.store(
        db, message_id, new.channel_id, channel[0], 0, new.role_mentions, new.everyone, ()
    )
    if new.attachments:
        files.claim(db, message_id, new.channel_id, new.author_id, new.attachments, new.now_ms)
    db.execute(
        "UPDATE channels SET last_message_id = ? WHERE id = ?"
        " AND (last_message_id IS NULL OR last_message_id < ?)",
        (message_id, new.channel_id, message_id),
    )
    row = get(db, new.channel_id, message_id, None)
    assert row is not None
    return row


def _names(db: Database, user_id: int) -> tuple[str, str | None, bool, str | None]:
    row = db.execute(
        "SELECT username, display_name, bot, avatar FROM users WHERE id = ?", (user_id,)
    ).fetchone()
    return row[0], row[1], bool(row[2]), row[3]


def _check_slowmode(
    db: Database, channel_id: int, author_id: int, every_s: int, now_ms: int
) -> None:
    last = db.execute(
        "SELECT max(id) FROM messages WHERE author_id = ? AND channel_id = ?",
        (author_id, channel_id),
    ).fetchone()[0]
    if last is None:
        return
    wait_ms = timestamp_ms(last) + every_s * 1000 - now_ms
    if wait_ms > 0:
        error = RateLimited(
            f"slowmode: one message every {every_s} s",
            limit=1,
            retry_after_s=wait_ms / 1000,
            limit_name="slowmode",
        )
        error.code = "slowmode"
        raise error


def edit(
    db: Database,
    channel_id: int,
    message_id: int,
    editor_id: int,
    content: str | None,
    mention_ids: list[int],
    now_ms: int,
    *,
    embeds: str | UnsetType | None = UNSET,
    flags: int | None = None,
    role_ids: Sequence[int] = (),
    everyone: int = more_mentions.NONE,
) -> MessageRow:
    """Replace a message's content (its author only, while they may send there), set edited_at,
    re-store its mentions. `content` None keeps it; `embeds` (checked JSON, None for none)
    replaces the sender's rich embeds (UNSET keeps them; new ones need EMBED_LINKS); `flags`
    None keeps them. A content change or SUPPRESS_EMBEDS drops the link previews (they are
    made again after the commit, see relay.chat.previews).

    Raises NotFound("unknown_channel" | "unknown_message"), Forbidden("not_author" |
    "missing_permission" | "timed_out").
    """
    channel = _seen(db, channel_id, editor_id)
    if _author_of(db, channel_id, message_id) != editor_id:
        raise Forbidden("only the author can edit a message", code="not_author")
    allowed = channel.require(P.SEND_MESSAGES | (P.EMBED_LINKS if embeds else 0))
    old_content, old_embeds, old_flags = db.execute(
        "SELECT content, embeds, flags FROM messages WHERE id = ?", (message_id,)
    ).fetchone()
    if content is None:
        content, mention_ids = old_content, parse_mentions(old_content)
        role_ids = more_mentions.parse_roles(content)
        everyone = more_mentions.parse_everyone(content)
    flags = old_flags if flags is None else flags
    rich, links = split_embeds(old_embeds)
    if not isinstance(embeds, UnsetType):
        rich = json.loads(embeds) if embeds else []
    if content != old_content or flags & SUPPRESS_EMBEDS:
        links = []
    db.execute(
        "UPDATE messages SET content = ?, edited_at = ?, embeds = ?, flags = ? WHERE id = ?",
        (content, now_ms, join_embeds(rich, links), flags, message_id),
    )
    db.execute(
        "INSERT OR REPLACE INTO message_search (rowid, body) VALUES (?, ?)",
        (message_id, index_text(content)),
    )
    _store_mentions(db, message_id, channel_id, channel.server_id, mention_ids)
    more_mentions.store(
        db, message_id, channel_id, channel.server_id, allowed, role_ids, everyone, (), new=False
    )
    message = get(db, channel_id, message_id, editor_id)
    assert message is not None
    return message


def split_embeds(stored: str | None) -> tuple[list[Any], list[Any]]:
    """A message's stored embeds as (the sender's rich embeds, link previews)."""
    embeds: list[Any] = json.loads(stored) if stored else []
    rich = [e for e in embeds if e.get("type") == "rich"]
    return rich, [e for e in embeds if e.get("type") != "rich"]


def join_embeds(rich: list[Any], links: list[Any]) -> str | None:
    both = rich + links
    return json.dumps(both, separators=(",", ":"), ensure_ascii=False) if both else None


def set_fetched_embeds(
    db: Database,
    channel_id: int,
    message_id: int,
    content: str,
    rich_before: list[Any],
    rich_after: list[Any],
    links: list[Any],
) -> MessageRow | None:
    """Store what the preview workers made for a message read with `content` and rich embeds
    `rich_before`: its rich embeds with images put in (`rich_after`) and its link previews.
    None, and nothing written, if the message is gone, was edited meanwhile (that edit queued
    its own job), suppresses embeds, or already holds exactly this."""
    row = db.execute(
        "SELECT content, embeds, flags FROM messages WHERE id = ? AND channel_id = ?",
        (message_id, channel_id),
    ).fetchone()
    if row is None or row[0] != content:
        return None
    rich, old_links = split_embeds(row[1])
    if rich != rich_before:
        return None
    if row[2] & SUPPRESS_EMBEDS:
        links = []
    if rich_after == rich and links == old_links:
        return None
    db.execute(
        "UPDATE messages SET embeds = ? WHERE id = ?", (join_embeds(rich_after, links), message_id)
    )
    return get(db, channel_id, message_id, None)


def delete(
    db: Database, channel_id: int, message_id: int, user_id: int, reason: str | None = None
) -> None:
    """Delete a message with its mentions, reactions and pin: one's own, or anyone's with
    MANAGE_MESSAGES (audited).

    Raises NotFound("unknown_channel" | "unknown_message"), Forbidden("missing_permission").
    """
    channel = _seen(db, channel_id, user_id)
    author = _author_of(db, channel_id, message_id)
    if author != user_id:
        channel.require(P.MANAGE_MESSAGES)
    delete_many(db, channel_id, [message_id])
    if author != user_id and channel.server_id is not None:
        changes = [audit.Change("channel_id", None, channel_id), audit.Change("author_id", author)]
        audit.record(db, channel.server_id, user_id, "message_delete", message_id, changes, reason)


def delete_many(db: Database, channel_id: int, message_ids: Sequence[int]) -> list[int]:
    """Delete those of `message_ids` that are messages of the channel (no checks: the caller's);
    returns the ids deleted, ascending. Keeps the channel's last_message_id right."""
    ids = json.dumps(list(message_ids))
    deleted = [
        r[0]
        for r in db.execute(
            "DELETE FROM messages WHERE channel_id = ? AND id IN (SELECT value FROM json_each(?))"
            " RETURNING id",
            (channel_id, ids),
        ).fetchall()
    ]
    if deleted:
        db.execute(
            "UPDATE channels SET last_message_id ="
            " (SELECT max(id) FROM messages WHERE channel_id = ?1) WHERE id = ?1",
            (channel_id,),
        )
    return sorted(deleted)


def bulk_delete(
    db: Database,
    channel_id: int,
    user_id: int,
    message_ids: Sequence[int],
    reason: str | None = None,
) -> list[int]:
    """Delete several messages of a channel at once (MANAGE_MESSAGES); ids that are not
    messages of the channel are skipped. Returns the ids deleted, ascending."""
    channel = _seen(db, channel_id, user_id, P.MANAGE_MESSAGES)
    deleted = delete_many(db, channel_id, message_ids)
    if deleted and channel.server_id is not None:
        changes = [
            audit.Change("channel_id", None, channel_id),
            audit.Change("count", None, len(deleted)),
        ]
        audit.record(
            db, channel.server_id, user_id, "message_bulk_delete", channel_id, changes, reason
        )
    return deleted


def pin(
    db: Database,
    channel_id: int,
    message_id: int,
    user_id: int,
    now_ms: int,
    reason: str | None = None,
    max_pins: int = 50,
) -> bool:
    """Pin a message (MANAGE_MESSAGES); False if it already was. Raises
    Unprocessable("too_many_pins") past `max_pins` in the channel."""
    channel = _seen(db, channel_id, user_id, P.MANAGE_MESSAGES)
    _author_of(db, channel_id, message_id)
    count = db.execute("SELECT count(*) FROM pins WHERE channel_id = ?", (channel_id,)).fetchone()
    if count[0] >= max_pins:
        raise Unprocessable(f"a channel has at most {max_pins} pins", code="too_many_pins")
    cursor = db.execute(
        "INSERT INTO pins (channel_id, message_id, pinned_by, pinned_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (channel_id, message_id, user_id, now_ms),
    )
    if cursor.rowcount != 1:
        return False
    if channel.server_id is not None:
        changes = [audit.Change("channel_id", None, channel_id)]
        audit.record(db, channel.server_id, user_id, "message_pin", message_id, changes, reason)
    return True


def unpin(
    db: Database, channel_id: int, message_id: int, user_id: int, reason: str | None = None
) -> bool:
    """Unpin a message (MANAGE_MESSAGES); False if it was not pinned."""
    channel = _seen(db, channel_id, user_id, P.MANAGE_MESSAGES)
    _author_of(db, channel_id, message_id)
    cursor = db.execute(
        "DELETE FROM pins WHERE channel_id = ? AND message_id = ?", (channel_id, message_id)
    )
    if cursor.rowcount != 1:
        return False
    if channel.server_id is not None:
        changes = [audit.Change("channel_id", None, channel_id)]
        audit.record(db, channel.server_id, user_id, "message_unpin", message_id, changes, reason)
    return True


def pinned(db: Database, channel_id: int, viewer: int | None) -> list[MessageRow]:
    """A channel's pinned messages, most recently pinned first."""
    rows = db.execute(
        f"{_SELECT} JOIN pins pin ON pin.message_id = m.id WHERE pin.channel_id = ?"
        " ORDER BY pin.pinned_at DESC, m.id DESC",
        (channel_id,),
    ).fetchall()
    return _complete(db, rows, viewer)


def add_reaction(
    db: Database,
    channel_id: int,
    message_id: int,
    user_id: int,
    emoji: str,
    now_ms: int,
    max_emoji: int = MAX_REACTION_EMOJI,
) -> bool:
    """Add the user's reaction; False if it was already there.

    Raises NotFound("unknown_channel" | "unknown_message"), Forbidden("missing_permission" |
    "timed_out") without ADD_REACTIONS and READ_MESSAGE_HISTORY, Unprocessable
    ("too_many_reactions") for a new emoji on a message that already has `max_emoji` different
    ones.
    """
    _seen(db, channel_id, user_id, P.READ_MESSAGE_HISTORY | P.ADD_REACTIONS)
    _author_of(db, channel_id, message_id)
    used = db.execute(
        "SELECT 1 FROM reactions WHERE message_id = ? AND emoji = ? LIMIT 1", (message_id, emoji)
    ).fetchone()
    if used is None:
        distinct = db.execute(
            "SELECT count(DISTINCT emoji) FROM reactions WHERE message_id = ?", (message_id,)
        ).fetchone()[0]
        if distinct >= max_emoji:
            raise Unprocessable(
                f"a message takes at most {max_emoji} different reactions",
                code="too_many_reactions",
            )
    cursor = db.execute(
        "INSERT INTO reactions (message_id, emoji, user_id, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (message_id, emoji, user_id, now_ms),
    )
    return cursor.rowcount == 1


def remove_reaction(
    db: Database, channel_id: int, message_id: int, user_id: int, emoji: str
) -> bool:
    """Remove the user's reaction; False if there was none. Raises NotFound("unknown_channel" |
    "unknown_message")."""
    _seen(db, channel_id, user_id)
    _author_of(db, channel_id, message_id)
    cursor = db.execute(
        "DELETE FROM reactions WHERE message_id = ? AND emoji = ? AND user_id = ?",
        (message_id, emoji, user_id),
    )
    return cursor.rowcount == 1


def reactors(
    db: Database, channel_id: int, message_id: int, emoji: str, after: int, limit: int
) -> list[AuthorRow]:
    """Users who reacted with `emoji`, by ascending id after `after`.
    Raises NotFound("unknown_message")."""
    _author_of(db, channel_id, message_id)
    rows = db.execute(
        "SELECT u.id, u.username, u.display_name, u.bot, u.avatar FROM reactions r"
        " JOIN users u ON u.id = r.user_id"
        " WHERE r.message_id = ? AND r.emoji = ? AND r.user_id > ? ORDER BY r.user_id LIMIT ?",
        (message_id, emoji, after, limit),
    ).fetchall()
    return [AuthorRow(row[0], row[1], row[2], bool(row[3]), row[4]) for row in rows]


def ack(db: Database, user_id: int, channel_id: int, message_id: int) -> bool:
    """Move the user's read position in the channel forward to `message_id`; False if it was
    already there or further. Raises NotFound("unknown_channel" | "unknown_message")."""
    _seen(db, channel_id, user_id)
    _author_of(db, channel_id, message_id)
    return _advance_read_state(db, user_id, channel_id, message_id)


def read_states(db: Database, user_id: int) -> list[ReadStateRow]:
    """Read position, newest message and unread mentions of every channel the user can see
    that takes messages (text channels of their servers with VIEW_CHANNEL, their DMs): one
    query, and five more for the permissions if the user is in any server."""
    rows = db.execute(
        "WITH visible (id, server_id, last_message_id) AS ("
        "  SELECT c.id, c.server_id, c.last_message_id FROM members m"
        "  JOIN channels c ON c.server_id = m.server_id AND c.type = 'text' WHERE m.user_id = ?1"
        "  UNION ALL"  # threads: those the user is a member of
        "  SELECT c.id, c.server_id, c.last_message_id FROM thread_members t"
        "  JOIN channels c ON c.id = t.channel_id JOIN members m ON m.server_id = c.server_id"
        "  AND m.user_id = ?1 WHERE t.user_id = ?1"
        "  UNION ALL"
        "  SELECT c.id, NULL, c.last_message_id FROM dm_recipients r"
        "  JOIN channels c ON c.id = r.channel_id AND c.type IN ('dm', 'group_dm')"
        "  WHERE r.user_id = ?1)"
        " SELECT v.id, v.server_id, coalesce(s.last_read_id, 0) AS read_id, v.last_message_id,"
        f"  {more_mentions.unread_mentions_sql('coalesce(s.last_read_id, 0)')}"
        " FROM visible v LEFT JOIN read_states s ON s.user_id = ?1 AND s.channel_id = v.id"
        " ORDER BY v.id",
        (user_id,),
    ).fetchall()
    accesses = accesses_of(db, user_id) if any(row[1] is not None for row in rows) else {}
    return [
        ReadStateRow(cid, read_id, last_id, mentions)
        for cid, server_id, read_id, last_id, mentions in rows
        if server_id is None or accesses[server_id].permissions(cid) & P.VIEW_CHANNEL
    ]
