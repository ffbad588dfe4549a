"""The typed arguments of chat operations: what a client asks for, as msgspec Structs.

Every string and number is bounded and unknown fields are refused, so a client cannot make the
server hold more than it allows; an edge decodes its input into these and hands them to the
chat layer. IDs arrive as strings and are parsed by the operation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from relay.chat.embeds import EmbedsIn


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


# Lengths count characters (code points), as sent: the route refuses all-whitespace content.
MAX_CONTENT_CHARS = 4000


Content = Annotated[str, Meta(min_length=1, max_length=MAX_CONTENT_CHARS)]


Nonce = Annotated[str, Meta(min_length=1, max_length=64)]


IdText = Annotated[str, Meta(min_length=1, max_length=20)]  # checked by parse_id in the route


class UploadRef(Request, frozen=True):
    """An upload (POST /v1/api/channels/{id}/attachments) a new message claims."""

    id: IdText


MessageFlags = Annotated[int, Meta(ge=0, le=(1 << 31) - 1)]  # only known flags pass the op


class AllowedMentions(Request, frozen=True):
    """Which mentions of the content count (Discord's shape). Without it all do; with it, only
    the kinds in `parse`, or the users and roles listed (not both for one kind)."""

    parse: Annotated[list[Literal["users", "roles", "everyone"]], Meta(max_length=3)] = []
    users: Annotated[list[IdText], Meta(max_length=100)] = []
    roles: Annotated[list[IdText], Meta(max_length=100)] = []
    replied_user: bool = False  # also mention the author of the message replied to


class CreateMessage(Request, frozen=True):
    # May be empty with embeds or files (docs/embeds.md, docs/files.md).
    content: Annotated[str, Meta(max_length=MAX_CONTENT_CHARS)] = ""
    nonce: Nonce | None = None
    reply_to: IdText | None = None
    embeds: EmbedsIn = []  # rich embeds (relay.chat.embeds); need EMBED_LINKS
    flags: MessageFlags = 0  # SUPPRESS_EMBEDS (1 << 2) or 0
    allowed_mentions: AllowedMentions | None = None
    attachments: Annotated[list[UploadRef], Meta(max_length=10)] = msgspec.field(
        default_factory=list
    )


class EditMessage(Request, frozen=True):
    """At least one of the three; what is left out stays as it is (`embeds: null` or `[]`
    removes the rich embeds)."""

    content: Content | UnsetType = UNSET
    embeds: EmbedsIn | UnsetType | None = UNSET
    flags: MessageFlags | UnsetType = UNSET


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


AutoArchive = Literal[60, 1440, 4320, 10080]  # minutes without activity before a thread archives


class CreateThread(Request, frozen=True):
    name: Name
    auto_archive_duration: AutoArchive = 1440


class UpdateChannel(Request, frozen=True):
    name: Name | UnsetType = UNSET
    topic: Topic | UnsetType | None = UNSET  # null clears it
    position: Position | UnsetType = UNSET
    parent_id: SnowflakeText | UnsetType | None = UNSET  # null clears it
    rate_limit_per_user: Slowmode | UnsetType = UNSET
    permissions_synced: bool | UnsetType = UNSET  # true: follow the category's overwrites
    user_limit: Annotated[int, Meta(ge=0, le=99)] | UnsetType = UNSET  # voice; 0: no limit
    e2ee_required: bool | UnsetType = UNSET  # voice: only end-to-end encrypted media
    # Threads only (docs/threads.md); a group DM takes only `name`.
    archived: bool | UnsetType = UNSET
    locked: bool | UnsetType = UNSET  # MANAGE_THREADS
    auto_archive_duration: AutoArchive | UnsetType = UNSET


class CreateInvite(Request, frozen=True):
    max_age: MaxAge = 86_400
    max_uses: MaxUses = 0


class OpenDm(Request, frozen=True):
    """A 1:1 DM (`recipient_id`) or a new group DM (`recipients`: the others, with an optional
    `name`): exactly one of the two."""

    recipient_id: SnowflakeText | UnsetType = UNSET
    recipients: Annotated[list[SnowflakeText], Meta(max_length=100)] | UnsetType = UNSET
    name: Name | UnsetType = UNSET  # a group DM's


RoleName = Annotated[
    str, Meta(min_length=1, max_length=100, pattern=r"^(?!\s*$)[^\x00-\x1f\x7f-\x9f]+$")
]


Color = Annotated[int, Meta(ge=0, le=0xFFFFFF)]


RolePosition = Annotated[int, Meta(ge=1, le=1_000_000)]  # 0 is @everyone's alone


Nickname = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]


# Checked by the route (datetime.fromisoformat, with a zone); the format is for the schema.
IsoTime = Annotated[
    str, Meta(min_length=10, max_length=40, extra_json_schema={"format": "date-time"})
]


BanReason = Annotated[str, Meta(max_length=512)]


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
    mute: bool | UnsetType = UNSET  # server mute (MUTE_MEMBERS)
    deaf: bool | UnsetType = UNSET  # server deafen (DEAFEN_MEMBERS)
    voice_channel_id: IdText | UnsetType | None = UNSET  # move (MOVE_MEMBERS); null disconnects


class PutBan(Request, frozen=True):
    delete_message_days: Annotated[int, Meta(ge=0, le=7)] = 0
    reason: BanReason | None = None  # default: the X-Audit-Log-Reason header


class BulkDelete(Request, frozen=True):
    messages: Annotated[
        list[SnowflakeText],
        Meta(min_length=2, max_length=100, extra_json_schema={"uniqueItems": True}),
    ]


MaxClients = Annotated[int, Meta(ge=1)]


Protocol = Literal["host", "peer"]


class CreateRoom(Request, frozen=True):
    max_clients: MaxClients
    protocol: Protocol
    public: bool = False
    metadata: dict[str, Any] | None = None  # a JSON object; null or absent: {}


class UpdateRoom(Request, frozen=True):
    max_clients: MaxClients | UnsetType = UNSET
    public: bool | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET  # replaces the whole object


# -- accounts ------------------------------------------------------------------------------------

Password = Annotated[str, Meta(min_length=8, max_length=256)]
DisplayName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
AnyPassword = Annotated[str, Meta(min_length=1, max_length=256)]
Base64 = Annotated[str, Meta(min_length=1, max_length=128)]


class UpdateMe(Request, frozen=True):
    display_name: DisplayName | UnsetType | None = UNSET  # null clears it
    password: Password | UnsetType = UNSET
    current_password: AnyPassword | UnsetType = UNSET  # required to change an existing password


class AddKey(Request, frozen=True):
    public_key: Base64


# -- bots and webhooks (docs/bots.md) -------------------------------------------------------------

# A bot's or webhook's name, and a webhook message's username: 1-80 characters, no control
# characters, not only whitespace; names that pass for Relay itself are refused by the operation.
BotName = Annotated[
    str, Meta(min_length=1, max_length=80, pattern=r"^(?!\s*$)[^\x00-\x1f\x7f-\x9f]+$")
]
# Shown as given for now (checked by the operation: http or https, a host, no spaces).
AvatarUrl = Annotated[str, Meta(min_length=1, max_length=2048)]


class CreateApplication(Request, frozen=True):
    name: BotName


class UpdateApplication(Request, frozen=True):
    name: BotName | UnsetType = UNSET
    public: bool | UnsetType = UNSET  # whether others (with MANAGE_SERVER) may add the bot


class AddBot(Request, frozen=True):
    application_id: SnowflakeText
    permissions: PermissionText = "0"  # of its managed role; at most the adder's own


class CreateWebhook(Request, frozen=True):
    name: BotName


class UpdateWebhook(Request, frozen=True):
    name: BotName | UnsetType = UNSET
    channel_id: SnowflakeText | UnsetType = UNSET  # another text channel of the same server


class ExecuteWebhook(Request, frozen=True):
    # May be empty with embeds or files (docs/bots.md).
    content: Annotated[str, Meta(max_length=MAX_CONTENT_CHARS)] = ""
    username: BotName | None = None  # this message's name instead of the webhook's
    avatar_url: AvatarUrl | None = None  # fetched and served by Relay (relay.chat.embedmedia)
    embeds: EmbedsIn = []  # rich embeds, as a user's send (relay.chat.embeds)
    allowed_mentions: AllowedMentions | None = None


EmojiName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_]{2,32}$")]
MAX_EMOJI_BYTES = 256 * 1024


class CreateEmoji(Request, frozen=True):
    """A custom emoji: `image` is standard base64 of a PNG, JPEG, GIF or WebP image of at most
    256 KiB (resized to at most 128 px; animated GIF/WebP stay animated)."""

    name: EmojiName
    image: Annotated[str, Meta(min_length=1, max_length=(MAX_EMOJI_BYTES + 2) // 3 * 4)]


class UpdateEmoji(Request, frozen=True):
    name: EmojiName
