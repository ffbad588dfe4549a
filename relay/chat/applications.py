"""Applications (bot accounts): creating, listing, renaming and deleting them, resetting a bot's
token, and adding a bot to a server.

A bot token is 256 random bits shown once (on creation and on each reset) and stored as its
SHA-256 only; the account service (relay.accounts) keeps the live ones in memory, so a reset
or a deletion refuses the old token at once and closes the bot's gateway sessions (4004).
Adding a bot to a server creates its managed role (relay.storage.applications) and announces
ROLE_CREATE, MEMBER_ADD and MEMBER_UPDATE to the server and SERVER_CREATE to the bot.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

from msgspec import UnsetType

from relay import crypto
from relay.chat import events
from relay.chat.args import field_error, mask_field, snowflake
from relay.chat.fanout import PermissionsChanged
from relay.chat.members import announce_departure, announce_join
from relay.chat.objects import (
    Application,
    ApplicationWithToken,
    BotAdded,
    RoleEvent,
    application_out,
    member_out,
    member_update_out,
    role_out,
)
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.accounts import Accounts
    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.storage.applications import ApplicationRow

# Names that would pass for Relay itself or its operators (case-insensitive substrings).
RESERVED_WORDS = ("relay", "system")
USERNAME_TRIES = 5


def checked_name(name: str, field: str = "name") -> str:
    """A bot's or webhook's name: refused if it contains a reserved word."""
    lowered = name.casefold()
    for word in RESERVED_WORDS:
        if word in lowered:
            raise field_error(field, f"must not contain {word!r}")
    return name


def bot_usernames(name: str) -> list[str]:
    """Usernames to try for a new bot: `<name>-bot`, then with a random number. The hyphen
    keeps them apart from people's, whose usernames cannot contain one."""
    slug = re.sub(r"[^a-z0-9_.]", "", name.casefold().replace(" ", "_"))[:24] or "app"
    extra = [f"{slug}-bot-{secrets.randbelow(10_000):04d}" for _ in range(USERNAME_TRIES - 1)]
    return [f"{slug}-bot", *extra]


def _with_token(app: ApplicationRow, token: str) -> ApplicationWithToken:
    plain = application_out(app)
    return ApplicationWithToken(
        id=plain.id,
        name=plain.name,
        owner_id=plain.owner_id,
        public=plain.public,
        bot=plain.bot,
        created_at=plain.created_at,
        token=token,
    )


async def create(
    chat: Chat, accounts: Accounts, user_id: int, data: commands.CreateApplication
) -> ApplicationWithToken:
    """A new application of the caller's with its bot user; the bot token is in the answer
    only. Raises Unprocessable("too_many_applications"), BadRequest("invalid_field")."""
    name = checked_name(data.name)
    token = crypto.new_refresh_token()
    ids = chat.store.ids
    app = await chat.store.write(
        chat.q.applications.create_application,
        ids.next(),
        ids.next(),
        user_id,
        name,
        bot_usernames(name),
        crypto.hash_token(token),
        ids.next(),
        now_ms(),
        chat.settings.max_applications_per_user,
    )
    accounts.set_bot_token(crypto.hash_token(token), app.bot_id, app.token_id)
    chat.bots.add(app.bot_id)
    return _with_token(app, token)


async def list_own(chat: Chat, user_id: int) -> list[Application]:
    rows = await chat.store.read(chat.q.applications.list_applications, user_id)
    return [application_out(a) for a in rows]


async def get(chat: Chat, user_id: int, app_id: str) -> Application:
    aid = snowflake(app_id, "application")
    return application_out(await chat.store.read(chat.q.applications.owned, aid, user_id))


async def update(
    chat: Chat, user_id: int, app_id: str, data: commands.UpdateApplication
) -> Application:
    aid = snowflake(app_id, "application")
    name = None if isinstance(data.name, UnsetType) else checked_name(data.name)
    public = None if isinstance(data.public, UnsetType) else data.public
    app = await chat.store.write(
        chat.q.applications.update_application, aid, user_id, now_ms(), name=name, public=public
    )
    return application_out(app)


async def reset_token(
    chat: Chat, accounts: Accounts, user_id: int, app_id: str
) -> ApplicationWithToken:
    """A new bot token (shown this once): the old one is refused from now on and the bot's
    gateway sessions close with 4004."""
    aid = snowflake(app_id, "application")
    token = crypto.new_refresh_token()
    app, _ = await chat.store.write(
        chat.q.applications.reset_token,
        aid,
        user_id,
        crypto.hash_token(token),
        chat.store.ids.next(),
    )
    accounts.set_bot_token(crypto.hash_token(token), app.bot_id, app.token_id)
    return _with_token(app, token)


async def delete(chat: Chat, accounts: Accounts, user_id: int, app_id: str) -> None:
    """Delete an application: its bot leaves every server (MEMBER_REMOVE, ROLE_DELETE of its
    managed role), its token is refused and its gateway sessions close (4004)."""
    aid = snowflake(app_id, "application")
    removed = await chat.store.write(chat.q.applications.delete_application, aid, user_id, now_ms())
    bot_id = removed.application.bot_id
    accounts.drop_bot(bot_id)
    chat.bots.discard(bot_id)
    for member in removed.memberships:
        announce_departure(chat, member.server_id, member)


async def add_bot(
    chat: Chat, user_id: int, server_id: str, data: commands.AddBot, reason: str | None
) -> BotAdded:
    """Add an application's bot to a server with a managed role holding the chosen
    permissions (never more than the caller has). Raises what
    relay.storage.applications.add_bot raises."""
    sid = snowflake(server_id, "server")
    app_id = snowflake(data.application_id, "application")
    permissions = mask_field(data.permissions, "permissions")
    ids = chat.store.ids
    added = await chat.store.write(
        chat.q.applications.add_bot,
        sid,
        user_id,
        app_id,
        ids.next(),
        permissions,
        now_ms(),
        max_joined=chat.settings.max_servers_joined,
        max_roles=chat.settings.max_roles_per_server,
        reason=reason,
    )
    member = added.joined.member
    chat.fanout.announce(PermissionsChanged(sid))
    role_event = RoleEvent(server_id=str(sid), role=role_out(added.role))
    chat.fanout.to_server(sid, events.RoleCreate(d=role_event))
    announce_join(chat, added.joined, member.user.id)
    chat.fanout.to_server(sid, events.MemberUpdateEvent(d=member_update_out(member)))
    return BotAdded(member=member_out(member), role=role_out(added.role))
