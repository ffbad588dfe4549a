"""Who may do what in a server: load what permissions depend on and ask `relay.permissions`.

Every check of the REST API goes through here (`server_access`, `require_server`, and
`audience.visible_channel` for channels), inside the same transaction or read as the work it
guards. A caller who is not a member, or cannot see a channel, gets NotFound (they cannot tell
it exists); a member who lacks a permission gets Forbidden naming it:
`{"code": "missing_permission", "fields": {"permission": "MANAGE_CHANNELS"}}`, or `timed_out`
when only their timeout stands in the way.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import msgspec

from relay import permissions as perms
from relay.errors import Forbidden, NotFound
from relay.permissions import ChannelNode, Member, Overwrite, Role, ServerPerms
from relay.storage.sqlite.writecache import cached

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlite_utils import Database


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def unknown_server() -> NotFound:
    return NotFound("unknown server", code="unknown_server")


def missing_permission(permission: int) -> Forbidden:
    name = perms.name_of(permission)
    return Forbidden(
        f"missing permission {name}", code="missing_permission", fields={"permission": name}
    )


def hierarchy_error(message: str) -> Forbidden:
    return Forbidden(message, code="role_hierarchy")


class Access(msgspec.Struct, frozen=True):
    """One member's standing in one server, and the checks that follow from it."""

    server: ServerPerms
    member: Member
    timed_out_until: int | None

    @property
    def user_id(self) -> int:
        return self.member.user_id

    @property
    def is_owner(self) -> bool:
        return self.member.user_id == self.server.owner_id

    def permissions(self, channel_id: int | None = None) -> int:
        if channel_id is not None and channel_id not in self.server.channels:
            # Without its overwrites the answer would be the server-wide one: never guess.
            raise LookupError(f"channel {channel_id} was not loaded with this access")
        return perms.compute(self.server, self.member, channel_id)

    def top(self) -> float:
        return perms.top_position(self.server, self.member)

    def require(self, need: int, channel_id: int | None = None) -> int:
        """The member's permissions, if they include every bit of `need`; else Forbidden."""
        have = self.permissions(channel_id)
        lacking = perms.missing(have, need)
        if lacking:
            raise self._refusal(lacking, channel_id)
        return have

    def _refusal(self, lacking: int, channel_id: int | None) -> Forbidden:
        """missing_permission, or timed_out if the timeout alone takes the permission away."""
        if self.member.timed_out:
            free = msgspec.structs.replace(self.member, timed_out=False)
            if perms.compute(self.server, free, channel_id) & lacking:
                name = perms.name_of(lacking)
                return Forbidden(
                    f"you are timed out: {name} is suspended until the timeout ends",
                    code="timed_out",
                    fields={"permission": name},
                )
        return missing_permission(lacking)

    def require_above_role(self, role: Role) -> None:
        """Hierarchy: only roles strictly below one's highest role may be changed or given."""
        if role.position >= self.top():
            raise hierarchy_error("that role is at or above your highest role")

    def require_above(self, target: Access) -> None:
        """Hierarchy: only members strictly below one's highest role may be acted on (so not
        oneself), and never the owner by anyone else."""
        if self.is_owner and target.user_id == self.user_id:
            return  # the owner may change their own roles and nickname
        if target.is_owner:
            raise hierarchy_error("nobody can do this to the server owner")
        if target.top() >= self.top():
            raise hierarchy_error("that member's highest role is at or above yours")


# -- loading -----------------------------------------------------------------------------------


def _ids(values: Iterable[int]) -> str:
    return json.dumps(sorted(set(values)))


def roles_of_server(db: Database, server_id: int) -> dict[int, Role]:
    rows = db.execute(
        "SELECT id, permissions, position FROM roles WHERE server_id = ?", (server_id,)
    )
    return {r[0]: Role(r[0], r[1], r[2]) for r in rows}


def channel_nodes(
    db: Database, server_id: int, channel_ids: Iterable[int] | None
) -> dict[int, ChannelNode]:
    """Channels with their overwrites: all of the server's (`channel_ids` None), or the ones
    named and their categories."""
    if channel_ids is None:
        rows = db.execute(
            "SELECT id, parent_id, permissions_synced, type FROM channels WHERE server_id = ?",
            (server_id,),
        ).fetchall()
    else:
        # The named, their parents, and their parents' parents (a thread's text channel's
        # category).
        named = "SELECT value FROM json_each(?2)"
        up = f"SELECT parent_id FROM channels WHERE id IN ({named})"
        rows = db.execute(
            "SELECT id, parent_id, permissions_synced, type FROM channels WHERE server_id = ?1"
            f" AND (id IN ({named}) OR id IN ({up})"
            f"  OR id IN (SELECT parent_id FROM channels WHERE id IN ({up})))",
            (server_id, _ids(channel_ids)),
        ).fetchall()
    if not rows:
        return {}
    found: dict[int, list[Overwrite]] = {r[0]: [] for r in rows}
    for channel_id, target_id, kind, allow, deny in db.execute(
        "SELECT channel_id, target_id, type, allow, deny FROM overwrites"
        " WHERE channel_id IN (SELECT value FROM json_each(?)) ORDER BY channel_id, target_id",
        (_ids(found),),
    ):
        found[channel_id].append(Overwrite(target_id, kind, allow, deny))
    return {
        r[0]: ChannelNode(r[0], r[1], bool(r[2]), tuple(found[r[0]]), r[3] == "thread")
        for r in rows
    }


def server_perms(
    db: Database, server_id: int, channel_ids: Iterable[int] | None = ()
) -> ServerPerms | None:
    """What permissions in the server depend on (None: no such server). `channel_ids`: the
    channels to load (None: all of them)."""
    wanted = None if channel_ids is None else tuple(sorted(set(channel_ids)))
    return cached(db, ("server", server_id, wanted), lambda: _server_perms(db, server_id, wanted))


def _server_perms(
    db: Database, server_id: int, channel_ids: tuple[int, ...] | None
) -> ServerPerms | None:
    row = db.execute("SELECT owner_id FROM servers WHERE id = ?", (server_id,)).fetchone()
    if row is None:
        return None
    return ServerPerms(
        server_id,
        row[0],
        roles_of_server(db, server_id),
        channel_nodes(db, server_id, channel_ids),
    )


def member_roles(db: Database, server_id: int, user_id: int) -> frozenset[int]:
    rows = db.execute(
        "SELECT role_id FROM member_roles WHERE server_id = ? AND user_id = ?",
        (server_id, user_id),
    )
    return frozenset(r[0] for r in rows)


def member_state(
    db: Database, server_id: int, user_id: int, now: int | None = None
) -> tuple[Member, int | None] | None:
    """The member (roles, timeout) and when their timeout ends; None if not a member."""
    found = cached(db, ("member", server_id, user_id), lambda: _member_row(db, server_id, user_id))
    if found is None:
        return None
    until, role_ids = found
    current = now_ms() if now is None else now
    if until is not None and until <= current:
        until = None  # over: nobody needs to clear the column
    return Member(user_id, role_ids, until is not None), until


def _member_row(
    db: Database, server_id: int, user_id: int
) -> tuple[int | None, frozenset[int]] | None:
    row = db.execute(
        "SELECT communication_disabled_until FROM members WHERE server_id = ? AND user_id = ?",
        (server_id, user_id),
    ).fetchone()
    if row is None:
        return None
    return row[0], member_roles(db, server_id, user_id)


def server_access(
    db: Database,
    server_id: int,
    user_id: int,
    channel_ids: Iterable[int] | None = (),
    now: int | None = None,
) -> Access | None:
    """The user's standing in the server, or None if they are not a member (or it is gone)."""
    state = member_state(db, server_id, user_id, now)
    if state is None:
        return None
    server = server_perms(db, server_id, channel_ids)
    if server is None:
        return None
    return Access(server, state[0], state[1])


def require_server(
    db: Database,
    server_id: int,
    user_id: int,
    need: int = 0,
    channel_ids: Iterable[int] | None = (),
) -> Access:
    """The user's standing in a server they are a member of (else 404 unknown_server), if they
    have the permissions in `need` at the server level (else 403)."""
    access = server_access(db, server_id, user_id, channel_ids)
    if access is None:
        raise unknown_server()
    if need:
        access.require(need)
    return access


def visible_ids(access: Access, channel_ids: Iterable[int]) -> set[int]:
    return perms.visible_channels(access.server, access.member, channel_ids)


def accesses_of(db: Database, user_id: int, now: int | None = None) -> dict[int, Access]:
    """The user's standing in each of their servers, every channel loaded, in five queries
    however many servers and channels there are (for READY and read states)."""
    current = now_ms() if now is None else now
    mine = "JOIN members m ON m.server_id = {}.server_id AND m.user_id = ?"
    servers = db.execute(
        "SELECT s.id, s.owner_id, m.communication_disabled_until FROM servers s"
        " JOIN members m ON m.server_id = s.id AND m.user_id = ?",
        (user_id,),
    ).fetchall()
    roles: dict[int, dict[int, Role]] = {s[0]: {} for s in servers}
    for role_id, server_id, permissions, position in db.execute(
        f"SELECT r.id, r.server_id, r.permissions, r.position FROM roles r {mine.format('r')}",
        (user_id,),
    ):
        roles[server_id][role_id] = Role(role_id, permissions, position)
    held: dict[int, set[int]] = {}
    for server_id, role_id in db.execute(
        "SELECT server_id, role_id FROM member_roles WHERE user_id = ?", (user_id,)
    ):
        held.setdefault(server_id, set()).add(role_id)
    channel_rows = db.execute(
        f"SELECT c.id, c.server_id, c.parent_id, c.permissions_synced, c.type FROM channels c"
        f" {mine.format('c')}",
        (user_id,),
    ).fetchall()
    found: dict[int, list[Overwrite]] = {r[0]: [] for r in channel_rows}
    for channel_id, target_id, kind, allow, deny in db.execute(
        "SELECT o.channel_id, o.target_id, o.type, o.allow, o.deny FROM overwrites o"
        f" JOIN channels c ON c.id = o.channel_id {mine.format('c')}"
        " ORDER BY o.channel_id, o.target_id",
        (user_id,),
    ):
        found[channel_id].append(Overwrite(target_id, kind, allow, deny))
    nodes: dict[int, dict[int, ChannelNode]] = {s[0]: {} for s in servers}
    for channel_id, server_id, parent_id, synced, kind in channel_rows:
        overwrites = tuple(found[channel_id])
        nodes[server_id][channel_id] = ChannelNode(
            channel_id, parent_id, bool(synced), overwrites, kind == "thread"
        )
    accesses: dict[int, Access] = {}
    for server_id, owner_id, until in servers:
        timed_out = until is not None and until > current
        member = Member(user_id, frozenset(held.get(server_id, ())), timed_out)
        server = ServerPerms(server_id, owner_id, roles[server_id], nodes[server_id])
        accesses[server_id] = Access(server, member, until if timed_out else None)
    return accesses
