"""Request and response bodies of the roles, overwrites, moderation and audit-log API.

Permission masks travel as decimal strings (like IDs: 64-bit masks exceed JavaScript's safe
integers); the routes refuse bits relay/permissions.py does not define.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from relay.rest.bodies import Request
from relay.rest.server_bodies import OverwriteType, PermissionText, Role, SnowflakeText, UserBrief

RoleName = Annotated[
    str, Meta(min_length=1, max_length=100, pattern=r"^(?!\s*$)[^\x00-\x1f\x7f-\x9f]+$")
]
Color = Annotated[int, Meta(ge=0, le=0xFFFFFF)]
RolePosition = Annotated[int, Meta(ge=1, le=1_000_000)]  # 0 is @everyone's alone
Nickname = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
IsoTime = Annotated[str, Meta(min_length=10, max_length=40)]  # checked by the route
BanReason = Annotated[str, Meta(max_length=512)]


# -- requests ----------------------------------------------------------------------------------


class CreateRole(Request, frozen=True):
    name: RoleName = "new role"
    permissions: PermissionText = "0"
    color: Color = 0
    hoist: bool = False  # shown apart in member lists
    mentionable: bool = False
    position: RolePosition = 1  # just above @everyone


class UpdateRole(Request, frozen=True):
    name: RoleName | UnsetType = UNSET
    permissions: PermissionText | UnsetType = UNSET
    color: Color | UnsetType = UNSET
    hoist: bool | UnsetType = UNSET
    mentionable: bool | UnsetType = UNSET


class RoleMove(Request, frozen=True):
    id: SnowflakeText
    position: RolePosition


ReorderRoles = Annotated[list[RoleMove], Meta(min_length=1, max_length=250)]


class PutOverwrite(Request, frozen=True):
    type: OverwriteType
    allow: PermissionText = "0"
    deny: PermissionText = "0"


class UpdateMember(Request, frozen=True):
    nickname: Nickname | UnsetType | None = UNSET  # null clears it
    communication_disabled_until: IsoTime | UnsetType | None = UNSET  # null ends a timeout


class PutBan(Request, frozen=True):
    delete_message_days: Annotated[int, Meta(ge=0, le=7)] = 0
    reason: BanReason | None = None  # default: the X-Audit-Log-Reason header


class BulkDelete(Request, frozen=True):
    messages: Annotated[list[SnowflakeText], Meta(min_length=2, max_length=100)]


# -- responses and events ----------------------------------------------------------------------


class Ban(msgspec.Struct, frozen=True, kw_only=True):
    user: UserBrief
    reason: str | None
    created_at: str


class AuditChange(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    old: Any
    new: Any


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str  # who acted
    action: str
    target_id: str | None
    reason: str | None
    changes: list[AuditChange]
    created_at: str


class RoleEvent(msgspec.Struct, frozen=True, kw_only=True):
    server_id: str
    role: Role


class RoleDeleted(msgspec.Struct, frozen=True, kw_only=True):
    server_id: str
    role_id: str


class MemberUpdate(msgspec.Struct, frozen=True, kw_only=True):
    server_id: str
    user: UserBrief
    nickname: str | None
    roles: list[str]
    communication_disabled_until: str | None


class PinsUpdate(msgspec.Struct, frozen=True, kw_only=True):
    channel_id: str
    message_id: str
    pinned: bool


class MessagesDeleted(msgspec.Struct, frozen=True, kw_only=True):
    ids: list[str]
    channel_id: str
