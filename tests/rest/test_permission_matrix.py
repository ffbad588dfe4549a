"""Every route against the permission it needs, through the real server.

For each route, a fresh server where @everyone has no permission at all, and two members:
`allowed` holds a role with VIEW_CHANNEL and exactly what the route needs; `denied` holds a role
with every permission (but ADMINISTRATOR) except the one under test. `denied` must be refused
with 403 naming that permission (404 when it is VIEW_CHANNEL: what you cannot see does not
exist), and `allowed` must succeed. So each row proves both that the permission is enough and
that nothing else stands in for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import trio

from relay.permissions import ALL, P
from tests.rest.conftest import add_role, gather, give, join, new_server, post, set_everyone

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tests.rest.conftest import Person

THUMBS = quote("👍", safe="")


@dataclass
class World:
    owner: Person
    allowed: Person
    denied: Person
    target: Person  # a member with no role, for member actions
    server: str
    text: str
    target_role: str  # below everyone's roles
    invite: str  # made by the owner
    banned: str  # a user the owner banned
    own: dict[str, str]  # person id -> a message they wrote in `text`

    def mine(self, who: Person) -> str:
        return self.own[who.id]

    @property
    def owners(self) -> str:
        return self.own[self.owner.id]


Request = tuple[str, str, Any]


@dataclass(frozen=True)
class Case:
    name: str
    missing: P  # what `denied` lacks
    route: Callable[[World, Person], Request]
    need: int = 0  # what `allowed` holds besides VIEW_CHANNEL (default: `missing`)


def soon_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))


def s(w: World) -> str:
    return f"/servers/{w.server}"


def c(w: World) -> str:
    return f"/channels/{w.text}"


CASES = [
    # servers and invites
    Case("update server", P.MANAGE_SERVER, lambda w, a: ("PATCH", s(w), {"name": "x"})),
    Case("list invites", P.MANAGE_SERVER, lambda w, a: ("GET", f"{s(w)}/invites", None)),
    Case("delete invite", P.MANAGE_SERVER, lambda w, a: ("DELETE", f"/invites/{w.invite}", None)),
    Case("create invite", P.CREATE_INVITE, lambda w, a: ("POST", f"{s(w)}/invites", {})),
    Case("audit log", P.VIEW_AUDIT_LOG, lambda w, a: ("GET", f"{s(w)}/audit-log", None)),
    # channels and overwrites
    Case(
        "create channel",
        P.MANAGE_CHANNELS,
        lambda w, a: ("POST", f"{s(w)}/channels", {"name": "new", "type": "text"}),
    ),
    Case("update channel", P.MANAGE_CHANNELS, lambda w, a: ("PATCH", c(w), {"topic": "t"})),
    Case(
        "set slowmode",
        P.MANAGE_CHANNELS,
        lambda w, a: ("PATCH", c(w), {"rate_limit_per_user": 5}),
    ),
    Case("delete channel", P.MANAGE_CHANNELS, lambda w, a: ("DELETE", c(w), None)),
    Case(
        "put overwrite",
        P.MANAGE_ROLES,
        lambda w, a: (
            "PUT",
            f"{c(w)}/permissions/{w.target_role}",
            {"type": "role", "deny": str(int(P.VIEW_CHANNEL))},
        ),
    ),
    Case(
        "delete overwrite",
        P.MANAGE_ROLES,
        lambda w, a: ("DELETE", f"{c(w)}/permissions/{w.target_role}", None),
    ),
    # roles
    Case("create role", P.MANAGE_ROLES, lambda w, a: ("POST", f"{s(w)}/roles", {"name": "r"})),
    Case(
        "update role",
        P.MANAGE_ROLES,
        lambda w, a: ("PATCH", f"{s(w)}/roles/{w.target_role}", {"name": "renamed"}),
    ),
    Case(
        "reorder roles",
        P.MANAGE_ROLES,
        lambda w, a: ("PATCH", f"{s(w)}/roles", [{"id": w.target_role, "position": 2}]),
    ),
    Case(
        "delete role",
        P.MANAGE_ROLES,
        lambda w, a: ("DELETE", f"{s(w)}/roles/{w.target_role}", None),
    ),
    Case(
        "give a role",
        P.MANAGE_ROLES,
        lambda w, a: ("PUT", f"{s(w)}/members/{w.target.id}/roles/{w.target_role}", None),
    ),
    Case(
        "take a role",
        P.MANAGE_ROLES,
        lambda w, a: ("DELETE", f"{s(w)}/members/{w.target.id}/roles/{w.target_role}", None),
    ),
    # members and moderation
    Case(
        "nickname another",
        P.MANAGE_NICKNAMES,
        lambda w, a: ("PATCH", f"{s(w)}/members/{w.target.id}", {"nickname": "n"}),
    ),
    Case(
        "own nickname",
        P.CHANGE_NICKNAME,
        lambda w, a: ("PATCH", f"{s(w)}/members/@me", {"nickname": "me"}),
    ),
    Case(
        "time out",
        P.MODERATE_MEMBERS,
        lambda w, a: (
            "PATCH",
            f"{s(w)}/members/{w.target.id}",
            {"communication_disabled_until": soon_iso()},
        ),
    ),
    Case("kick", P.KICK_MEMBERS, lambda w, a: ("DELETE", f"{s(w)}/members/{w.target.id}", None)),
    Case("ban", P.BAN_MEMBERS, lambda w, a: ("PUT", f"{s(w)}/bans/{w.target.id}", {})),
    Case("list bans", P.BAN_MEMBERS, lambda w, a: ("GET", f"{s(w)}/bans", None)),
    Case("get a ban", P.BAN_MEMBERS, lambda w, a: ("GET", f"{s(w)}/bans/{w.banned}", None)),
    Case("unban", P.BAN_MEMBERS, lambda w, a: ("DELETE", f"{s(w)}/bans/{w.banned}", None)),
    # messages
    Case("see a channel", P.VIEW_CHANNEL, lambda w, a: ("GET", c(w), None)),
    Case("ack", P.VIEW_CHANNEL, lambda w, a: ("POST", f"{c(w)}/messages/{w.owners}/ack", None)),
    Case(
        "remove own reaction",
        P.VIEW_CHANNEL,
        lambda w, a: ("DELETE", f"{c(w)}/messages/{w.owners}/reactions/{THUMBS}/@me", None),
    ),
    Case("post", P.SEND_MESSAGES, lambda w, a: ("POST", f"{c(w)}/messages", {"content": "hi"})),
    Case("typing", P.SEND_MESSAGES, lambda w, a: ("POST", f"{c(w)}/typing", None)),
    Case(
        "edit own message",
        P.SEND_MESSAGES,
        lambda w, a: ("PATCH", f"{c(w)}/messages/{w.mine(a)}", {"content": "edited"}),
    ),
    Case("history", P.READ_MESSAGE_HISTORY, lambda w, a: ("GET", f"{c(w)}/messages", None)),
    Case(
        "one message",
        P.READ_MESSAGE_HISTORY,
        lambda w, a: ("GET", f"{c(w)}/messages/{w.owners}", None),
    ),
    Case(
        "who reacted",
        P.READ_MESSAGE_HISTORY,
        lambda w, a: ("GET", f"{c(w)}/messages/{w.owners}/reactions/{THUMBS}", None),
    ),
    Case("list pins", P.READ_MESSAGE_HISTORY, lambda w, a: ("GET", f"{c(w)}/pins", None)),
    Case(
        "react",
        P.ADD_REACTIONS,
        lambda w, a: ("PUT", f"{c(w)}/messages/{w.owners}/reactions/{THUMBS}/@me", None),
        need=P.ADD_REACTIONS | P.READ_MESSAGE_HISTORY,
    ),
    Case(
        "delete another's message",
        P.MANAGE_MESSAGES,
        lambda w, a: ("DELETE", f"{c(w)}/messages/{w.owners}", None),
    ),
    Case(
        "bulk delete",
        P.MANAGE_MESSAGES,
        lambda w, a: (
            "POST",
            f"{c(w)}/messages/bulk-delete",
            {"messages": [w.owners, w.own[w.target.id]]},
        ),
    ),
    Case("pin", P.MANAGE_MESSAGES, lambda w, a: ("PUT", f"{c(w)}/pins/{w.owners}", None)),
    Case("unpin", P.MANAGE_MESSAGES, lambda w, a: ("DELETE", f"{c(w)}/pins/{w.owners}", None)),
]


async def make_world(make: Callable[[str], Awaitable[Person]], case: Case) -> World:
    owner, allowed, denied, target, banned = await gather(
        *(partial(make, n) for n in ("owner", "allowed", "denied", "target", "banned"))
    )
    server, text = await new_server(owner)
    await join(owner, server, allowed, denied, target, banned)
    authors = (owner, allowed, denied, target)
    own = dict(
        zip(
            [p.id for p in authors],
            await gather(*(partial(post, p, text) for p in authors)),
            strict=True,
        )
    )
    await owner.call("PUT", f"/channels/{text}/messages/{own[owner.id]}/reactions/{THUMBS}/@me")
    need = case.need or case.missing
    everything_else = ALL & ~case.missing & ~P.ADMINISTRATOR
    target_role, allowed_role, denied_role = await gather(
        partial(add_role, owner, server, 0, 1),
        partial(add_role, owner, server, P.VIEW_CHANNEL | need, 5),
        partial(add_role, owner, server, everything_else, 6),
    )
    _, _, _, _, invite = await gather(
        partial(give, owner, server, allowed, allowed_role),
        partial(give, owner, server, denied, denied_role),
        partial(set_everyone, owner, server, 0),
        partial(owner.call, "PUT", f"/servers/{server}/bans/{banned.id}", {}),
        partial(owner.call, "POST", f"/servers/{server}/invites"),
    )
    return World(
        owner, allowed, denied, target, server, text, target_role, invite["code"], banned.id, own
    )


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_route_needs_its_permission(
    people: Callable[[str], Awaitable[Person]], case: Case
) -> None:
    with trio.fail_after(20):
        world = await make_world(people, case)
        method, path, body = case.route(world, world.denied)
        refused = await world.denied.error(method, path, body)
        name = P(case.missing).name
        if case.missing == P.VIEW_CHANNEL:
            assert refused[0] == 404, refused
        else:
            assert refused == (403, "missing_permission", name), refused

        method, path, body = case.route(world, world.allowed)
        status, answer = await world.allowed.status(method, path, body)
        assert status < 300, (status, answer)


def test_every_permission_a_route_needs_is_covered() -> None:
    # The server-wide permissions that gate REST routes; voice ones arrive with voice.
    covered = {case.missing for case in CASES}
    rest = {
        P.VIEW_CHANNEL,
        P.SEND_MESSAGES,
        P.READ_MESSAGE_HISTORY,
        P.ADD_REACTIONS,
        P.MANAGE_MESSAGES,
        P.MANAGE_CHANNELS,
        P.MANAGE_ROLES,
        P.MANAGE_SERVER,
        P.CREATE_INVITE,
        P.MANAGE_NICKNAMES,
        P.CHANGE_NICKNAME,
        P.KICK_MEMBERS,
        P.BAN_MEMBERS,
        P.MODERATE_MEMBERS,
        P.VIEW_AUDIT_LOG,
    }
    assert rest <= covered


async def test_member_routes_need_membership_only(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, member, outsider = [await people(n) for n in ("owner", "member", "outsider")]
    server, _ = await new_server(owner)
    await join(owner, server, member)
    await set_everyone(owner, server, 0)  # even without any permission
    for path in ("", "/roles", "/members", "/channels"):
        assert (await member.status("GET", f"/servers/{server}{path}"))[0] == 200, path
        assert (await outsider.error("GET", f"/servers/{server}{path}"))[:2] == (
            404,
            "unknown_server",
        )
    assert await member.call("GET", f"/servers/{server}/channels") == []  # sees no channel


async def test_owner_only_routes_refuse_even_administrators(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, admin = await people("owner"), await people("admin")
    server, _ = await new_server(owner)
    await join(owner, server, admin)
    await give(owner, server, admin, await add_role(owner, server, P.ADMINISTRATOR, 5))
    body = {"owner_id": admin.id}
    assert (await admin.error("PUT", f"/servers/{server}/owner", body))[:2] == (403, "not_owner")
    assert (await admin.error("DELETE", f"/servers/{server}"))[:2] == (403, "not_owner")
    # ...but everything else is theirs.
    assert (await admin.status("PATCH", f"/servers/{server}", {"name": "Admin's"}))[0] == 200
