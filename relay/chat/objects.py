"""The one object model: what REST answers and what events carry, as msgspec Structs, and the
builders that make them from storage rows.

IDs and permission masks go out as strings (snowflakes and 64-bit masks exceed JavaScript's safe
integers), times as ISO 8601 UTC, absent values as null. `Message` is also the payload of
MESSAGE_CREATE and MESSAGE_UPDATE: one object, encoded once for every receiver, so in events
`reactions[].me` is always false. Every edge (REST, the gateway) and every event uses these.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, UnsetType

from relay import crypto
from relay.chat.embeds import Embed, shown
from relay.ids import timestamp_ms
from relay.media.urls import (
    attachment_path,
    avatar_path,
    emoji_path,
    group_icon_path,
    icon_path,
    preview_path,
    thumbnail_path,
)
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.chat.rooms import RoomRecord
    from relay.media.urls import FileUrls
    from relay.permissions import Overwrite as OverwriteRule
    from relay.storage.applications import ApplicationRow
    from relay.storage.audit import AuditEntry as AuditRow
    from relay.storage.channels import ChannelRow
    from relay.storage.dms import DmRow
    from relay.storage.emojis import EmojiRow
    from relay.storage.files import AttachmentRow
    from relay.storage.invites import InviteRow
    from relay.storage.members import MemberRow
    from relay.storage.members import UserBrief as UserBriefRow
    from relay.storage.messages import AuthorRow, MessageRow, WebhookAuthor
    from relay.storage.moderation import BanRow
    from relay.storage.roles import RoleRow
    from relay.storage.servers import PublicServer as PublicServerRow
    from relay.storage.servers import ServerRow, ServerState
    from relay.storage.users import KeyRow, UserRow
    from relay.storage.webhooks import WebhookRow


# `bot` (and a webhook message's author's `avatar_url`) are left out when false (null): a
# person's user object is what it was before bots existed.
class User(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    username: str
    display_name: str | None
    created_at: str
    bot: bool = False  # a bot account (relay.chat.applications)
    avatar_url: str | None = None  # a square WebP, at most 512 px (docs/files.md)


class Key(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    public_key: str
    created_at: str


class Me(User, frozen=True, kw_only=True):
    has_password: bool
    keys: list[Key]


class Author(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    username: str
    display_name: str | None
    bot: bool = False  # a bot, or a webhook (then id is the webhook's)
    # The user's avatar (a square WebP, at most 512 px), or a webhook message's avatar_url as
    # Relay serves it (docs/bots.md); left out when there is none.
    avatar_url: str | None = None


class Reaction(msgspec.Struct, frozen=True, kw_only=True):
    emoji: str
    count: int
    me: bool


class Attachment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A message's file. `url` and `preview_url` are signed and expire (file_url_ttl_s): fetch
    the message again for fresh ones."""

    id: str
    filename: str
    size: int
    content_type: str
    url: str
    width: int | None = None  # images only
    height: int | None = None
    preview_url: str | None = None  # WebP, at most 1280 px a side (larger images)
    thumbnail_url: str | None = None  # WebP, at most 320 px a side (images)


class Emoji(msgspec.Struct, frozen=True, kw_only=True):
    """A server's custom emoji: in messages `<:name:id>` (`<a:name:id>` animated), as a
    reaction `name:id`."""

    id: str
    name: str
    animated: bool
    url: str  # a square WebP, at most 128 px
    creator_id: str | None


class EmojisUpdate(msgspec.Struct, frozen=True, kw_only=True):
    server_id: str
    emojis: list[Emoji]


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
    embeds: list[Embed]  # rich embeds, then link previews (docs/embeds.md); [] if suppressed
    flags: int  # message flags: SUPPRESS_EMBEDS (1 << 2)
    webhook_id: str | None = None  # set: posted by this webhook (author is who it shows as)
    thread: str | UnsetType = UNSET  # the id of the thread started from this message
    mention_roles: list[str] = []  # role ids, ascending
    mention_everyone: bool = False  # @everyone or @here, by someone allowed to
    attachments: list[Attachment] = msgspec.field(default_factory=list)


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


class Server(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    owner_id: str
    created_at: str
    description: str | None
    public: bool
    icon_url: str | None = None  # a square WebP, at most 512 px (docs/files.md)


class Overwrite(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    allow: str
    deny: str


class Role(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    name: str
    permissions: str
    color: int
    position: int
    hoist: bool
    mentionable: bool
    managed: bool = False  # a bot's role: it comes and goes with the bot, never by hand


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
    user_limit: int | UnsetType = UNSET  # voice channels only: members at most (0: no limit)
    e2ee_required: bool | UnsetType = UNSET  # voice channels only: only end-to-end encrypted media
    recipients: list[UserBrief] | UnsetType = UNSET  # a DM's two users (absent elsewhere)
    owner_id: str | UnsetType = UNSET  # a thread's starter, a group DM's owner
    thread_metadata: ThreadMetadata | UnsetType = UNSET  # threads only (docs/threads.md)
    member_count: int | UnsetType = UNSET  # a thread's members
    icon_url: str | UnsetType | None = UNSET  # a group DM's icon (docs/files.md), else absent


class ThreadMetadata(msgspec.Struct, frozen=True, kw_only=True):
    archived: bool
    locked: bool
    auto_archive_duration: int  # minutes: 60, 1440, 4320 or 10080
    archive_timestamp: str  # when it was archived; while active, its last activity
    starter_message_id: str | None  # the message it was started from


class ThreadMember(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # the thread's
    user: UserBrief
    joined_at: str


class ThreadMembersUpdate(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # the thread's
    server_id: str
    member_count: int
    added_members: list[ThreadMember]
    removed_member_ids: list[str]


class RecipientEvent(msgspec.Struct, frozen=True, kw_only=True):
    """CHANNEL_RECIPIENT_ADD / _REMOVE: who joined or left a group DM."""

    channel_id: str
    user: UserBrief


class ServerWithChannels(Server, frozen=True, kw_only=True):
    channels: list[Channel]  # those the receiver can see
    roles: list[Role]  # lowest first


class UserBrief(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    username: str
    display_name: str | None
    bot: bool = False
    avatar_url: str | None = None  # as in User: left out for none (member lists, DM recipients)


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


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    id: str


class MemberAdd(msgspec.Struct, frozen=True, kw_only=True):
    server_id: str
    user: UserBrief
    joined_at: str


class MemberRemove(msgspec.Struct, frozen=True, kw_only=True):
    server_id: str
    user: UserBrief


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


class Room(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    secret: str | UnsetType = UNSET  # only for the room's creator
    max_clients: int
    current_clients: int
    status: str  # empty | open | full | closing
    protocol: str
    host_id: int | None
    public: bool
    metadata: msgspec.Raw
    creator_id: str
    created_at: str


class ProtocolCounts(msgspec.Struct, frozen=True, kw_only=True):
    number_of_rooms: int
    current_clients: int
    committed_clients: int


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    number_of_rooms: int
    max_clients: int  # the server-wide client capacity (room_capacity)
    current_clients: int
    committed_clients: int  # the sum of the rooms' max_clients
    protocols: dict[str, ProtocolCounts]


class Presence(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    status: str  # online | idle | dnd | offline (invisible shows as offline)
    activity: str | None


class VoiceState(msgspec.Struct, frozen=True, kw_only=True):
    """Who is in which voice channel (channel_id None: they left), as VOICE_STATE_UPDATE and
    READY carry it."""

    server_id: str
    channel_id: str | None
    user_id: str
    session_id: str  # the gateway session that joined
    self_mute: bool
    self_deaf: bool
    mute: bool  # by a moderator (MUTE_MEMBERS)
    deaf: bool  # by a moderator (DEAFEN_MEMBERS)
    self_video: bool
    self_stream: bool


class VoiceServer(msgspec.Struct, frozen=True, kw_only=True):
    """VOICE_SERVER_UPDATE: where and with what to open the voice connection."""

    server_id: str
    channel_id: str
    token: str  # single use, expires after voice_token_ttl_s
    endpoint: str  # the voice connection's path on the realtime listener


class VoiceRefusal(msgspec.Struct, frozen=True, kw_only=True):
    """VOICE_STATE_REFUSED: why an op 4 changed nothing (REST's error object)."""

    server_id: str
    channel_id: str | None
    code: str
    message: str


class Ready(msgspec.Struct, frozen=True, kw_only=True):
    """READY's payload: everything a client needs to start."""

    v: int = 1
    session_id: str
    user: Me
    servers: list[ServerWithChannels]
    private_channels: list[Channel]
    read_states: list[ReadState]
    presences: list[Presence]  # of the people the user shares a server with, who are online
    voice_states: list[VoiceState] = []  # everyone in a voice channel of the user's servers
    threads: list[Channel] = msgspec.field(default_factory=list)  # active ones the user is in


class Resumed(msgspec.Struct, frozen=True, kw_only=True):
    replayed: int  # events replayed before RESUMED


class LoginSession(msgspec.Struct, frozen=True, kw_only=True):
    """One login of the user (GET /v1/api/auth/sessions)."""

    id: str
    created_at: str
    last_used_at: str
    expires_at: str
    user_agent: str | None
    ip: str | None
    current: bool


# -- from storage rows ------------------------------------------------------------------------


def iso(ms: int) -> str:
    """Unix milliseconds as ISO 8601 UTC, e.g. 2026-11-21T10:00:00.000Z."""
    second, milli = divmod(ms, 1000)
    return f"{_iso_second(second)}.{milli:03d}Z"


@functools.lru_cache(maxsize=64)
def _iso_second(second: int) -> str:
    # Every message object has a timestamp, built in the store's writer: the datetime was
    # ~4% of the GIL-held time per gateway send; messages of one second share this part.
    return datetime.fromtimestamp(second, UTC).isoformat()[:19]


def id_or_none(value: int | None) -> str | None:
    return None if value is None else str(value)


def server_out(s: ServerRow) -> Server:
    return Server(
        id=str(s.id),
        name=s.name,
        owner_id=str(s.owner_id),
        created_at=iso(s.created_at),
        description=s.description,
        public=s.is_public,
        icon_url=icon_path(s.id, s.icon) if s.icon else None,
    )


def overwrite_out(o: OverwriteRule) -> Overwrite:
    return Overwrite(id=str(o.target_id), type=o.type, allow=str(o.allow), deny=str(o.deny))


def channel_out(c: ChannelRow) -> Channel:
    return Channel(
        id=str(c.id),
        server_id=id_or_none(c.server_id),
        type=c.type,
        name=c.name,
        topic=c.topic,
        position=c.position,
        parent_id=id_or_none(c.parent_id),
        last_message_id=id_or_none(c.last_message_id),
        created_at=iso(c.created_at),
        rate_limit_per_user=c.rate_limit_per_user,
        permissions_synced=c.permissions_synced,
        permission_overwrites=[overwrite_out(o) for o in c.overwrites],
        user_limit=c.user_limit if c.type == "voice" else UNSET,
        e2ee_required=c.e2ee_required if c.type == "voice" else UNSET,
    )


def role_out(r: RoleRow) -> Role:
    return Role(
        id=str(r.id),
        name=r.name,
        permissions=str(r.permissions),
        color=r.color,
        position=r.position,
        hoist=r.hoist,
        mentionable=r.mentionable,
        managed=r.managed,
    )


def server_state_out(state: ServerState) -> ServerWithChannels:
    s = server_out(state.server)
    return ServerWithChannels(
        id=s.id,
        name=s.name,
        owner_id=s.owner_id,
        created_at=s.created_at,
        description=s.description,
        public=s.public,
        channels=[channel_out(c) for c in state.channels],
        roles=[role_out(r) for r in state.roles],
    )


def user_brief_out(u: UserBriefRow) -> UserBrief:
    return UserBrief(
        id=str(u.id),
        username=u.username,
        display_name=u.display_name,
        bot=u.bot,
        avatar_url=avatar_path(u.id, u.avatar) if u.avatar else None,
    )


def dm_out(dm: DmRow) -> Channel:
    c = dm.channel
    return Channel(
        id=str(c.id),
        server_id=None,
        type=c.type,
        name=c.name,
        topic=c.topic,
        position=c.position,
        parent_id=None,
        last_message_id=id_or_none(c.last_message_id),
        created_at=iso(c.created_at),
        rate_limit_per_user=0,
        permissions_synced=False,
        permission_overwrites=[],
        recipients=[user_brief_out(u) for u in dm.recipients],
        owner_id=UNSET if dm.owner_id is None else str(dm.owner_id),
        icon_url=(
            UNSET
            if c.type != "group_dm"
            else group_icon_path(c.id, dm.icon)
            if dm.icon is not None
            else None
        ),
    )


def timeout_out(until: int | None) -> str | None:
    """A timeout's end while it lasts; null once it has ended."""
    return iso(until) if until is not None and until > now_ms() else None


def member_out(m: MemberRow) -> Member:
    return Member(
        user=user_brief_out(m.user),
        nickname=m.nickname,
        joined_at=iso(m.joined_at),
        roles=[str(r) for r in m.roles],
        communication_disabled_until=timeout_out(m.communication_disabled_until),
    )


def member_update_out(m: MemberRow) -> MemberUpdate:
    return MemberUpdate(
        server_id=str(m.server_id),
        user=user_brief_out(m.user),
        nickname=m.nickname,
        roles=[str(r) for r in m.roles],
        communication_disabled_until=timeout_out(m.communication_disabled_until),
    )


def invite_out(i: InviteRow) -> Invite:
    return Invite(
        code=i.code,
        server_id=str(i.server_id),
        inviter_id=str(i.inviter_id),
        max_uses=i.max_uses or 0,
        uses=i.uses,
        expires_at=None if i.expires_at is None else iso(i.expires_at),
        created_at=iso(i.created_at),
    )


def public_server_out(p: PublicServerRow) -> PublicServer:
    return PublicServer(
        id=str(p.server.id),
        name=p.server.name,
        description=p.server.description,
        member_count=p.member_count,
    )


def ban_out(b: BanRow) -> Ban:
    return Ban(user=user_brief_out(b.user), reason=b.reason, created_at=iso(b.created_at))


_MASKS = frozenset({"permissions", "allow", "deny"})


_TIMES = frozenset({"communication_disabled_until", "expires_at"})


def _audit_value(key: str, value: Any) -> Any:
    """IDs and masks as strings, times as ISO 8601, like everywhere else in the API."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if key.endswith("_id") or key in _MASKS:
        return str(value)
    if key in _TIMES:
        return iso(value)
    return value


def audit_out(e: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=str(e.id),
        user_id=str(e.user_id),
        action=e.action,
        target_id=id_or_none(e.target_id),
        reason=e.reason,
        changes=[
            AuditChange(key=c.key, old=_audit_value(c.key, c.old), new=_audit_value(c.key, c.new))
            for c in e.changes
        ],
        created_at=iso(e.created_at),
    )


def room_out(record: RoomRecord, viewer: int | None) -> Room:
    """An app room as `viewer` (None: anonymous) sees it: the secret only for its creator."""
    return Room(
        id=str(record.id),
        secret=record.secret if viewer == record.creator_id else UNSET,
        max_clients=record.max_clients,
        current_clients=record.current_clients,
        status=record.status,
        protocol=record.protocol,
        host_id=record.host_id,
        public=record.public,
        metadata=msgspec.Raw(record.metadata),
        creator_id=str(record.creator_id),
        created_at=iso(record.created_at),
    )


def author_out(author: AuthorRow) -> Author:
    return Author(
        id=str(author.id),
        username=author.username,
        display_name=author.display_name,
        bot=author.bot,
        avatar_url=avatar_path(author.id, author.avatar) if author.avatar else None,
    )


def webhook_author_out(webhook: WebhookAuthor) -> Author:
    """Who a webhook's message shows as: the webhook's id, the name it was posted with."""
    return Author(
        id=str(webhook.webhook_id),
        username=webhook.username,
        display_name=None,
        bot=True,
        avatar_url=webhook.avatar_url,
    )


def attachment_out(row: AttachmentRow, urls: FileUrls | None) -> Attachment:
    image = row.width is not None
    return Attachment(
        id=str(row.id),
        filename=row.filename,
        size=row.size,
        content_type=row.content_type,
        url=file_url(urls, attachment_path(row.id, row.filename)),
        width=row.width,
        height=row.height,
        preview_url=file_url(urls, preview_path(row.id)) if row.has_preview else None,
        thumbnail_url=file_url(urls, thumbnail_path(row.id)) if image else None,
    )


def emoji_out(row: EmojiRow) -> Emoji:
    return Emoji(
        id=str(row.id),
        name=row.name,
        animated=row.animated,
        url=emoji_path(row.id),
        creator_id=str(row.creator_id) if row.creator_id is not None else None,
    )


def file_url(urls: FileUrls | None, path: str) -> str:
    return urls.sign(path) if urls is not None else path


def message_out(
    row: MessageRow,
    *,
    for_event: bool = False,
    kind: type[Message] = Message,
    urls: FileUrls | None = None,
) -> Message:
    """The message object; `for_event` makes `reactions[].me` false (one payload for all);
    `urls` signs the attachments' URLs (unsigned paths, which are refused, without it)."""
    return kind(
        id=str(row.id),
        channel_id=str(row.channel_id),
        server_id=str(row.server_id) if row.server_id is not None else None,
        author=author_out(row.author) if row.webhook is None else webhook_author_out(row.webhook),
        content=row.content,
        nonce=row.nonce,
        reply_to=str(row.reply_to) if row.reply_to is not None else None,
        mentions=[str(u) for u in row.mentions],
        reactions=[
            Reaction(emoji=r.emoji, count=r.count, me=r.me and not for_event) for r in row.reactions
        ],
        pinned=row.pinned,
        edited_at=iso(row.edited_at) if row.edited_at is not None else None,
        created_at=iso(timestamp_ms(row.id)),
        embeds=shown(row.embeds, row.flags),
        flags=row.flags,
        webhook_id=str(row.webhook.webhook_id) if row.webhook is not None else None,
        thread=UNSET if row.thread_id is None else str(row.thread_id),
        mention_roles=[str(r) for r in row.mention_roles],
        mention_everyone=row.mention_everyone,
        attachments=[attachment_out(a, urls) for a in row.attachments],
    )


def user_out(user: UserRow) -> User:
    return User(
        id=str(user.id),
        username=user.username,
        display_name=user.display_name,
        created_at=iso(user.created_at),
        bot=bool(user.bot),
        avatar_url=avatar_path(user.id, user.avatar) if user.avatar else None,
    )


def me_out(user: UserRow, keys: list[KeyRow]) -> Me:
    return Me(
        id=str(user.id),
        username=user.username,
        display_name=user.display_name,
        created_at=iso(user.created_at),
        bot=bool(user.bot),
        avatar_url=avatar_path(user.id, user.avatar) if user.avatar else None,
        has_password=user.password_hash is not None,
        keys=[key_out(k) for k in keys],
    )


def key_out(key: KeyRow) -> Key:
    return Key(
        id=str(key.id), public_key=crypto.b64encode(key.public_key), created_at=iso(key.created_at)
    )


# -- bots and webhooks (relay.chat.applications, relay.chat.webhooks) ------------------------------


class Application(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    owner_id: str
    public: bool  # false: only the owner may add its bot to a server
    bot: User
    created_at: str


class ApplicationWithToken(Application, frozen=True, kw_only=True):
    """An application as created or after a token reset: the bot token, shown this once."""

    token: str


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    server_id: str
    channel_id: str
    name: str
    creator_id: str | None  # None once the creator's account is gone
    created_at: str


class WebhookWithToken(Webhook, frozen=True, kw_only=True):
    """A webhook as created or after a token reset: its token and execute URL, shown once."""

    token: str
    url: str


class BotAdded(msgspec.Struct, frozen=True, kw_only=True):
    member: Member
    role: Role


def application_out(a: ApplicationRow) -> Application:
    return Application(
        id=str(a.id),
        name=a.name,
        owner_id=str(a.owner_id),
        public=a.public,
        bot=User(
            id=str(a.bot_id),
            username=a.bot_username,
            display_name=a.name,
            created_at=iso(a.created_at),
            bot=True,
        ),
        created_at=iso(a.created_at),
    )


def webhook_out(w: WebhookRow) -> Webhook:
    return Webhook(
        id=str(w.id),
        server_id=str(w.server_id),
        channel_id=str(w.channel_id),
        name=w.name,
        creator_id=id_or_none(w.creator_id),
        created_at=iso(w.created_at),
    )
