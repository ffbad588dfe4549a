"""Request and response bodies of the server, channel, invite, member, discovery and DM API.

Requests forbid unknown fields and bound every string and number (the `Request` base of the
account API). Responses carry IDs as strings and times as ISO 8601; absent values are null.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from relay.rest.bodies import Request

# 1-100 characters, no control characters (C0, DEL, C1), not only whitespace.
Name = Annotated[
    str, Meta(min_length=1, max_length=100, pattern=r"^(?!\s*$)[^\x00-\x1f\x7f-\x9f]+$")
]
# Newlines and tabs are fine in a topic; other control characters are not.
Topic = Annotated[str, Meta(max_length=1024, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
Position = Annotated[int, Meta(ge=0, le=1_000_000)]
SnowflakeText = Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,18}$")]
MaxAge = Annotated[int, Meta(ge=0, le=604_800)]  # seconds; 0 = never expires
MaxUses = Annotated[int, Meta(ge=0, le=100)]  # 0 = unlimited
ChannelType = Literal["text", "voice", "category"]
Description = Annotated[str, Meta(max_length=300, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]
Slowmode = Annotated[int, Meta(ge=0, le=21_600)]  # seconds between one member's messages
# A permission mask as a decimal string (64-bit masks exceed JavaScript's safe integers); the
# route refuses bits that are not defined (relay/permissions.py).
PermissionText = Annotated[str, Meta(pattern=r"^(0|[1-9][0-9]{0,18})$")]
OverwriteType = Literal["role", "member"]


class OverwriteIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: SnowflakeText  # a role id (the server id for @everyone) or a user id
    type: OverwriteType
    allow: PermissionText = "0"
    deny: PermissionText = "0"


# -- requests ----------------------------------------------------------------------------------


class CreateServer(Request, frozen=True):
    name: Name


class UpdateServer(Request, frozen=True):
    name: Name | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET  # null clears it
    public: bool | UnsetType = UNSET  # listed by discovery, joinable without an invite


class TransferOwnership(Request, frozen=True):
    owner_id: SnowflakeText


class CreateChannel(Request, frozen=True):
    name: Name
    type: ChannelType
    topic: Topic | None = None  # text channels only
    parent_id: SnowflakeText | None = None  # a category of the same server
    position: Position | None = None  # default: after the last channel
    rate_limit_per_user: Slowmode = 0  # text channels only
    # Default: none of its own (in a category: follows the category's). Needs MANAGE_ROLES.
    permission_overwrites: Annotated[list[OverwriteIn], Meta(max_length=100)] | None = None


class UpdateChannel(Request, frozen=True):
    name: Name | UnsetType = UNSET
    topic: Topic | UnsetType | None = UNSET  # null clears it
    position: Position | UnsetType = UNSET
    parent_id: SnowflakeText | UnsetType | None = UNSET  # null clears it
    rate_limit_per_user: Slowmode | UnsetType = UNSET
    permissions_synced: bool | UnsetType = UNSET  # true: follow the category's overwrites


class CreateInvite(Request, frozen=True):
    max_age: MaxAge = 86_400
    max_uses: MaxUses = 0


class OpenDm(Request, frozen=True):
    recipient_id: SnowflakeText


# -- responses ---------------------------------------------------------------------------------


class Server(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    owner_id: str
    created_at: str
    description: str | None
    public: bool


class Overwrite(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    allow: str
    deny: str


class Role(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    permissions: str
    color: int
    position: int
    hoist: bool
    mentionable: bool


class Channel(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    server_id: str | None
    type: str
    name: str | None
    topic: str | None
    position: int
    parent_id: str | None
    last_message_id: str | None
    created_at: str
    rate_limit_per_user: int
    permissions_synced: bool
    permission_overwrites: list[Overwrite]  # effective: the category's when synced


class ServerWithChannels(Server, frozen=True, kw_only=True):
    channels: list[Channel]  # those the receiver can see
    roles: list[Role]  # lowest first


class UserBrief(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    username: str
    display_name: str | None


class DmChannel(Channel, frozen=True, kw_only=True):
    recipients: list[UserBrief]


class Member(msgspec.Struct, frozen=True, kw_only=True):
    user: UserBrief
    nickname: str | None
    joined_at: str
    roles: list[str]  # role ids, without @everyone
    communication_disabled_until: str | None  # while timed out


class PublicServer(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    description: str | None
    member_count: int


class Invite(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    server_id: str
    inviter_id: str
    max_uses: int  # 0 = unlimited
    uses: int
    expires_at: str | None  # null = never
    created_at: str


class InviteServer(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str


class InvitePreview(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    server: InviteServer
    member_count: int
    expires_at: str | None


# -- gateway event payloads --------------------------------------------------------------------


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    id: str


class MemberAdd(msgspec.Struct, frozen=True, kw_only=True):
    server_id: str
    user: UserBrief
    joined_at: str


class MemberRemove(msgspec.Struct, frozen=True, kw_only=True):
    server_id: str
    user: UserBrief
