"""Mentions: what a new message's content mentions under its `allowed_mentions`, and the
mentions inbox.

The content is parsed here (users `<@id>`, roles `<@&id>`, `@everyone`, `@here`) and filtered by
`allowed_mentions`; what the author may mention (MENTION_EVERYONE, mentionable roles) is decided
by the write, in its transaction (relay.storage.mentions). @here reaches the server's members
online at the send (`Fanout.online`) who can see the channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import msgspec

from relay.chat.args import field_error, id_field
from relay.chat.objects import Message, message_out
from relay.ids import parse_id
from relay.storage import mentions as stored
from relay.storage.messages import MAX_ID, parse_mentions

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from relay.chat.context import Chat
    from relay.storage.audience import VisibleChannel

MAX_INBOX_LIMIT = 100
DEFAULT_INBOX_LIMIT = 25


class AllowedMentions(Protocol):
    """A send's `allowed_mentions`: REST's body (relay.chat.commands) or gateway op 12's."""

    @property
    def parse(self) -> Sequence[str]: ...
    @property
    def users(self) -> Sequence[str]: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def replied_user(self) -> bool: ...


class Mentions(msgspec.Struct, frozen=True, kw_only=True):
    """A new message's mentions, as NewMessage takes them."""

    mentions: list[int]
    role_mentions: list[int]
    everyone: int
    here_candidates: list[int]
    mention_replied: bool


def _listed(values: Sequence[str], field: str) -> set[int]:
    return {id_field(value, field) for value in values}


def of_content(
    content: str,
    allowed: AllowedMentions | None,
    channel: VisibleChannel | None,
    online: Callable[[int], Collection[int]] | None = None,
) -> Mentions:
    """What `content` mentions, as far as `allowed` lets it (`channel` None: a webhook's
    message, whose @here is never stored, so needs nobody online). Raises BadRequest
    ("invalid_field") for `parse` naming a kind that is also listed by id."""
    users = parse_mentions(content)
    roles = stored.parse_roles(content)
    everyone = stored.parse_everyone(content)
    replied = False
    if allowed is not None:
        if "users" in allowed.parse and allowed.users:
            raise field_error("allowed_mentions.users", "not with users in parse")
        if "roles" in allowed.parse and allowed.roles:
            raise field_error("allowed_mentions.roles", "not with roles in parse")
        if "users" not in allowed.parse:
            listed = _listed(allowed.users, "allowed_mentions.users")
            users = [u for u in users if u in listed]
        if "roles" not in allowed.parse:
            listed = _listed(allowed.roles, "allowed_mentions.roles")
            roles = [r for r in roles if r in listed]
        if "everyone" not in allowed.parse:
            everyone = stored.NONE
        replied = allowed.replied_user
    here: list[int] = []
    if everyone == stored.HERE and channel and channel.server_id is not None and online:
        here = list(online(channel.server_id))
    return Mentions(
        mentions=users,
        role_mentions=roles,
        everyone=everyone,
        here_candidates=here,
        mention_replied=replied,
    )


async def inbox(
    chat: Chat, user_id: int, before: str | None, limit: str | None, server_id: str | None
) -> list[Message]:
    """Messages that mention the user (directly, by a role they hold, by @everyone, or by an
    @here that reached them), newest first, from channels they can still read."""
    below = MAX_ID if before is None else id_field(before, "before")
    count = DEFAULT_INBOX_LIMIT
    if limit is not None:
        if not (0 < len(limit) <= 3 and limit.isascii() and limit.isdigit()) or not (
            1 <= int(limit) <= MAX_INBOX_LIMIT
        ):
            raise field_error("limit", f"must be an integer from 1 to {MAX_INBOX_LIMIT}")
        count = int(limit)
    server = None
    if server_id is not None:
        server = parse_id(server_id)
        if server is None:
            raise field_error("server_id", "must be an id")
    rows = await chat.store.read(chat.q.mentions.inbox_messages, user_id, below, count, server)
    return [message_out(row) for row in rows]
