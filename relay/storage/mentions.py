"""Mentions beyond users: roles (`<@&role_id>`), `@everyone` and `@here`; the mention counts of
read states and the mentions inbox.

Stored beside a message in its transaction (relay.storage.messages calls `store`):
`message_role_mentions` (the roles mentioned), `message_everyone` (one row if the message
mentions @everyone, `here` = 1 for @here) and `message_here` (for @here, the members who were
online and could see the channel when it was posted: "who was pinged" is fixed then, as in
Discord). Direct mentions stay in `message_mentions`.

Who may: @everyone and @here need MENTION_EVERYONE in the channel, else they are plain text; a
role mention counts if the role is mentionable or the author has MENTION_EVERYONE. Checked here,
in the write's transaction, with the permissions the write computed.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import msgspec

from relay.ids import EPOCH_MS, SEQUENCE_BITS, WORKER_BITS
from relay.permissions import Member, P, compute
from relay.storage.access import accesses_of, server_perms
from relay.storage.roles import held_roles

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlite_utils import Database

NONE, EVERYONE, HERE = 0, 1, 2  # what a message's @everyone/@here asks for
MAX_ROLE_MENTIONS = 25  # roles stored per message
INBOX_NEEDS = int(P.VIEW_CHANNEL | P.READ_MESSAGE_HISTORY)
_ROLE = re.compile(r"<@&([0-9]{1,20})>")  # ASCII digits only, as for user mentions
_EVERYONE = re.compile(r"@(everyone|here)\b")


class Extra(msgspec.Struct, frozen=True):
    """A message's role and @everyone mentions as stored (what the message object shows)."""

    roles: list[int] = []  # ascending
    everyone: bool = False


def parse_roles(content: str) -> list[int]:
    """The role ids of `<@&id>` tokens, first occurrence first, without repeats."""
    seen: dict[int, None] = {}
    for match in _ROLE.finditer(content):
        text = match.group(1)
        if text == str(int(text)):  # canonical only, as parse_mentions
            seen.setdefault(int(text))
    return list(seen)


def parse_everyone(content: str) -> int:
    """EVERYONE if `@everyone` is in the text, else HERE if `@here` is, else NONE."""
    found = {m.group(1) for m in _EVERYONE.finditer(content)}
    return EVERYONE if "everyone" in found else HERE if "here" in found else NONE


def store(
    db: Database,
    message_id: int,
    channel_id: int,
    server_id: int | None,
    permissions: int,
    role_ids: Sequence[int],
    everyone: int,
    here_candidates: Iterable[int],
    *,
    new: bool = True,
) -> Extra:
    """Store (replace, unless `new`) a message's role and @everyone/@here mentions, keeping
    only what `permissions` (the author's in the channel) allow. In a DM there are none."""
    if not new:
        for table in ("message_role_mentions", "message_everyone"):
            db.execute(f"DELETE FROM {table} WHERE message_id = ?", (message_id,))
        if everyone != HERE:
            db.execute("DELETE FROM message_here WHERE message_id = ?", (message_id,))
    if server_id is None:
        return Extra()
    may_everyone = bool(permissions & P.MENTION_EVERYONE)
    roles: list[int] = []
    if role_ids:
        rows = db.execute(
            "SELECT id, mentionable FROM roles WHERE server_id = ? AND id != server_id"
            " AND id IN (SELECT value FROM json_each(?))",
            (server_id, json.dumps(list(role_ids)[:MAX_ROLE_MENTIONS])),
        ).fetchall()
        roles = sorted(role_id for role_id, mentionable in rows if mentionable or may_everyone)
        db.conn.executemany(
            "INSERT INTO message_role_mentions (message_id, role_id, channel_id) VALUES (?, ?, ?)",
            [(message_id, role_id, channel_id) for role_id in roles],
        )
    if everyone == NONE or not may_everyone:
        return Extra(roles, False)
    db.execute(
        "INSERT INTO message_everyone (message_id, channel_id, here) VALUES (?, ?, ?)",
        (message_id, channel_id, int(everyone == HERE)),
    )
    if everyone == HERE and new:
        pinged = _can_see(db, server_id, channel_id, list(here_candidates))
        db.conn.executemany(
            "INSERT INTO message_here (message_id, user_id, channel_id) VALUES (?, ?, ?)",
            [(message_id, user_id, channel_id) for user_id in pinged],
        )
    return Extra(roles, True)


def _can_see(db: Database, server_id: int, channel_id: int, candidates: list[int]) -> list[int]:
    """Those of `candidates` who are members and can see the channel."""
    if not candidates:
        return []
    members = [
        row[0]
        for row in db.execute(
            "SELECT user_id FROM members"
            " WHERE server_id = ? AND user_id IN (SELECT value FROM json_each(?))",
            (server_id, json.dumps(candidates)),
        )
    ]
    server = server_perms(db, server_id, [channel_id])
    if server is None:
        return []
    roles = held_roles(db, server_id, members)
    return [
        u
        for u in members
        if compute(server, Member(u, frozenset(roles.get(u, ()))), channel_id) & P.VIEW_CHANNEL
    ]


# Role and @everyone mentions of the messages whose ids are the JSON list ?: `extras`, or run
# together with other reads and decoded by `extras_of` (relay.storage.messages).
EXTRA_ROLES_SQL = (
    "SELECT message_id, role_id FROM message_role_mentions"
    " WHERE message_id IN (SELECT value FROM json_each(?)) ORDER BY message_id, role_id"
)
EXTRA_EVERYONE_SQL = (
    "SELECT message_id FROM message_everyone WHERE message_id IN (SELECT value FROM json_each(?))"
)


def extras(db: Database, ids: str) -> dict[int, Extra]:
    """Role and @everyone mentions of the messages whose ids are the JSON list `ids`."""
    return extras_of(db.execute(EXTRA_ROLES_SQL, (ids,)), db.execute(EXTRA_EVERYONE_SQL, (ids,)))


def extras_of(role_rows: Iterable[Any], everyone_rows: Iterable[Any]) -> dict[int, Extra]:
    """`extras` from the rows of EXTRA_ROLES_SQL and EXTRA_EVERYONE_SQL."""
    roles: dict[int, list[int]] = {}
    for message_id, role_id in role_rows:
        roles.setdefault(message_id, []).append(role_id)
    everyone = {row[0] for row in everyone_rows}
    return {m: Extra(roles.get(m, []), m in everyone) for m in set(roles) | everyone}


# The first message id a member's @everyone mentions count from: their join (a newcomer is not
# pinged by old announcements); 0 in a DM. `{server}` and `{user}`: SQL for their ids.
JOINED_SQL = (
    "coalesce((SELECT (j.joined_at - {epoch}) << {shift} FROM members j"
    " WHERE j.server_id = {server} AND j.user_id = {user}), 0)"
)
# The messages of channel `v.id` (of server `v.server_id`) after read position `read_id` that
# mention user ?1 (directly, by a role they hold, by @everyone since they joined, or by an
# @here that reached them), each counted once.
UNREAD_MENTIONS_SQL = (
    "(SELECT count(*) FROM ("
    "  SELECT message_id FROM message_mentions mm WHERE mm.user_id = ?1"
    "   AND mm.channel_id = v.id AND mm.message_id > {read_id}"
    "  UNION SELECT message_id FROM message_here mh WHERE mh.user_id = ?1"
    "   AND mh.channel_id = v.id AND mh.message_id > {read_id}"
    "  UNION SELECT rm.message_id FROM message_role_mentions rm"
    "   JOIN member_roles mr ON mr.role_id = rm.role_id AND mr.user_id = ?1"
    "   WHERE rm.channel_id = v.id AND rm.message_id > {read_id}"
    "  UNION SELECT message_id FROM message_everyone me"
    "   WHERE me.channel_id = v.id AND me.here = 0 AND me.message_id > {read_id}"
    "   AND me.message_id >= {joined}))"
)


def joined_sql(server: str, user: str) -> str:
    return JOINED_SQL.format(
        epoch=EPOCH_MS, shift=WORKER_BITS + SEQUENCE_BITS, server=server, user=user
    )


def unread_mentions_sql(read_id: str) -> str:
    """UNREAD_MENTIONS_SQL for a read position given as SQL."""
    return UNREAD_MENTIONS_SQL.format(read_id=read_id, joined=joined_sql("v.server_id", "?1"))


def readable_channels(db: Database, user_id: int, server_id: int | None = None) -> list[int]:
    """Channels whose messages the user may read now (VIEW_CHANNEL and READ_MESSAGE_HISTORY
    in their servers' text channels, or a DM of theirs); `server_id`: only that server's."""
    found: list[int] = []
    if server_id is None:
        found += [
            row[0]
            for row in db.execute(
                "SELECT channel_id FROM dm_recipients WHERE user_id = ?", (user_id,)
            )
        ]
    accesses = accesses_of(db, user_id)
    for sid, access in accesses.items():
        if server_id is not None and sid != server_id:
            continue
        for channel_id in access.server.channels:
            if access.permissions(channel_id) & INBOX_NEEDS == INBOX_NEEDS:
                found.append(channel_id)
    return found


def inbox(
    db: Database, user_id: int, before: int, limit: int, server_id: int | None = None
) -> list[int]:
    """Ids of messages (newest first, before `before`) that mention the user, directly, by a
    role they hold now, by @everyone or by an @here that reached them, from channels they can
    still read; not their own messages."""
    channels = readable_channels(db, user_id, server_id)
    if not channels:
        return []
    rows = db.execute(
        "WITH seen (id) AS (SELECT value FROM json_each(:channels)),"
        " hits (message_id) AS ("
        "  SELECT message_id FROM message_mentions WHERE user_id = :user AND message_id < :before"
        "   AND channel_id IN seen"
        "  UNION SELECT message_id FROM message_here WHERE user_id = :user"
        "   AND message_id < :before AND channel_id IN seen"
        "  UNION SELECT rm.message_id FROM message_role_mentions rm"
        "   JOIN member_roles mr ON mr.role_id = rm.role_id AND mr.user_id = :user"
        "   WHERE rm.message_id < :before AND rm.channel_id IN seen"
        "  UNION SELECT me.message_id FROM message_everyone me"
        "   JOIN channels c ON c.id = me.channel_id"
        "   WHERE me.here = 0 AND me.message_id < :before AND me.channel_id IN seen"
        f"   AND me.message_id >= {joined_sql('c.server_id', ':user')})"
        " SELECT h.message_id FROM hits h JOIN messages m ON m.id = h.message_id"
        " WHERE m.author_id != :user ORDER BY h.message_id DESC LIMIT :limit",
        {"channels": json.dumps(channels), "user": user_id, "before": before, "limit": limit},
    ).fetchall()
    return [row[0] for row in rows]
