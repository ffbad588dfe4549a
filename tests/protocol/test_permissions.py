"""The permission function: table-driven vectors that pin down the order of its steps, and
properties that hold for any roles and overwrites."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.permissions import (
    ALL,
    DEFAULT_EVERYONE,
    NONE,
    ChannelNode,
    Member,
    Overwrite,
    P,
    Permission,
    Role,
    ServerPerms,
    compute,
    missing,
    names,
    openapi_schema,
    top_position,
)

SERVER, OWNER, USER = 1, 100, 200
MOD, HELPER = 10, 11  # role ids: MOD at position 2, HELPER at position 1
CATEGORY, CHANNEL = 40, 50
VIEW, SEND, READ = int(P.VIEW_CHANNEL), int(P.SEND_MESSAGES), int(P.READ_MESSAGE_HISTORY)
TALK = VIEW | SEND | READ


def everyone(allow: int = 0, deny: int = 0) -> Overwrite:
    return Overwrite(SERVER, "role", allow, deny)


def role(role_id: int, allow: int = 0, deny: int = 0) -> Overwrite:
    return Overwrite(role_id, "role", allow, deny)


def member(allow: int = 0, deny: int = 0, user_id: int = USER) -> Overwrite:
    return Overwrite(user_id, "member", allow, deny)


def world(
    *,
    base: int = TALK,
    mod: int = 0,
    helper: int = 0,
    own: tuple[Overwrite, ...] = (),
    category: tuple[Overwrite, ...] = (),
    synced: bool = False,
) -> ServerPerms:
    return ServerPerms(
        SERVER,
        OWNER,
        {
            SERVER: Role(SERVER, base, 0),
            MOD: Role(MOD, mod, 2),
            HELPER: Role(HELPER, helper, 1),
        },
        {
            CATEGORY: ChannelNode(CATEGORY, None, False, category),
            CHANNEL: ChannelNode(CHANNEL, CATEGORY, synced, own),
        },
    )


# (name, world kwargs, member's roles, timed out, channel or None, expected mask)
VECTORS: list[tuple[str, dict[str, Any], set[int], bool, int | None, int]] = [
    ("@everyone alone", {}, set(), False, CHANNEL, TALK),
    ("server level ignores overwrites", {"own": (everyone(deny=SEND),)}, set(), False, None, TALK),
    ("roles add to @everyone", {"mod": int(P.KICK_MEMBERS)}, {MOD}, False, None,
     TALK | P.KICK_MEMBERS),
    ("a role the member lacks grants nothing", {"mod": int(P.KICK_MEMBERS)}, set(), False, None,
     TALK),
    ("administrator grants all", {"mod": int(P.ADMINISTRATOR)}, {MOD}, False, CHANNEL, ALL),
    ("administrator ignores channel denies",
     {"mod": int(P.ADMINISTRATOR), "own": (everyone(deny=ALL), role(MOD, deny=ALL),
                                           member(deny=ALL))},
     {MOD}, False, CHANNEL, ALL),
    ("@everyone deny", {"own": (everyone(deny=SEND),)}, set(), False, CHANNEL, VIEW | READ),
    ("@everyone deny, role allow: the role wins",
     {"own": (everyone(deny=SEND), role(HELPER, allow=SEND))}, {HELPER}, False, CHANNEL, TALK),
    ("@everyone deny, allow on a role the member lacks",
     {"own": (everyone(deny=SEND), role(HELPER, allow=SEND))}, set(), False, CHANNEL,
     VIEW | READ),
    ("role overwrites combine: one role's allow beats another's deny",
     {"own": (role(MOD, deny=SEND), role(HELPER, allow=SEND))}, {MOD, HELPER}, False, CHANNEL,
     TALK),
    ("role deny alone", {"own": (role(MOD, deny=SEND),)}, {MOD}, False, CHANNEL, VIEW | READ),
    ("member deny over role allow",
     {"own": (everyone(deny=SEND), role(MOD, allow=SEND), member(deny=SEND))}, {MOD}, False,
     CHANNEL, VIEW | READ),
    ("member allow over role and @everyone deny",
     {"own": (everyone(deny=SEND), role(MOD, deny=SEND), member(allow=SEND))}, {MOD}, False,
     CHANNEL, TALK),
    ("another member's overwrite does not apply",
     {"own": (member(deny=SEND, user_id=USER + 1),)}, set(), False, CHANNEL, TALK),
    ("hidden channel: no permission at all",
     {"base": TALK | P.MANAGE_CHANNELS, "own": (everyone(deny=VIEW),)}, set(), False, CHANNEL,
     NONE),
    ("hidden from @everyone, visible to a role",
     {"own": (everyone(deny=VIEW), role(MOD, allow=VIEW))}, {MOD}, False, CHANNEL, TALK),
    ("channel overwrite grants what the base lacks",
     {"base": VIEW, "own": (role(HELPER, allow=SEND | READ),)}, {HELPER}, False, CHANNEL, TALK),
    ("synced child uses its category's overwrites",
     {"category": (everyone(deny=VIEW),), "own": (everyone(allow=VIEW),), "synced": True},
     set(), False, CHANNEL, NONE),
    ("unsynced child uses its own",
     {"category": (everyone(deny=VIEW),), "own": (), "synced": False}, set(), False, CHANNEL,
     TALK),
    ("synced child: role allow in the category",
     {"category": (everyone(deny=VIEW), role(HELPER, allow=VIEW)), "synced": True}, {HELPER},
     False, CHANNEL, TALK),
    ("an overwrite cannot make an administrator",
     {"own": (member(allow=int(P.ADMINISTRATOR)),)}, set(), False, CHANNEL, TALK),
    ("timed out: read only", {"mod": int(P.KICK_MEMBERS)}, {MOD}, True, CHANNEL, VIEW | READ),
    ("timed out: nothing server-wide but reading", {"mod": int(P.KICK_MEMBERS)}, {MOD}, True,
     None, VIEW | READ),
    ("timed out and hidden", {"own": (everyone(deny=VIEW),)}, set(), True, CHANNEL, NONE),
    ("timed-out administrator is unaffected", {"mod": int(P.ADMINISTRATOR)}, {MOD}, True,
     CHANNEL, ALL),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "roles", "timed_out", "channel", "expected"),
    [pytest.param(*v[1:], id=v[0]) for v in VECTORS],
)
def test_vectors(
    kwargs: dict[str, Any], roles: set[int], timed_out: bool, channel: int | None, expected: int
) -> None:
    got = compute(world(**kwargs), Member(USER, frozenset(roles), timed_out), channel)
    assert got == expected, f"got {names(got)}, expected {names(expected)}"


def test_the_owner_has_everything_whatever_the_overwrites() -> None:
    server = world(base=NONE, own=(everyone(deny=ALL), member(deny=ALL, user_id=OWNER)))
    assert compute(server, Member(OWNER, timed_out=True), CHANNEL) == ALL
    assert compute(server, Member(OWNER), None) == ALL


def test_unknown_channels_and_roles_add_nothing() -> None:
    server = world()
    assert compute(server, Member(USER, frozenset({999})), 12345) == TALK


def test_top_position() -> None:
    server = world()
    assert top_position(server, Member(USER)) == 0
    assert top_position(server, Member(USER, frozenset({HELPER}))) == 1
    assert top_position(server, Member(USER, frozenset({HELPER, MOD}))) == 2
    assert top_position(server, Member(OWNER)) == float("inf")


def test_bit_values_are_fixed() -> None:
    # The wire protocol: changing any of these breaks clients.
    assert [(p.name, p.value.bit_length() - 1) for p in Permission][:3] == [
        ("VIEW_CHANNEL", 0),
        ("SEND_MESSAGES", 1),
        ("READ_MESSAGE_HISTORY", 2),
    ]
    assert P.ADMINISTRATOR == 1 << 25
    assert ALL == (1 << 33) - 1
    assert DEFAULT_EVERYONE & P.VIEW_CHANNEL
    assert not DEFAULT_EVERYONE & (P.ADMINISTRATOR | P.MANAGE_ROLES | P.KICK_MEMBERS)
    assert missing(TALK, TALK | P.KICK_MEMBERS | P.BAN_MEMBERS) == P.KICK_MEMBERS
    assert missing(ALL, ALL) == 0


# -- properties --------------------------------------------------------------------------------

masks = st.integers(min_value=0, max_value=ALL)
overwrite_lists = st.lists(
    st.builds(
        Overwrite,
        st.sampled_from([SERVER, MOD, HELPER, USER, USER + 1]),
        st.sampled_from(["role", "member"]),
        masks,
        masks,
    ),
    max_size=6,
)
role_sets = st.sets(st.sampled_from([MOD, HELPER]))


def random_world(base: int, mod: int, helper: int, own: list[Overwrite]) -> ServerPerms:
    return world(base=base, mod=mod, helper=helper, own=tuple(own))


@given(masks, masks, masks, overwrite_lists, role_sets, st.booleans())
def test_owner_and_administrators_always_have_everything(
    base: int, mod: int, helper: int, own: list[Overwrite], roles: set[int], timed_out: bool
) -> None:
    server = random_world(base, mod | P.ADMINISTRATOR, helper, own)
    for channel in (None, CHANNEL):
        assert compute(server, Member(OWNER, frozenset(roles), timed_out), channel) == ALL
        assert compute(server, Member(USER, frozenset(roles | {MOD}), timed_out), channel) == ALL


@given(masks, masks, masks, overwrite_lists, role_sets, masks)
def test_a_member_deny_beats_any_role_allow(
    base: int, mod: int, helper: int, own: list[Overwrite], roles: set[int], deny: int
) -> None:
    server = world(
        base=base & ~P.ADMINISTRATOR,
        mod=mod & ~P.ADMINISTRATOR,
        helper=helper & ~P.ADMINISTRATOR,
        own=(*[o for o in own if o.type == "role"], member(deny=deny)),
    )
    assert compute(server, Member(USER, frozenset(roles)), CHANNEL) & deny == 0


@given(masks, masks, masks, overwrite_lists, role_sets, st.booleans())
def test_results_stay_within_the_defined_bits_and_need_view(
    base: int, mod: int, helper: int, own: list[Overwrite], roles: set[int], timed_out: bool
) -> None:
    server = random_world(base, mod, helper, own)
    got = compute(server, Member(USER, frozenset(roles), timed_out), CHANNEL)
    assert got & ~ALL == 0
    assert got == NONE or got & P.VIEW_CHANNEL


@given(masks, masks, masks, overwrite_lists, role_sets)
def test_a_timeout_only_ever_takes_away(
    base: int, mod: int, helper: int, own: list[Overwrite], roles: set[int]
) -> None:
    server = random_world(base, mod, helper, own)
    free = compute(server, Member(USER, frozenset(roles)), CHANNEL)
    timed_out = compute(server, Member(USER, frozenset(roles), timed_out=True), CHANNEL)
    assert timed_out & ~free == 0
    if not free & P.ADMINISTRATOR:
        assert timed_out & ~(P.VIEW_CHANNEL | P.READ_MESSAGE_HISTORY) == 0


@given(masks, masks, masks, overwrite_lists, role_sets, st.sampled_from([MOD, HELPER]))
def test_adding_a_role_without_overwrites_never_takes_away(
    base: int, mod: int, helper: int, own: list[Overwrite], roles: set[int], extra: int
) -> None:
    # Roles only add at the server level; in a channel a role's overwrite may deny.
    server = random_world(base, mod, helper, own)
    before = compute(server, Member(USER, frozenset(roles)), None)
    after = compute(server, Member(USER, frozenset(roles | {extra})), None)
    assert before & ~after == 0


# -- the documentation matches the code --------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_table_lists_every_bit_with_its_value() -> None:
    docs = (ROOT / "docs" / "permissions.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([A-Z_]+)` \| `1 << (\d+)` \((\d+)\) \|", docs, re.MULTILINE)
    assert [(name, 1 << int(shift), int(value)) for name, shift, value in rows] == [
        (p.name, p.value, p.value) for p in Permission
    ]
    assert f"({DEFAULT_EVERYONE})" in docs


def test_the_openapi_schema_in_the_docs_is_the_codes() -> None:
    docs = (ROOT / "docs" / "permissions.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(.*?)\n```", docs, re.DOTALL)
    assert block is not None
    shown = json.loads(block.group(1))
    assert shown == {"components": {"schemas": {"Permissions": openapi_schema()}}}


THREAD = 60


@given(
    synced=st.booleans(),
    own=st.lists(
        st.sampled_from([everyone(deny=VIEW), everyone(deny=SEND), role(MOD, allow=SEND)])
    ),
    category=st.lists(st.sampled_from([everyone(deny=VIEW), role(MOD, deny=SEND)])),
    thread_own=st.lists(st.sampled_from([everyone(allow=ALL), member(allow=ALL)])),
    roles=st.sets(st.sampled_from([MOD, HELPER])),
    timed_out=st.booleans(),
)
def test_a_thread_has_its_parents_permissions(
    synced: bool,
    own: list[Overwrite],
    category: list[Overwrite],
    thread_own: list[Overwrite],
    roles: set[int],
    timed_out: bool,
) -> None:
    # Whatever its parent inherits (its own overwrites or its category's), a thread has exactly
    # that; overwrites stored on the thread itself never count.
    server = world(own=tuple(own), category=tuple(category), synced=synced, mod=int(P.KICK_MEMBERS))
    channels = dict(server.channels)
    channels[THREAD] = ChannelNode(THREAD, CHANNEL, False, tuple(thread_own), thread=True)
    with_thread = ServerPerms(server.id, server.owner_id, server.roles, channels)
    who = Member(USER, frozenset(roles), timed_out)
    assert compute(with_thread, who, THREAD) == compute(with_thread, who, CHANNEL)
