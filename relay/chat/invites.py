"""Invites: creating, listing, previewing, using (which joins the server) and deleting them.

An invite's code is 10 random URL-safe characters (60 bits). Using one checks it and spends a
use in the write that makes the user a member (relay.storage.invites.use_invite).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from relay.chat.args import snowflake
from relay.chat.members import JoinedServer, after_join
from relay.chat.objects import InvitePreview, InviteServer, invite_out, iso
from relay.errors import Conflict
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.chat.objects import Invite

INVITE_CODE_CHARS = 10
INVITE_CODE_TRIES = 3


def invite_code() -> str:
    """10 random URL-safe characters (60 bits)."""
    return secrets.token_urlsafe(8)[:INVITE_CODE_CHARS]


async def create(
    chat: Chat, user_id: int, server_id: str, data: commands.CreateInvite, reason: str | None
) -> Invite:
    """A new invite (CREATE_INVITE). Raises 422 too_many_invites past the setting
    max_invites_per_server, and 409 invite_code_taken if three random codes in a row were
    taken."""
    sid = snowflake(server_id, "server")
    now = now_ms()
    expires_at = now + data.max_age * 1000 if data.max_age else None
    for _ in range(INVITE_CODE_TRIES):  # 60 random bits: a clash is all but impossible
        try:
            invite = await chat.store.write(
                chat.q.invites.create_invite,
                invite_code(),
                sid,
                user_id,
                data.max_uses or None,
                expires_at,
                now,
                reason,
                max_invites=chat.settings.max_invites_per_server,
            )
        except Conflict:
            continue
        return invite_out(invite)
    raise Conflict("could not pick a free invite code; try again", code="invite_code_taken")


async def of_server(chat: Chat, user_id: int, server_id: str) -> list[Invite]:
    """The server's invites, newest first (MANAGE_SERVER)."""
    sid = snowflake(server_id, "server")
    return [invite_out(i) for i in await chat.store.read(chat.q.invites.invites_of, sid, user_id)]


async def preview(chat: Chat, user_id: int, code: str) -> InvitePreview:
    """What a usable invite leads to, without joining."""
    found = await chat.store.read(chat.q.invites.invite_preview, code, now_ms())
    invite = found.invite
    return InvitePreview(
        code=invite.code,
        server=InviteServer(id=str(invite.server_id), name=found.server_name),
        member_count=found.member_count,
        expires_at=None if invite.expires_at is None else iso(invite.expires_at),
    )


async def use(chat: Chat, user_id: int, code: str) -> JoinedServer:
    """Join the invite's server (`created` False: a member already, and no use was spent)."""
    done = await chat.store.write(
        chat.q.invites.use_invite,
        code,
        user_id,
        now_ms(),
        max_joined=chat.settings.max_servers_joined,
    )
    return after_join(chat, done, user_id)


async def delete(chat: Chat, user_id: int, code: str, reason: str | None) -> None:
    """Delete an invite (its inviter, or MANAGE_SERVER)."""
    await chat.store.write(chat.q.invites.delete_invite, code, user_id, reason)
