"""Request and response bodies of the server, channel, invite, member and DM API.

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


# -- requests ----------------------------------------------------------------------------------


class CreateServer(Request, frozen=True):
    name: Name


class UpdateServer(Request, frozen=True):
    name: Name | UnsetType = UNSET


class CreateChannel(Request, frozen=True):
    name: Name
    type: ChannelType
    topic: Topic | None = None  # text channels only
    parent_id: SnowflakeText | None = None  # a category of the same server
    position: Position | None = None  # default: after the last channel


class UpdateChannel(Request, frozen=True):
    name: Name | UnsetType = UNSET
    topic: Topic | UnsetType | None = UNSET  # null clears it
    position: Position | UnsetType = UNSET
    parent_id: SnowflakeText | UnsetType | None = UNSET  # null clears it


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


class ServerWithChannels(Server, frozen=True, kw_only=True):
    channels: list[Channel]


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
