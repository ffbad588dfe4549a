"""Queries for invites: creating, listing, previewing, using (which joins the server, via
relay.storage.members) and deleting them, and pruning the ones nobody can use again.

Like every storage module, plain sync functions, `db` first, that check what the acting user may
do in the same transaction as the change (see relay.storage.servers): using an invite checks and
spends a use in one write.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import msgspec

from relay.errors import Conflict, Gone, NotFound, Unprocessable
from relay.permissions import P
from relay.storage import audit
from relay.storage.access import require_server, server_access
from relay.storage.members import Joined, banned, join
from relay.storage.servers import is_banned, is_member

if TYPE_CHECKING:
    from sqlite_utils import Database


class InviteRow(msgspec.Struct, frozen=True):
    code: str
    server_id: int
    inviter_id: int
    max_uses: int | None  # None: unlimited
    uses: int
    expires_at: int | None  # None: never
    created_at: int


class InvitePreview(msgspec.Struct, frozen=True):
    invite: InviteRow
    server_name: str
    member_count: int


def _unknown_invite() -> NotFound:
    return NotFound("unknown invite", code="unknown_invite")


def create_invite(
    db: Database,
    code: str,
    server_id: int,
    inviter_id: int,
    max_uses: int | None,
    expires_at: int | None,
    now_ms: int,
    reason: str | None = None,
    *,
    max_invites: int = 1000,
) -> InviteRow:
    """Raises NotFound("unknown_server"), Forbidden("missing_permission"),
    Unprocessable("too_many_invites": the server has `max_invites` usable ones, the setting
    max_invites_per_server; spent ones are pruned by `prune_invites`) or
    Conflict("invite_code_taken") (retry another code)."""
    require_server(db, server_id, inviter_id, P.CREATE_INVITE)
    usable = db.execute(
        "SELECT count(*) FROM invites WHERE server_id = ?"
        " AND (expires_at IS NULL OR expires_at > ?) AND (max_uses IS NULL OR uses < max_uses)",
        (server_id, now_ms),
    ).fetchone()[0]
    if usable >= max_invites:
        raise Unprocessable(
            f"a server has at most {max_invites} usable invites; delete some first",
            code="too_many_invites",
        )
    try:
        db.execute(
            "INSERT INTO invites (code, server_id, inviter_id, max_uses, expires_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (code, server_id, inviter_id, max_uses, expires_at, now_ms),
        )
    except sqlite3.IntegrityError:
        raise Conflict("that invite code is taken", code="invite_code_taken") from None
    invite = InviteRow(code, server_id, inviter_id, max_uses, 0, expires_at, now_ms)
    values = {"code": code, "max_uses": max_uses, "expires_at": expires_at}
    audit.record(db, server_id, inviter_id, "invite_create", None, audit.created(values), reason)
    return invite


def prune_invites(db: Database, now_ms: int) -> int:
    """Delete invites that expired or were used up: nobody can use them again."""
    cursor = db.execute(
        "DELETE FROM invites WHERE expires_at <= ? OR (max_uses IS NOT NULL AND uses >= max_uses)",
        (now_ms,),
    )
    return int(cursor.rowcount)


def get_invite(db: Database, code: str) -> InviteRow | None:
    row = db.execute(
        "SELECT code, server_id, inviter_id, max_uses, uses, expires_at, created_at"
        " FROM invites WHERE code = ?",
        (code,),
    ).fetchone()
    return InviteRow(*row) if row is not None else None


def invites_of(db: Database, server_id: int, user_id: int) -> list[InviteRow]:
    """A server's invites, newest first (MANAGE_SERVER)."""
    require_server(db, server_id, user_id, P.MANAGE_SERVER)
    rows = db.execute(
        "SELECT code, server_id, inviter_id, max_uses, uses, expires_at, created_at"
        " FROM invites WHERE server_id = ? ORDER BY created_at DESC, code",
        (server_id,),
    ).fetchall()
    return [InviteRow(*r) for r in rows]


def _usable_invite(db: Database, code: str, now_ms: int) -> InviteRow:
    invite = get_invite(db, code)
    if invite is None:
        raise _unknown_invite()
    if invite.expires_at is not None and invite.expires_at <= now_ms:
        raise Gone("this invite has expired", code="invite_expired")
    if invite.max_uses is not None and invite.uses >= invite.max_uses:
        raise Gone("this invite has been used up", code="invite_exhausted")
    return invite


def invite_preview(db: Database, code: str, now_ms: int) -> InvitePreview:
    """Raises NotFound("unknown_invite") or Gone("invite_expired" | "invite_exhausted")."""
    invite = _usable_invite(db, code, now_ms)
    row = db.execute(
        "SELECT s.name, (SELECT count(*) FROM members m WHERE m.server_id = s.id)"
        " FROM servers s WHERE s.id = ?",
        (invite.server_id,),
    ).fetchone()
    return InvitePreview(invite, row[0], row[1])


def use_invite(
    db: Database, code: str, user_id: int, now_ms: int, *, max_joined: int = 200
) -> Joined:
    """Join the invite's server, spending one use. The check and the increment happen in this
    one write, so two joins on an invite with one use left cannot both pass.

    A user who is already a member gets the server back and spends nothing (even if the invite
    has expired or is used up since). Raises NotFound("unknown_invite"),
    Gone("invite_expired" | "invite_exhausted"), Forbidden("banned") or
    Unprocessable("too_many_servers_joined": see `members.join`).
    """
    invite = get_invite(db, code)
    if invite is None:
        raise _unknown_invite()
    if not is_member(db, invite.server_id, user_id):
        _usable_invite(db, code, now_ms)
        if is_banned(db, invite.server_id, user_id):
            raise banned()
        db.execute("UPDATE invites SET uses = uses + 1 WHERE code = ?", (code,))
    return join(db, invite.server_id, user_id, now_ms, max_joined=max_joined)


def delete_invite(db: Database, code: str, user_id: int, reason: str | None = None) -> InviteRow:
    """The inviter or a member with MANAGE_SERVER may delete an invite; for non-members it does
    not exist. Raises NotFound("unknown_invite") or Forbidden("missing_permission")."""
    invite = get_invite(db, code)
    if invite is None:
        raise _unknown_invite()
    access = server_access(db, invite.server_id, user_id)
    if access is None:
        raise _unknown_invite()
    if invite.inviter_id != user_id:
        access.require(P.MANAGE_SERVER)
    db.execute("DELETE FROM invites WHERE code = ?", (code,))
    values = {"code": code, "max_uses": invite.max_uses, "uses": invite.uses}
    audit.record(
        db, invite.server_id, user_id, "invite_delete", None, audit.removed(values), reason
    )
    return invite
