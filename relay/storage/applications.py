"""Queries for applications (bot accounts) and for adding a bot to a server.

An application belongs to the person who made it and has one bot user (`users.bot = 1`, no
password, no keys: it can never log in). The bot authenticates with its token, of which only
the SHA-256 is stored (`token_hash`); `token_id` is replaced with every new token and stands
for the bot's login, as a session id does for a person's.

A bot joins a server only when a member with MANAGE_SERVER adds it, with a managed role
(`roles.managed_by`) holding the permissions chosen, never more than the adder has and placed
below the adder's highest role. The role goes with the membership (a trigger on `members`).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import msgspec

from relay.errors import Conflict, NotFound, Unprocessable
from relay.permissions import P, Role
from relay.storage import audit
from relay.storage.access import require_server
from relay.storage.members import Joined, MemberRow, get_member, join
from relay.storage.roles import RoleRow, require_grantable
from relay.storage.servers import server_state

if TYPE_CHECKING:
    from sqlite_utils import Database

MANAGED_ROLE_POSITION = 1  # just above @everyone


class ApplicationRow(msgspec.Struct, frozen=True):
    id: int
    owner_id: int
    bot_id: int
    name: str
    public: bool
    token_id: int
    created_at: int
    bot_username: str


class BotToken(msgspec.Struct, frozen=True):
    """What authenticating a bot token needs: its hash, whose it is, and its login id."""

    token_hash: bytes
    bot_id: int
    token_id: int


class BotAdded(msgspec.Struct, frozen=True):
    joined: Joined
    role: RoleRow


class BotRemoved(msgspec.Struct, frozen=True):
    """A deleted application: its row, and the bot's memberships that ended."""

    application: ApplicationRow
    memberships: list[MemberRow]


def unknown_application() -> NotFound:
    return NotFound("unknown application", code="unknown_application")


_SELECT = (
    "SELECT a.id, a.owner_id, a.bot_id, a.name, a.public, a.token_id, a.created_at, u.username"
    " FROM applications a JOIN users u ON u.id = a.bot_id"
)


def _rows(db: Database, where: str, params: tuple[object, ...]) -> list[ApplicationRow]:
    rows = db.execute(f"{_SELECT} {where}", params).fetchall()
    return [ApplicationRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7]) for r in rows]


def get_application(db: Database, app_id: int) -> ApplicationRow | None:
    found = _rows(db, "WHERE a.id = ?", (app_id,))
    return found[0] if found else None


def owned(db: Database, app_id: int, owner_id: int) -> ApplicationRow:
    """The caller's application; someone else's is 404 as a missing one is."""
    app = get_application(db, app_id)
    if app is None or app.owner_id != owner_id:
        raise unknown_application()
    return app


def list_applications(db: Database, owner_id: int) -> list[ApplicationRow]:
    return _rows(db, "WHERE a.owner_id = ? ORDER BY a.id", (owner_id,))


def create_application(
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
) -> ApplicationRow:
    """A new application and its bot user, named by the first free one of `usernames`.
    Raises Unprocessable("too_many_applications") or Conflict("username_taken")."""
    count = db.execute(
        "SELECT count(*) FROM applications WHERE owner_id = ?", (owner_id,)
    ).fetchone()[0]
    if count >= max_applications:
        raise Unprocessable(
            f"a user may own at most {max_applications} applications",
            code="too_many_applications",
        )
    for username in usernames:
        try:
            db.execute(
                "INSERT INTO users (id, username, display_name, password_hash, created_at,"
                " updated_at, bot) VALUES (?, ?, ?, NULL, ?, ?, 1)",
                (bot_id, username, name, now_ms, now_ms),
            )
        except sqlite3.IntegrityError:
            continue
        db.execute(
            "INSERT INTO applications (id, owner_id, bot_id, name, public, token_hash, token_id,"
            " created_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
            (app_id, owner_id, bot_id, name, token_hash, token_id, now_ms),
        )
        return ApplicationRow(app_id, owner_id, bot_id, name, False, token_id, now_ms, username)
    raise Conflict("no free username was found for the bot: retry", code="username_taken")


def update_application(
    db: Database,
    app_id: int,
    owner_id: int,
    now_ms: int,
    *,
    name: str | None = None,
    public: bool | None = None,
) -> ApplicationRow:
    """Rename (the bot's display name follows) or make public/private. Raises NotFound."""
    app = owned(db, app_id, owner_id)
    if name is not None:
        db.execute("UPDATE applications SET name = ? WHERE id = ?", (name, app_id))
        db.execute(
            "UPDATE users SET display_name = ?, updated_at = ? WHERE id = ?",
            (name, now_ms, app.bot_id),
        )
    if public is not None:
        db.execute("UPDATE applications SET public = ? WHERE id = ?", (int(public), app_id))
    updated = get_application(db, app_id)
    assert updated is not None
    return updated


def reset_token(
    db: Database, app_id: int, owner_id: int, token_hash: bytes, token_id: int
) -> tuple[ApplicationRow, int]:
    """Replace the bot's token: the application, and the old token's login id (to revoke)."""
    app = owned(db, app_id, owner_id)
    db.execute(
        "UPDATE applications SET token_hash = ?, token_id = ? WHERE id = ?",
        (token_hash, token_id, app_id),
    )
    return msgspec.structs.replace(app, token_id=token_id), app.token_id


def delete_application(db: Database, app_id: int, owner_id: int, now_ms: int) -> BotRemoved:
    """Delete an application: its bot leaves every server it does not own (its managed roles go
    with it) and is disabled. The bot user stays, as the author of what it wrote; servers it
    made keep it as their (disabled) owner, as a disabled person's would."""
    app = owned(db, app_id, owner_id)
    servers = [
        r[0]
        for r in db.execute(
            "SELECT m.server_id FROM members m JOIN servers s ON s.id = m.server_id"
            " WHERE m.user_id = ? AND s.owner_id != m.user_id",
            (app.bot_id,),
        )
    ]
    memberships = [m for s in servers if (m := get_member(db, s, app.bot_id)) is not None]
    for server_id in servers:
        db.execute(
            "DELETE FROM members WHERE server_id = ? AND user_id = ?", (server_id, app.bot_id)
        )
    db.execute("DELETE FROM applications WHERE id = ?", (app_id,))
    db.execute(
        "UPDATE users SET disabled_at = ?, updated_at = ? WHERE id = ?",
        (now_ms, now_ms, app.bot_id),
    )
    return BotRemoved(app, memberships)


def bot_tokens(db: Database) -> list[BotToken]:
    """Every live bot token (by hash), for the account service's in-memory table: not those
    of bots an operator disabled (`relay user disable`; see `disabled_bots`)."""
    rows = db.execute(
        "SELECT a.token_hash, a.bot_id, a.token_id FROM applications a"
        " JOIN users u ON u.id = a.bot_id WHERE u.disabled_at IS NULL"
    ).fetchall()
    return [BotToken(r[0], r[1], r[2]) for r in rows]


def disabled_bots(db: Database) -> list[int]:
    """Bots whose user an operator disabled while their application lives (the account
    service polls this, as it polls revocations: one pass over the applications)."""
    rows = db.execute(
        "SELECT a.bot_id FROM applications a JOIN users u ON u.id = a.bot_id"
        " WHERE u.disabled_at IS NOT NULL"
    ).fetchall()
    return [r[0] for r in rows]


def add_bot(
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
    reason: str | None = None,
) -> BotAdded:
    """Add an application's bot to a server with a managed role holding `permissions`.

    The caller needs MANAGE_SERVER, may only grant what they have, and must be above the
    role (MANAGED_ROLE_POSITION); a private application may only be added by its owner.
    Raises NotFound("unknown_server" | "unknown_application"), Forbidden("missing_permission"
    | "role_hierarchy" | "banned"), Conflict("bot_already_member"),
    Unprocessable("too_many_roles" | "too_many_servers_joined")."""
    actor = require_server(db, server_id, user_id, P.MANAGE_SERVER)
    app = get_application(db, app_id)
    if app is None or not (app.public or app.owner_id == user_id):
        raise unknown_application()
    require_grantable(actor.permissions(), 0, permissions)
    actor.require_above_role(Role(role_id, permissions, MANAGED_ROLE_POSITION))
    if get_member(db, server_id, app.bot_id) is not None:
        raise Conflict("the bot is a member already", code="bot_already_member")
    count = db.execute("SELECT count(*) FROM roles WHERE server_id = ?", (server_id,)).fetchone()
    if count[0] >= max_roles:
        raise Unprocessable(f"a server has at most {max_roles} roles", code="too_many_roles")
    done = join(db, server_id, app.bot_id, now_ms, max_joined=max_joined)
    name = app.name[:100]
    db.execute(
        "INSERT INTO roles (id, server_id, name, permissions, color, position, hoist,"
        " mentionable, created_at, managed_by) VALUES (?, ?, ?, ?, 0, ?, 0, 0, ?, ?)",
        (role_id, server_id, name, permissions, MANAGED_ROLE_POSITION, now_ms, app.bot_id),
    )
    db.execute(
        "INSERT INTO member_roles (server_id, user_id, role_id) VALUES (?, ?, ?)",
        (server_id, app.bot_id, role_id),
    )
    role = RoleRow(
        role_id, server_id, name, permissions, 0, MANAGED_ROLE_POSITION, False, False, now_ms, True
    )
    member = get_member(db, server_id, app.bot_id)
    assert member is not None
    changes = [
        audit.Change("role_id", None, role_id),
        audit.Change("permissions", None, permissions),
    ]
    audit.record(db, server_id, user_id, "bot_add", app.bot_id, changes, reason)
    # Read again: the server as the bot sees it now includes its role.
    state = server_state(db, server_id, app.bot_id)
    return BotAdded(msgspec.structs.replace(done, state=state, member=member), role)
