"""Who is pushed about a message, and why: pure decisions over a message's mention data and a
user's notification settings (docs/push.md, "Who gets what").

`mentions_of` is the one place that reads a stored message's mention data: direct user
mentions, role mentions and @everyone. @here is not pushed: it is for the members online when it
was sent, and a push goes to people who are not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from relay.storage.mentions import EVERYONE, parse_everyone

if TYPE_CHECKING:
    from relay.storage.messages import MessageRow
    from relay.storage.push import Preference

Level = Literal["all", "mentions", "none"]
LEVELS: tuple[Level, ...] = ("all", "mentions", "none")
SERVER_DEFAULT: Level = "mentions"  # a server channel notifies mentions only unless set
DM_DEFAULT: Level = "all"
# Why a push is sent, most important first (coalescing keeps the most important one).
Reason = Literal["dm", "mention", "role", "everyone", "message"]
RANK: dict[str, int] = {"dm": 0, "mention": 1, "role": 2, "everyone": 3, "message": 4}


class Mentions(msgspec.Struct, frozen=True):
    """What a message mentions: users, roles, and @everyone/@here (only when its author was
    allowed to: the sender's side decides that)."""

    users: frozenset[int] = frozenset()
    roles: frozenset[int] = frozenset()
    everyone: bool = False


def mentions_of(row: MessageRow) -> Mentions:
    """The message's mention data. `mention_everyone` is set for @everyone or @here by someone
    allowed to; only @everyone reaches people who are away."""
    everyone = row.mention_everyone and parse_everyone(row.content) == EVERYONE
    return Mentions(frozenset(row.mentions), frozenset(row.mention_roles), everyone)


def push_reason(
    user_id: int,
    *,
    dm: bool,
    mentions: Mentions,
    roles: frozenset[int],
    server: Preference | None,
    channel: Preference | None,
    now_ms: int,
) -> Reason | None:
    """Why `user_id` gets a push about the message, or None. The channel's setting wins over
    the server's; a mute of either silences it until then; `none` silences everything,
    `mentions` lets DMs and mentions through, `all` every message."""
    for pref in (channel, server):
        if pref is not None and pref.muted_until is not None and pref.muted_until > now_ms:
            return None
    level: str = DM_DEFAULT if dm else SERVER_DEFAULT
    if channel is not None and channel.level is not None:
        level = channel.level
    elif server is not None and server.level is not None:
        level = server.level
    if level == "none":
        return None
    reason: Reason | None = None
    if dm:
        reason = "dm"
    elif user_id in mentions.users:
        reason = "mention"
    elif roles & mentions.roles:
        reason = "role"
    elif mentions.everyone:
        reason = "everyone"
    if reason is None and level == "all":
        reason = "message"
    return reason
