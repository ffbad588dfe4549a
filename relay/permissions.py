"""Permissions: the bit values, and the one function that decides what a member may do.

Pure: no I/O, no trio. Storage loads a `ServerPerms` (roles, channels, overwrites) and a
`Member` (their roles, whether they are timed out) and asks `compute`; the gateway's permission
cache asks the same function, so REST and the gateway cannot disagree.

Theory of operation (`compute`, in this order; each step is pinned by the vectors in
tests/protocol/test_permissions.py):

1. The server's owner has every permission, always.
2. Base = the @everyone role's permissions | the permissions of each of the member's roles.
3. ADMINISTRATOR in the base grants every permission, everywhere (overwrites cannot take
   it away).
4. In a channel, its overwrites apply in three layers, each `(perms & ~deny) | allow`:
   the @everyone overwrite; then all of the member's role overwrites combined (their denies
   OR-ed, their allows OR-ed, so one role's allow beats another role's deny); then the member's
   own overwrite. A later layer wins over an earlier one.
   A channel whose `synced` flag is set and that has a category uses the category's overwrites
   instead of its own ("categories pass theirs to synced children"). A thread has its parent
   text channel's overwrites, so its permissions are the parent's.
5. Without VIEW_CHANNEL in a channel, a member has no permission there at all (you cannot send
   to, or manage, what you cannot see).
6. A timed-out member keeps only VIEW_CHANNEL and READ_MESSAGE_HISTORY (they can read, not
   send, react, speak or join voice) until the timeout ends. Owner and administrators are
   exempt, as they are from everything else.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable


class Permission(enum.IntFlag):
    """The bits of a permission mask. Values are fixed: they are part of the wire protocol."""

    VIEW_CHANNEL = 1 << 0
    SEND_MESSAGES = 1 << 1
    READ_MESSAGE_HISTORY = 1 << 2
    ADD_REACTIONS = 1 << 3
    ATTACH_FILES = 1 << 4
    EMBED_LINKS = 1 << 5
    MENTION_EVERYONE = 1 << 6
    MANAGE_MESSAGES = 1 << 7
    MANAGE_CHANNELS = 1 << 8
    MANAGE_ROLES = 1 << 9
    MANAGE_SERVER = 1 << 10
    CREATE_INVITE = 1 << 11
    MANAGE_NICKNAMES = 1 << 12
    CHANGE_NICKNAME = 1 << 13
    KICK_MEMBERS = 1 << 14
    BAN_MEMBERS = 1 << 15
    MODERATE_MEMBERS = 1 << 16
    VIEW_AUDIT_LOG = 1 << 17
    CONNECT = 1 << 18
    SPEAK = 1 << 19
    STREAM = 1 << 20
    MUTE_MEMBERS = 1 << 21
    DEAFEN_MEMBERS = 1 << 22
    MOVE_MEMBERS = 1 << 23
    BYPASS_SLOWMODE = 1 << 24
    ADMINISTRATOR = 1 << 25
    CREATE_EMOJIS = 1 << 26
    MANAGE_EMOJIS = 1 << 27
    CREATE_THREADS = 1 << 28
    SEND_MESSAGES_IN_THREADS = 1 << 29
    MANAGE_THREADS = 1 << 30
    MANAGE_WEBHOOKS = 1 << 31
    VIDEO = 1 << 32


P = Permission
ALL = int(sum(p.value for p in Permission))  # every defined bit; other bits are refused
NONE = 0
# Plain ints for the checks on hot paths (every message write, every fan-out): an operator with
# an IntFlag operand runs enum's Python code, about ten times slower than int's.
VIEW = int(P.VIEW_CHANNEL)
ADMINISTRATOR = int(P.ADMINISTRATOR)

DEFAULT_EVERYONE = int(
    P.VIEW_CHANNEL
    | P.SEND_MESSAGES
    | P.READ_MESSAGE_HISTORY
    | P.ADD_REACTIONS
    | P.ATTACH_FILES
    | P.EMBED_LINKS
    | P.CREATE_INVITE
    | P.CHANGE_NICKNAME
    | P.CONNECT
    | P.SPEAK
    | P.STREAM
    | P.VIDEO
    | P.CREATE_THREADS
    | P.SEND_MESSAGES_IN_THREADS
)
"""What @everyone may do in a new server: talk, read, react, invite, start threads, use voice."""

DM = int(
    P.VIEW_CHANNEL
    | P.SEND_MESSAGES
    | P.READ_MESSAGE_HISTORY
    | P.ADD_REACTIONS
    | P.ATTACH_FILES
    | P.EMBED_LINKS
)
"""What each recipient may do in a DM channel (there is nobody to moderate it)."""

TIMED_OUT_KEEPS = int(P.VIEW_CHANNEL | P.READ_MESSAGE_HISTORY)


def name_of(permission: int) -> str:
    """The name of a single bit (for error messages), e.g. "MANAGE_CHANNELS"."""
    return Permission(permission).name or str(permission)


def names(mask: int) -> list[str]:
    """The names of the bits set in `mask`, lowest bit first."""
    return [p.name for p in Permission if mask & p and p.name is not None]


def missing(have: int, need: int) -> int:
    """The first (lowest) bit of `need` that `have` lacks, or 0."""
    lacking = int(need) & ~have
    return lacking & -lacking


class Role(msgspec.Struct, frozen=True):
    id: int  # @everyone's id is the server's id
    permissions: int
    position: int  # 0 for @everyone; higher outranks lower; equal positions do not outrank


class Overwrite(msgspec.Struct, frozen=True):
    target_id: int  # a role id (the server id for @everyone) or a user id
    type: Literal["role", "member"]
    allow: int
    deny: int


class ChannelNode(msgspec.Struct, frozen=True):
    id: int
    parent_id: int | None  # its category (a thread's: its text channel)
    synced: bool  # follows its category's overwrites instead of its own
    overwrites: tuple[Overwrite, ...] = ()
    thread: bool = False  # a thread has its parent's permissions, overwrites and all


class ServerPerms(msgspec.Struct, frozen=True):
    """What permissions depend on in one server. `channels` may hold only the channels (and
    their categories) a caller asks about."""

    id: int
    owner_id: int
    roles: dict[int, Role]  # by id, @everyone included
    channels: dict[int, ChannelNode] = msgspec.field(default_factory=dict)


class Member(msgspec.Struct, frozen=True):
    user_id: int
    role_ids: frozenset[int] = frozenset()  # without @everyone, which everyone has
    timed_out: bool = False


def effective_overwrites(server: ServerPerms, channel_id: int) -> tuple[Overwrite, ...]:
    """A channel's own overwrites, or its category's when it is synced to it."""
    channel = server.channels.get(channel_id)
    if channel is None:
        return ()
    if channel.thread and channel.parent_id is not None:
        return effective_overwrites(server, channel.parent_id)
    if channel.synced and channel.parent_id is not None:
        parent = server.channels.get(channel.parent_id)
        if parent is not None:
            return parent.overwrites
    return channel.overwrites


def _base(server: ServerPerms, member: Member) -> int:
    everyone = server.roles.get(server.id)
    perms = everyone.permissions if everyone is not None else NONE
    for role_id in member.role_ids:
        role = server.roles.get(role_id)
        if role is not None:  # a deleted role grants nothing
            perms |= role.permissions
    return perms


def _apply(perms: int, allow: int, deny: int) -> int:
    return (perms & ~deny) | allow


def compute(server: ServerPerms, member: Member, channel_id: int | None = None) -> int:
    """The member's permissions in the server (`channel_id` None) or in one of its channels."""
    if member.user_id == server.owner_id:
        return ALL
    perms = _base(server, member)
    if perms & ADMINISTRATOR:
        return ALL
    if channel_id is not None:
        overwrites = effective_overwrites(server, channel_id)
        everyone = [o for o in overwrites if o.type == "role" and o.target_id == server.id]
        roles = [
            o
            for o in overwrites
            if o.type == "role" and o.target_id != server.id and o.target_id in member.role_ids
        ]
        mine = [o for o in overwrites if o.type == "member" and o.target_id == member.user_id]
        for o in everyone:
            perms = _apply(perms, o.allow, o.deny)
        allow = deny = NONE
        for o in roles:
            allow |= o.allow
            deny |= o.deny
        perms = _apply(perms, allow, deny)
        for o in mine:
            perms = _apply(perms, o.allow, o.deny)
        perms &= ~ADMINISTRATOR  # only roles make administrators, never an overwrite
        if not perms & VIEW:
            return NONE
    if member.timed_out:
        perms &= TIMED_OUT_KEEPS
    return perms & ALL


def top_position(server: ServerPerms, member: Member) -> float:
    """The position of the member's highest role (0 with only @everyone; the owner is above
    every role). Hierarchy: you may act only on roles and members strictly below this."""
    if member.user_id == server.owner_id:
        return float("inf")
    positions = [server.roles[r].position for r in member.role_ids if r in server.roles]
    return max(positions, default=0)


def visible_channels(server: ServerPerms, member: Member, channel_ids: Iterable[int]) -> set[int]:
    """Those of `channel_ids` in which the member has VIEW_CHANNEL."""
    return {c for c in channel_ids if compute(server, member, c) & VIEW}


def openapi_schema() -> dict[str, object]:
    """The permission mask as an OpenAPI 3.1 schema object, with every bit named
    (`x-permission-bits`), for the API description (docs/permissions.md shows it)."""
    return {
        "type": "string",
        "pattern": "^(0|[1-9][0-9]{0,18})$",
        "description": (
            "A permission mask: the decimal value of a 64-bit integer whose set bits are the "
            "permissions. Bits not listed are refused."
        ),
        "x-permission-bits": {p.name: p.value for p in Permission},
        "x-default-everyone": str(DEFAULT_EVERYONE),
        "example": str(DEFAULT_EVERYONE),
    }
