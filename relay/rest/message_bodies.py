"""Request and response bodies of the message API, as msgspec Structs.

`Message` is also the payload of MESSAGE_CREATE and MESSAGE_UPDATE: one object, encoded once for
every receiver, so in events `reactions[].me` is always false. IDs go out as strings.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from relay.rest.bodies import Request

# Lengths count characters (code points), as sent: the route refuses all-whitespace content.
MAX_CONTENT_CHARS = 4000
Content = Annotated[str, Meta(min_length=1, max_length=MAX_CONTENT_CHARS)]
Nonce = Annotated[str, Meta(min_length=1, max_length=64)]
IdText = Annotated[str, Meta(min_length=1, max_length=20)]  # checked by parse_id in the route


class CreateMessage(Request, frozen=True):
    content: Content
    nonce: Nonce | None = None
    reply_to: IdText | None = None


class EditMessage(Request, frozen=True):
    content: Content


class Author(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    username: str
    display_name: str | None


class Reaction(msgspec.Struct, frozen=True, kw_only=True):
    emoji: str
    count: int
    me: bool


class Message(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    channel_id: str
    server_id: str | None  # None in a DM
    author: Author
    content: str
    nonce: str | None
    reply_to: str | None
    mentions: list[str]  # user ids, ascending
    reactions: list[Reaction]  # in the order each emoji was first used
    pinned: bool
    edited_at: str | None
    created_at: str


class RepeatedMessage(Message, frozen=True, kw_only=True):
    """The message an earlier post with the same nonce created. Encodes exactly like `Message`;
    only its type tells the route to answer 200 rather than 201."""


class MessageDeleted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    channel_id: str


class ReactionEvent(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    channel_id: str
    user_id: str
    emoji: str


class MessageAck(msgspec.Struct, frozen=True, kw_only=True):
    channel_id: str
    message_id: str


class TypingStart(msgspec.Struct, frozen=True, kw_only=True):
    channel_id: str
    user_id: str
    timestamp: str


class ReadState(msgspec.Struct, frozen=True, kw_only=True):
    channel_id: str
    last_read_id: str | None  # None: nothing read yet
    last_message_id: str | None  # None: the channel has no messages
    mention_count: int  # mentions of the user after last_read_id
