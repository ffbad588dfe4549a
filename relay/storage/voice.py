"""Voice: what joining a voice channel depends on (the channel, its user limit, the member's
permissions in it, their server mute and deafen). Voice states themselves live in memory
(relay.chat.voice): they end with the process, as the connections they describe do; server mute
and deafen are kept on the member row, so they outlive a stay in voice and a restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from relay.errors import NotFound
from relay.permissions import VIEW
from relay.storage.access import server_access

if TYPE_CHECKING:
    from sqlite_utils import Database


class VoiceChannel(msgspec.Struct, frozen=True):
    id: int
    server_id: int
    type: str  # text | voice | category (only voice can be joined)
    user_limit: int  # 0: none
    permissions: int  # the asking member's, in this channel
    e2ee_required: bool = False
    mute: bool = False  # the asking member's server mute and deafen (applied on join)
    deaf: bool = False


def voice_channel(db: Database, channel_id: int, user_id: int) -> VoiceChannel:
    """A server channel as `user_id` sees it. Raises NotFound("unknown_channel") if there is no
    such channel, the user is not a member of its server, or cannot see it."""
    row = db.execute(
        "SELECT server_id, type, user_limit, e2ee_required FROM channels"
        " WHERE id = ? AND server_id IS NOT NULL",
        (channel_id,),
    ).fetchone()
    if row is None:
        raise NotFound("unknown channel", code="unknown_channel")
    server_id, kind, user_limit, e2ee = row
    access = server_access(db, server_id, user_id, (channel_id,))
    if access is None:
        raise NotFound("unknown channel", code="unknown_channel")
    have = access.permissions(channel_id)
    if not have & VIEW:
        raise NotFound("unknown channel", code="unknown_channel")
    mute, deaf = moderation(db, server_id, user_id)
    return VoiceChannel(channel_id, server_id, kind, user_limit, have, bool(e2ee), mute, deaf)


def server_permissions(db: Database, server_id: int, user_id: int) -> int | None:
    """`user_id`'s server-wide permissions, None if not a member (or no such server)."""
    access = server_access(db, server_id, user_id)
    return None if access is None else access.permissions()


def is_member(db: Database, server_id: int, user_id: int) -> bool:
    row = db.execute(
        "SELECT 1 FROM members WHERE server_id = ? AND user_id = ?", (server_id, user_id)
    ).fetchone()
    return row is not None


def moderation(db: Database, server_id: int, user_id: int) -> tuple[bool, bool]:
    """The member's (server mute, server deafen); (False, False) for a non-member."""
    row = db.execute(
        "SELECT voice_mute, voice_deaf FROM members WHERE server_id = ? AND user_id = ?",
        (server_id, user_id),
    ).fetchone()
    return (False, False) if row is None else (bool(row[0]), bool(row[1]))


def set_moderation(
    db: Database, server_id: int, user_id: int, mute: bool | None, deaf: bool | None
) -> tuple[bool, bool]:
    """Change the member's server mute and/or deafen (None: unchanged); returns both as they
    are now ((False, False) for a non-member, nothing stored)."""
    db.execute(
        "UPDATE members SET voice_mute = coalesce(?, voice_mute),"
        " voice_deaf = coalesce(?, voice_deaf) WHERE server_id = ? AND user_id = ?",
        (
            None if mute is None else int(mute),
            None if deaf is None else int(deaf),
            server_id,
            user_id,
        ),
    )
    return moderation(db, server_id, user_id)
