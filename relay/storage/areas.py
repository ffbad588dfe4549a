"""Each area's queries behind a typed interface: what the rest of Relay may ask of storage.

One Protocol per area names the query functions other layers call (a query takes the
connection first, `db`, and runs in the store's writer or a reader thread). The SQLite modules
of relay/storage implement them, checked by mypy where `SQLITE` is built. `POSTGRES` runs the
same modules on PostgreSQL (their SQL translated, relay.storage.postgres.adapter) except where
PostgreSQL needs SQL of its own (full-text search): there a module of relay.storage.postgres
satisfies the same Protocol and returns the same row Structs. The chat layer reaches storage
only through an `Areas` (`Chat.q`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from relay.storage import (
    applications,
    audience,
    audit,
    channels,
    dms,
    group_dms,
    inbox,
    invites,
    members,
    messages,
    moderation,
    overwrites,
    push,
    roles,
    search,
    servers,
    threads,
    users,
    voice,
    webhooks,
)
from relay.storage.postgres import search as postgres_search

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from msgspec import UnsetType
    from sqlite_utils import Database

    from relay.permissions import Overwrite
    from relay.storage.applications import ApplicationRow, BotAdded, BotRemoved, BotToken
    from relay.storage.audience import ChannelAudience, ServerSnapshot, VisibleChannel
    from relay.storage.audit import AuditEntry
    from relay.storage.channels import ChannelRow
    from relay.storage.dms import DmOpened, DmRow
    from relay.storage.group_dms import Left
    from relay.storage.invites import InvitePreview, InviteRow
    from relay.storage.members import Joined, MemberRow
    from relay.storage.messages import AuthorRow, MessageRow, NewMessage, Posted, ReadStateRow
    from relay.storage.moderation import Banned, BanRow
    from relay.storage.push import Candidate, NotificationSettings, Preference, SubscriptionRow
    from relay.storage.roles import RoleRow
    from relay.storage.search import SearchFilter, SearchPage
    from relay.storage.servers import PublicServer, ServerListing, ServerRow, ServerState
    from relay.storage.threads import ThreadMemberRow, ThreadRow
    from relay.storage.users import KeyRow, Rotated, SessionRow, UserListing, UserRow
    from relay.storage.voice import VoiceChannel
    from relay.storage.webhooks import WebhookRow, WebhookSecret


class Audience(Protocol):
    """Who hears a channel; the permission snapshots of the chat layer's views (SQLite:
    relay.storage.audience)."""

    def channel_audience(self, db: Database, channel_id: int) -> ChannelAudience | None: ...

    def visible_channel(
        self, db: Database, channel_id: int, user_id: int, now: int | None = ...
    ) -> VisibleChannel | None: ...

    def server_snapshot(self, db: Database, server_id: int) -> ServerSnapshot | None: ...


class Audit(Protocol):
    """The audit log of moderation and configuration changes (SQLite: relay.storage.audit)."""

    def prune(self, db: Database, before_ms: int, batch: int = ...) -> int: ...

    def entries(
        self,
        db: Database,
        server_id: int,
        viewer_id: int,
        *,
        user_id: int | None = ...,
        action: str | None = ...,
        before: int | None = ...,
        limit: int = ...,
    ) -> list[AuditEntry]: ...


class Channels(Protocol):
    """A server's channels and categories (SQLite: relay.storage.channels)."""

    def list_channels(self, db: Database, server_id: int) -> list[ChannelRow]: ...

    def channels_for(self, db: Database, server_id: int, user_id: int) -> list[ChannelRow]: ...

    def create_channel(
        self,
        db: Database,
        channel_id: int,
        server_id: int,
        user_id: int,
        *,
        name: str,
        kind: str,
        topic: str | None,
        parent_id: int | None,
        position: int | None,
        now_ms: int,
        max_channels: int,
        rate_limit_per_user: int = ...,
        permission_overwrites: tuple[Overwrite, ...] | None = ...,
        reason: str | None = ...,
    ) -> ChannelRow: ...

    def update_channel(
        self,
        db: Database,
        channel_id: int,
        user_id: int,
        *,
        name: str | UnsetType = ...,
        topic: str | UnsetType | None = ...,
        position: int | UnsetType = ...,
        parent_id: int | UnsetType | None = ...,
        rate_limit_per_user: int | UnsetType = ...,
        permissions_synced: bool | UnsetType = ...,
        reason: str | None = ...,
        user_limit: int | UnsetType = ...,
        e2ee_required: bool | UnsetType = ...,
    ) -> ChannelRow: ...

    def delete_channel(
        self, db: Database, channel_id: int, user_id: int, reason: str | None = ...
    ) -> tuple[ChannelRow, list[ChannelRow]]: ...


class Dms(Protocol):
    """1:1 DM channels (SQLite: relay.storage.dms)."""

    def open_dm(
        self, db: Database, channel_id: int, user_id: int, recipient_id: int, now_ms: int
    ) -> DmOpened: ...

    def dms_of(self, db: Database, user_id: int) -> list[DmRow]: ...

    def channel_for(
        self, db: Database, channel_id: int, user_id: int
    ) -> ChannelRow | DmRow | None: ...


class Invites(Protocol):
    """Invites to a server (SQLite: relay.storage.invites)."""

    def create_invite(
        self,
        db: Database,
        code: str,
        server_id: int,
        inviter_id: int,
        max_uses: int | None,
        expires_at: int | None,
        now_ms: int,
        reason: str | None = ...,
        *,
        max_invites: int = ...,
    ) -> InviteRow: ...

    def prune_invites(self, db: Database, now_ms: int) -> int: ...

    def invites_of(self, db: Database, server_id: int, user_id: int) -> list[InviteRow]: ...

    def invite_preview(self, db: Database, code: str, now_ms: int) -> InvitePreview: ...

    def use_invite(
        self, db: Database, code: str, user_id: int, now_ms: int, *, max_joined: int = ...
    ) -> Joined: ...

    def delete_invite(
        self, db: Database, code: str, user_id: int, reason: str | None = ...
    ) -> InviteRow: ...


class Members(Protocol):
    """Who is in a server (SQLite: relay.storage.members)."""

    def members_page(
        self, db: Database, server_id: int, user_id: int, after: int, limit: int
    ) -> list[MemberRow]: ...

    def get_member(self, db: Database, server_id: int, user_id: int) -> MemberRow | None: ...

    def leave_server(self, db: Database, server_id: int, user_id: int) -> MemberRow: ...

    def join_public(
        self, db: Database, server_id: int, user_id: int, now_ms: int, *, max_joined: int = ...
    ) -> Joined: ...


class Messages(Protocol):
    """Messages, reactions, pins and read states (SQLite: relay.storage.messages)."""

    def get(
        self, db: Database, channel_id: int, message_id: int, viewer: int | None
    ) -> MessageRow | None: ...

    def history(
        self,
        db: Database,
        channel_id: int,
        viewer: int | None,
        *,
        before: int | None = ...,
        after: int | None = ...,
        around: int | None = ...,
        limit: int = ...,
    ) -> list[MessageRow]: ...

    def post(self, db: Database, message_id: int, new: NewMessage) -> Posted: ...

    def create(
        self,
        db: Database,
        message_id: int,
        channel_id: int,
        author_id: int,
        content: str,
        nonce: str | None,
        reply_to: int | None,
        mention_ids: list[int],
        now_ms: int,
        *,
        embeds: str | None = ...,
        flags: int = ...,
    ) -> tuple[MessageRow, bool]: ...

    def edit(
        self,
        db: Database,
        channel_id: int,
        message_id: int,
        editor_id: int,
        content: str | None,
        mention_ids: list[int],
        now_ms: int,
        *,
        embeds: str | UnsetType | None = ...,
        flags: int | None = ...,
    ) -> MessageRow: ...

    def set_fetched_embeds(
        self,
        db: Database,
        channel_id: int,
        message_id: int,
        content: str,
        rich_before: list[Any],
        rich_after: list[Any],
        links: list[Any],
    ) -> MessageRow | None: ...

    def delete(
        self, db: Database, channel_id: int, message_id: int, user_id: int, reason: str | None = ...
    ) -> None: ...

    def bulk_delete(
        self,
        db: Database,
        channel_id: int,
        user_id: int,
        message_ids: Sequence[int],
        reason: str | None = ...,
    ) -> list[int]: ...

    def pin(
        self,
        db: Database,
        channel_id: int,
        message_id: int,
        user_id: int,
        now_ms: int,
        reason: str | None = ...,
        max_pins: int = ...,
    ) -> bool: ...

    def unpin(
        self, db: Database, channel_id: int, message_id: int, user_id: int, reason: str | None = ...
    ) -> bool: ...

    def pinned(self, db: Database, channel_id: int, viewer: int | None) -> list[MessageRow]: ...

    def add_reaction(
        self,
        db: Database,
        channel_id: int,
        message_id: int,
        user_id: int,
        emoji: str,
        now_ms: int,
        max_emoji: int = ...,
    ) -> bool: ...

    def remove_reaction(
        self, db: Database, channel_id: int, message_id: int, user_id: int, emoji: str
    ) -> bool: ...

    def reactors(
        self, db: Database, channel_id: int, message_id: int, emoji: str, after: int, limit: int
    ) -> list[AuthorRow]: ...

    def ack(self, db: Database, user_id: int, channel_id: int, message_id: int) -> bool: ...

    def read_states(self, db: Database, user_id: int) -> list[ReadStateRow]: ...


class Moderation(Protocol):
    """Member updates, kicks, bans (SQLite: relay.storage.moderation)."""

    def update_member(
        self,
        db: Database,
        server_id: int,
        target_id: int,
        user_id: int,
        *,
        nickname: str | UnsetType | None = ...,
        communication_disabled_until: int | UnsetType | None = ...,
        now_ms: int,
        reason: str | None = ...,
    ) -> MemberRow: ...

    def kick(
        self, db: Database, server_id: int, target_id: int, user_id: int, reason: str | None = ...
    ) -> MemberRow: ...

    def ban(
        self,
        db: Database,
        server_id: int,
        target_id: int,
        user_id: int,
        *,
        delete_message_s: int,
        now_ms: int,
        reason: str | None = ...,
    ) -> Banned: ...

    def unban(
        self, db: Database, server_id: int, target_id: int, user_id: int, reason: str | None = ...
    ) -> None: ...

    def bans_of(
        self, db: Database, server_id: int, user_id: int, after: int, limit: int
    ) -> list[BanRow]: ...

    def get_ban(self, db: Database, server_id: int, target_id: int, user_id: int) -> BanRow: ...


class Overwrites(Protocol):
    """Per-channel permission overwrites (SQLite: relay.storage.overwrites)."""

    def set_overwrite(
        self,
        db: Database,
        channel_id: int,
        user_id: int,
        overwrite: Overwrite,
        reason: str | None = ...,
        *,
        max_overwrites: int,
    ) -> int: ...

    def delete_overwrite(
        self, db: Database, channel_id: int, target_id: int, user_id: int, reason: str | None = ...
    ) -> int: ...


class Roles(Protocol):
    """Roles and who holds them (SQLite: relay.storage.roles)."""

    def roles_for(self, db: Database, server_id: int, user_id: int) -> list[RoleRow]: ...

    def create_role(
        self,
        db: Database,
        role_id: int,
        server_id: int,
        user_id: int,
        *,
        name: str,
        permissions: int,
        color: int,
        hoist: bool,
        mentionable: bool,
        position: int,
        now_ms: int,
        max_roles: int,
        reason: str | None = ...,
    ) -> RoleRow: ...

    def update_role(
        self,
        db: Database,
        server_id: int,
        role_id: int,
        user_id: int,
        *,
        name: str | UnsetType = ...,
        permissions: int | UnsetType = ...,
        color: int | UnsetType = ...,
        hoist: bool | UnsetType = ...,
        mentionable: bool | UnsetType = ...,
        reason: str | None = ...,
    ) -> RoleRow: ...

    def delete_role(
        self, db: Database, server_id: int, role_id: int, user_id: int, reason: str | None = ...
    ) -> RoleRow: ...

    def reorder_roles(
        self,
        db: Database,
        server_id: int,
        user_id: int,
        moves: list[tuple[int, int]],
        reason: str | None = ...,
    ) -> list[RoleRow]: ...

    def add_member_role(
        self,
        db: Database,
        server_id: int,
        target_id: int,
        role_id: int,
        user_id: int,
        reason: str | None = ...,
    ) -> bool: ...

    def remove_member_role(
        self,
        db: Database,
        server_id: int,
        target_id: int,
        role_id: int,
        user_id: int,
        reason: str | None = ...,
    ) -> bool: ...


class Mentions(Protocol):
    """The mentions inbox (SQLite: relay.storage.inbox)."""

    def inbox_messages(
        self, db: Database, user_id: int, before: int, limit: int, server_id: int | None = None
    ) -> list[MessageRow]: ...


class Search(Protocol):
    """Full-text message search (SQLite: relay.storage.search)."""

    def searchable_channels(
        self, db: Database, server_id: int, user_id: int
    ) -> list[int] | None: ...

    def search(
        self, db: Database, viewer: int, channel_ids: list[int], wanted: SearchFilter
    ) -> SearchPage: ...


class Servers(Protocol):
    """Servers, their ownership, READY's server states and discovery (SQLite:
    relay.storage.servers)."""

    def require_member(self, db: Database, server_id: int, user_id: int) -> ServerRow: ...

    def create_server(
        self,
        db: Database,
        server_id: int,
        channel_ids: tuple[int, int],
        owner_id: int,
        name: str,
        now_ms: int,
        max_owned: int,
    ) -> ServerState: ...

    def servers_of(self, db: Database, user_id: int) -> list[ServerRow]: ...

    def update_server(
        self,
        db: Database,
        server_id: int,
        user_id: int,
        name: str | None,
        *,
        description: str | UnsetType | None = ...,
        is_public: bool | None = ...,
        reason: str | None = ...,
    ) -> ServerRow: ...

    def delete_server(self, db: Database, server_id: int, user_id: int) -> ServerRow: ...

    def transfer_ownership(
        self,
        db: Database,
        server_id: int,
        user_id: int,
        new_owner_id: int,
        reason: str | None = ...,
    ) -> ServerRow: ...

    def ready_state(self, db: Database, user_id: int) -> list[ServerState]: ...

    def discover(self, db: Database, query: str, after: int, limit: int) -> list[PublicServer]: ...

    def list_servers(self, db: Database, after: int, limit: int) -> list[ServerListing]: ...


class Users(Protocol):
    """Accounts, keys, login sessions, challenges and the server's own secrets (SQLite:
    relay.storage.users)."""

    def insert_user(
        self,
        db: Database,
        user_id: int,
        username: str,
        display_name: str | None,
        password_hash: str | None,
        public_key: bytes | None,
        key_id: int,
        now_ms: int,
    ) -> UserRow: ...

    def get_user(self, db: Database, user_id: int) -> UserRow | None: ...

    def get_user_by_name(self, db: Database, username: str) -> UserRow | None: ...

    def update_user(
        self,
        db: Database,
        user_id: int,
        now_ms: int,
        *,
        display_name: str | None = ...,
        clear_display_name: bool = ...,
        password_hash: str | None = ...,
    ) -> UserRow: ...

    def list_users(
        self, db: Database, after: int, limit: int, now_ms: int
    ) -> list[UserListing]: ...

    def set_disabled(
        self, db: Database, user_id: int, disabled: bool, now_ms: int
    ) -> list[int]: ...

    def add_key(
        self, db: Database, key_id: int, user_id: int, public_key: bytes, now_ms: int, max_keys: int
    ) -> KeyRow: ...

    def list_keys(self, db: Database, user_id: int) -> list[KeyRow]: ...

    def create_session(
        self,
        db: Database,
        session_id: int,
        user_id: int,
        refresh_hash: bytes,
        now_ms: int,
        expires_at_ms: int,
        user_agent: str | None,
        ip: str | None,
    ) -> SessionRow: ...

    def rotate_refresh_token(
        self, db: Database, old_hash: bytes, new_hash: bytes, now_ms: int, ttl_ms: int
    ) -> Rotated: ...

    def get_session(self, db: Database, session_id: int) -> SessionRow | None: ...

    def list_sessions(self, db: Database, user_id: int, now_ms: int) -> list[SessionRow]: ...

    def revoke_session(self, db: Database, session_id: int, now_ms: int, reason: str) -> bool: ...

    def revoke_user_sessions(
        self, db: Database, user_id: int, now_ms: int, reason: str, keep: int | None = ...
    ) -> list[int]: ...

    def revoke_beyond(
        self, db: Database, user_id: int, now_ms: int, reason: str, keep: int
    ) -> list[int]: ...

    def revoked_since(self, db: Database, since_ms: int) -> list[int]: ...

    def insert_challenge(
        self,
        db: Database,
        challenge: bytes,
        user_id: int,
        expires_at_ms: int,
        now_ms: int,
        keep: int,
    ) -> None: ...

    def consume_challenge(
        self, db: Database, challenge: bytes, user_id: int, now_ms: int
    ) -> bool: ...

    def secret(self, db: Database, name: str, make: Callable[[], bytes]) -> bytes: ...

    def prune(self, db: Database, now_ms: int, keep_revoked_ms: int) -> int: ...


class Voice(Protocol):
    def voice_channel(self, db: Database, channel_id: int, user_id: int) -> VoiceChannel: ...

    def server_permissions(self, db: Database, server_id: int, user_id: int) -> int | None: ...

    def is_member(self, db: Database, server_id: int, user_id: int) -> bool: ...

    def moderation(self, db: Database, server_id: int, user_id: int) -> tuple[bool, bool]: ...

    def set_moderation(
        self, db: Database, server_id: int, user_id: int, mute: bool | None, deaf: bool | None
    ) -> tuple[bool, bool]: ...


class Applications(Protocol):
    """Applications (bot accounts) and adding bots to servers (SQLite:
    relay.storage.applications)."""

    def get_application(self, db: Database, app_id: int) -> ApplicationRow | None: ...

    def owned(self, db: Database, app_id: int, owner_id: int) -> ApplicationRow: ...

    def list_applications(self, db: Database, owner_id: int) -> list[ApplicationRow]: ...

    def create_application(
        self,
        db: Database,
        app_id: int,
        bot_id: int,
        owner_id: int,
        name: str,
        usernames: list[str],
        token_hash: bytes,
        token_id: int,
        now_ms: int,
        max_applications: int,
    ) -> ApplicationRow: ...

    def update_application(
        self,
        db: Database,
        app_id: int,
        owner_id: int,
        now_ms: int,
        *,
        name: str | None = ...,
        public: bool | None = ...,
    ) -> ApplicationRow: ...

    def reset_token(
        self, db: Database, app_id: int, owner_id: int, token_hash: bytes, token_id: int
    ) -> tuple[ApplicationRow, int]: ...

    def delete_application(
        self, db: Database, app_id: int, owner_id: int, now_ms: int
    ) -> BotRemoved: ...

    def bot_tokens(self, db: Database) -> list[BotToken]: ...

    def disabled_bots(self, db: Database) -> list[int]: ...

    def add_bot(
        self,
        db: Database,
        server_id: int,
        user_id: int,
        app_id: int,
        role_id: int,
        permissions: int,
        now_ms: int,
        *,
        max_joined: int,
        max_roles: int,
        reason: str | None = ...,
    ) -> BotAdded: ...


class Webhooks(Protocol):
    """Incoming webhooks (SQLite: relay.storage.webhooks)."""

    def create_webhook(
        self,
        db: Database,
        webhook_id: int,
        channel_id: int,
        user_id: int,
        name: str,
        token_hash: bytes,
        now_ms: int,
        max_per_channel: int,
        reason: str | None = ...,
    ) -> WebhookRow: ...

    def channel_webhooks(self, db: Database, channel_id: int, user_id: int) -> list[WebhookRow]: ...

    def server_webhooks(self, db: Database, server_id: int, user_id: int) -> list[WebhookRow]: ...

    def get_webhook(self, db: Database, webhook_id: int, user_id: int) -> WebhookRow: ...

    def update_webhook(
        self,
        db: Database,
        webhook_id: int,
        user_id: int,
        now_ms: int,
        *,
        name: str | None = ...,
        channel_id: int | None = ...,
        reason: str | None = ...,
    ) -> WebhookRow: ...

    def delete_webhook(
        self, db: Database, webhook_id: int, user_id: int, reason: str | None = ...
    ) -> WebhookRow: ...

    def reset_webhook_token(
        self, db: Database, webhook_id: int, user_id: int, token_hash: bytes
    ) -> WebhookRow: ...

    def webhook_secret(self, db: Database, webhook_id: int) -> WebhookSecret | None: ...


class GroupDms(Protocol):
    """Group DM channels (SQLite: relay.storage.group_dms)."""

    def create_group_dm(
        self,
        db: Database,
        channel_id: int,
        owner_id: int,
        recipient_ids: list[int],
        name: str | None,
        now_ms: int,
        max_recipients: int,
    ) -> DmRow: ...

    def rename(
        self, db: Database, channel_id: int, user_id: int, name: str | None
    ) -> tuple[DmRow, DmRow]: ...

    def add_recipient(
        self, db: Database, channel_id: int, owner_id: int, user_id: int, max_recipients: int
    ) -> DmRow | None: ...

    def remove_recipient(
        self, db: Database, channel_id: int, owner_id: int, user_id: int
    ) -> Left: ...

    def leave(self, db: Database, channel_id: int, user_id: int) -> Left: ...


class Threads(Protocol):
    """Threads and their members (SQLite: relay.storage.threads)."""

    def get_thread(self, db: Database, thread_id: int, now_ms: int) -> ThreadRow | None: ...

    def create_thread(
        self,
        db: Database,
        thread_id: int,
        parent_id: int,
        user_id: int,
        *,
        name: str,
        auto_archive: int,
        message_id: int | None,
        now_ms: int,
        max_threads: int,
    ) -> ThreadRow: ...

    def update_thread(
        self,
        db: Database,
        thread_id: int,
        user_id: int,
        *,
        name: str | None,
        archived: bool | None,
        locked: bool | None,
        auto_archive: int | None,
        now_ms: int,
        reason: str | None = ...,
    ) -> tuple[ThreadRow, ThreadRow]: ...

    def post_state(
        self, db: Database, thread_id: int, user_id: int, now_ms: int
    ) -> tuple[bool, bool]: ...

    def before_post(
        self, db: Database, thread_id: int, user_id: int, now_ms: int
    ) -> tuple[bool, bool]: ...

    def delete_thread(
        self, db: Database, thread_id: int, user_id: int, now_ms: int, reason: str | None = ...
    ) -> ThreadRow: ...

    def list_threads(
        self,
        db: Database,
        parent_id: int,
        user_id: int,
        *,
        archived: bool,
        now_ms: int,
        before: int | None = ...,
        limit: int = ...,
    ) -> list[ThreadRow]: ...

    def active_threads_of(self, db: Database, user_id: int, now_ms: int) -> list[ThreadRow]: ...

    def member_of(self, db: Database, thread_id: int, user_id: int) -> ThreadMemberRow | None: ...

    def add_member(
        self, db: Database, thread_id: int, actor_id: int, user_id: int, now_ms: int
    ) -> ThreadMemberRow | None: ...

    def remove_member(self, db: Database, thread_id: int, actor_id: int, user_id: int) -> bool: ...

    def list_members(self, db: Database, thread_id: int, user_id: int) -> list[ThreadMemberRow]: ...

    def member_ids(self, db: Database, thread_id: int) -> list[int]: ...


class Push(Protocol):
    """Web Push subscriptions and notification settings (SQLite: relay.storage.push)."""

    def add_subscription(
        self,
        db: Database,
        user_id: int,
        auth_session_id: int,
        endpoint: str,
        p256dh: bytes,
        auth: bytes,
        now_ms: int,
        per_session: int,
    ) -> None: ...

    def remove_subscription(self, db: Database, user_id: int, endpoint: str) -> None: ...

    def drop_subscription(self, db: Database, subscription_id: int) -> int: ...

    def drop_login_subscriptions(self, db: Database, auth_session_id: int) -> int: ...

    def message_content(self, db: Database, message_id: int) -> str | None: ...

    def subscriber_ids(self, db: Database) -> list[int]: ...

    def subscriptions_of(
        self, db: Database, user_id: int, now_ms: int
    ) -> list[SubscriptionRow]: ...

    def candidates(
        self, db: Database, channel_id: int, author_id: int, now_ms: int, with_roles: bool
    ) -> list[Candidate]: ...

    def notification_settings(self, db: Database, user_id: int) -> NotificationSettings: ...

    def update_notification_settings(
        self,
        db: Database,
        user_id: int,
        hide_content: bool | None,
        servers: Sequence[tuple[int, Preference]],
        channels: Sequence[tuple[int, Preference]],
        max_entries: int,
    ) -> NotificationSettings: ...


@dataclass(frozen=True, slots=True)
class Areas:
    """One implementation of every area."""

    audience: Audience
    audit: Audit
    channels: Channels
    dms: Dms
    invites: Invites
    members: Members
    mentions: Mentions
    messages: Messages
    moderation: Moderation
    overwrites: Overwrites
    roles: Roles
    search: Search
    servers: Servers
    users: Users
    voice: Voice
    applications: Applications
    webhooks: Webhooks
    group_dms: GroupDms
    threads: Threads
    push: Push


SQLITE = Areas(
    audience=audience,
    audit=audit,
    channels=channels,
    dms=dms,
    invites=invites,
    members=members,
    mentions=inbox,
    messages=messages,
    moderation=moderation,
    overwrites=overwrites,
    roles=roles,
    search=search,
    servers=servers,
    users=users,
    voice=voice,
    applications=applications,
    webhooks=webhooks,
    group_dms=group_dms,
    threads=threads,
    push=push,
)

POSTGRES = replace(SQLITE, search=postgres_search)
"""The same areas on PostgreSQL: the shared modules through the SQL translator, and PostgreSQL's
own modules where a query cannot be translated (relay/storage/postgres/)."""
