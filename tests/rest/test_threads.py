"""Threads end to end through the real (shared) server: starting them from a message and on
their own, the parent's permissions with the thread bits, archiving (lazy, and unarchived by a
post), locking, members, listings, messages/reactions/pins/acks/typing inside, the events
(to who can see the parent), READY, and the bad input each refuses."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import trio

from relay.client import open_gateway
from relay.permissions import DEFAULT_EVERYONE, P
from tests.rest.conftest import add_role, give, join, new_server, post, set_everyone

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.client import Gateway
    from tests.rest.conftest import SharedServer

THUMBS = quote("👍")


async def until(gateway: Gateway, t: str, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    with trio.fail_after(5):
        while True:
            frame = await gateway.dispatch()
            if frame["t"] == t and test(frame["d"]):
                return dict(frame["d"])


async def test_a_thread_from_a_message_and_its_messages(people: Any) -> None:
    alice, bob = await people("alice"), await people("bob")
    sid, text = await new_server(alice)
    await join(alice, sid, bob)
    mid = await post(alice, text, "start here")
    thread = await bob.call(
        "POST",
        f"/channels/{text}/messages/{mid}/threads",
        {"name": "talk", "auto_archive_duration": 60},
    )
    assert thread["type"] == "thread"
    assert thread["parent_id"] == text
    assert thread["server_id"] == sid
    assert thread["owner_id"] == bob.id
    meta = thread["thread_metadata"]
    assert meta["starter_message_id"] == mid
    assert meta["archived"] is False
    assert meta["auto_archive_duration"] == 60
    assert thread["member_count"] == 1
    tid = thread["id"]
    # The starting message gains the reference; a second thread from it is refused.
    assert (await alice.call("GET", f"/channels/{text}/messages/{mid}"))["thread"] == tid
    assert "thread" not in await alice.call(
        "GET", f"/channels/{text}/messages/{await post(alice, text)}"
    )
    assert (await bob.error("POST", f"/channels/{text}/messages/{mid}/threads", {"name": "x"}))[
        :2
    ] == (422, "thread_exists")
    # Messages, replies, reactions, pins, history, acks and typing work in it.
    first = await post(alice, tid, "in the thread")
    reply = await alice.call(
        "POST", f"/channels/{tid}/messages", {"content": "re", "reply_to": first}
    )
    await bob.call("PUT", f"/channels/{tid}/messages/{first}/reactions/{THUMBS}/@me")
    await alice.call("PUT", f"/channels/{tid}/pins/{first}")
    history = await bob.call("GET", f"/channels/{tid}/messages")
    assert [m["id"] for m in history] == [first, reply["id"]]
    assert history[0]["reactions"][0]["count"] == 1
    assert history[0]["pinned"]
    assert [m["id"] for m in await bob.call("GET", f"/channels/{tid}/pins")] == [first]
    await bob.call("POST", f"/channels/{tid}/messages/{reply['id']}/ack")
    await bob.call("POST", f"/channels/{tid}/typing")
    # The thread is a channel: GET shows it; the server's channel list does not.
    assert (await bob.call("GET", f"/channels/{tid}"))["thread_metadata"]["archived"] is False
    listed = await bob.call("GET", f"/servers/{sid}/channels")
    assert tid not in [c["id"] for c in listed]
    # Posting made alice a member.
    members = await bob.call("GET", f"/channels/{tid}/thread-members")
    assert sorted(m["user"]["id"] for m in members) == sorted([alice.id, bob.id])


async def test_permissions_are_the_parents_with_the_thread_bits(people: Any) -> None:
    alice, bob, eve = await people("alice"), await people("bob"), await people("eve")
    sid, text = await new_server(alice)
    await join(alice, sid, bob)
    tid = (await alice.call("POST", f"/channels/{text}/threads", {"name": "t"}))["id"]
    # Without CREATE_THREADS nobody but the owner starts one; without
    # SEND_MESSAGES_IN_THREADS no post, though SEND_MESSAGES stays.
    await set_everyone(
        alice, sid, DEFAULT_EVERYONE & ~P.CREATE_THREADS & ~P.SEND_MESSAGES_IN_THREADS
    )
    assert await bob.error("POST", f"/channels/{text}/threads", {"name": "t"}) == (
        403,
        "missing_permission",
        "CREATE_THREADS",
    )
    assert await bob.error("POST", f"/channels/{tid}/messages", {"content": "x"}) == (
        403,
        "missing_permission",
        "SEND_MESSAGES_IN_THREADS",
    )
    await post(bob, text)  # the parent still takes his messages
    # Only SEND_MESSAGES_IN_THREADS: posts in threads, not in the channel.
    await set_everyone(alice, sid, DEFAULT_EVERYONE & ~P.SEND_MESSAGES)
    await post(bob, tid)
    assert (await bob.error("POST", f"/channels/{text}/messages", {"content": "x"}))[2] == (
        "SEND_MESSAGES"
    )
    # A thread has no overwrites of its own.
    overwrite = {"type": "role", "allow": "0", "deny": "0"}
    assert (await alice.error("PUT", f"/channels/{tid}/permissions/{sid}", overwrite))[:2] == (
        403,
        "thread_channel",
    )
    # Hiding the parent (an overwrite on it) hides the thread.
    await alice.call(
        "PUT",
        f"/channels/{text}/permissions/{sid}",
        {"type": "role", "allow": "0", "deny": str(int(P.VIEW_CHANNEL))},
    )
    for path in (
        f"/channels/{tid}",
        f"/channels/{tid}/messages",
        f"/channels/{tid}/thread-members",
    ):
        assert (await bob.error("GET", path))[:2] == (404, "unknown_channel")
    # Outsiders see nothing of it.
    assert (await eve.error("GET", f"/channels/{tid}/messages"))[:2] == (404, "unknown_channel")
    assert (await eve.error("PUT", f"/channels/{tid}/thread-members/@me"))[:2] == (
        404,
        "unknown_channel",
    )


async def test_lock_archive_and_manage(people: Any, shared_server: SharedServer) -> None:
    alice, bob, carol = await people("alice"), await people("bob"), await people("carol")
    sid, text = await new_server(alice)
    await join(alice, sid, bob, carol)
    thread = await bob.call("POST", f"/channels/{text}/threads", {"name": "bobs"})
    tid = thread["id"]
    # The starter renames and archives his own; others need MANAGE_THREADS.
    assert (await bob.call("PATCH", f"/channels/{tid}", {"name": "renamed"}))["name"] == "renamed"
    assert (await carol.error("PATCH", f"/channels/{tid}", {"name": "x"}))[2] == "MANAGE_THREADS"
    assert (await bob.error("PATCH", f"/channels/{tid}", {"locked": True}))[2] == "MANAGE_THREADS"
    archived = await bob.call("PATCH", f"/channels/{tid}", {"archived": True})
    assert archived["thread_metadata"]["archived"] is True
    assert [t["id"] for t in await carol.call("GET", f"/channels/{text}/threads/archived")] == [tid]
    assert await carol.call("GET", f"/channels/{text}/threads/active") == []
    # A post by someone allowed unarchives it.
    await post(carol, tid)
    assert [t["id"] for t in await carol.call("GET", f"/channels/{text}/threads/active")] == [tid]
    # Locked: only MANAGE_THREADS posts, and its starter cannot change it any more.
    moderator = await add_role(alice, sid, int(P.MANAGE_THREADS))
    await give(alice, sid, carol, moderator)
    locked = await carol.call("PATCH", f"/channels/{tid}", {"locked": True, "archived": True})
    assert locked["thread_metadata"]["locked"] is True
    assert (await bob.error("POST", f"/channels/{tid}/messages", {"content": "x"}))[:2] == (
        403,
        "thread_locked",
    )
    assert (await bob.error("PATCH", f"/channels/{tid}", {"archived": False}))[:2] == (
        403,
        "thread_locked",
    )
    await post(carol, tid)  # a moderator may, and it unarchives it
    assert (await bob.call("GET", f"/channels/{tid}"))["thread_metadata"]["archived"] is False
    # Bad settings of a thread, thread settings of a channel.
    for bad in ({"auto_archive_duration": 61}, {"topic": "x"}, {"archived": "yes"}):
        assert (await carol.error("PATCH", f"/channels/{tid}", bad))[:2] == (400, "invalid_field")
    assert (await alice.error("PATCH", f"/channels/{text}", {"locked": True}))[:2] == (
        400,
        "invalid_field",
    )
    # Deleting needs MANAGE_THREADS; its messages go with it.
    assert (await bob.error("DELETE", f"/channels/{tid}"))[2] == "MANAGE_THREADS"
    await carol.call("DELETE", f"/channels/{tid}", reason="off topic")
    assert (await bob.error("GET", f"/channels/{tid}/messages"))[:2] == (404, "unknown_channel")
    # The audit log has who started, changed and deleted it.
    log = await alice.call("GET", f"/servers/{sid}/audit-log")
    mine = [(e["action"], e["user_id"]) for e in log if e["target_id"] == tid]
    assert mine[0] == ("thread_delete", carol.id)
    assert mine[-1] == ("thread_create", bob.id)
    assert ("thread_update", carol.id) in mine
    assert next(e for e in log if e["action"] == "thread_delete")["reason"] == "off topic"
    locking = next(e for e in log if e["action"] == "thread_update" and e["user_id"] == carol.id)
    assert {"key": "locked", "old": False, "new": True} in locking["changes"]


async def test_auto_archive_is_lazy_and_a_post_revives(
    people: Any, shared_server: SharedServer, tmp_path_factory: Any
) -> None:
    alice = await people("alice")
    _, text = await new_server(alice)
    tid = (await alice.call("POST", f"/channels/{text}/threads", {"name": "old"}))["id"]
    # An hour without activity: move its clock back instead of waiting.
    # The shared server's database is among this worker's shared*/ directories (other modules'
    # servers left theirs): the one that has the thread.
    changed = 0
    found = tmp_path_factory.getbasetemp().glob("shared*/data/*.db")
    for database in {p.resolve() for p in found}:  # sharedcurrent links to the newest
        with sqlite3.connect(database, timeout=10) as db:
            changed += db.execute(
                "UPDATE channels SET archive_ts = archive_ts - 2 * 86400000, auto_archive = 60"
                " WHERE id = ? AND type = 'thread'",
                (int(tid),),
            ).rowcount
        db.close()
    assert changed == 1
    meta = (await alice.call("GET", f"/channels/{tid}"))["thread_metadata"]
    assert meta["archived"] is True
    assert [t["id"] for t in await alice.call("GET", f"/channels/{text}/threads/archived")] == [tid]
    await post(alice, tid)
    assert (await alice.call("GET", f"/channels/{tid}"))["thread_metadata"]["archived"] is False


async def test_members_join_leave_add_remove(people: Any) -> None:
    alice, bob, carol, eve = [await people(n) for n in ("alice", "bob", "carol", "eve")]
    sid, text = await new_server(alice)
    await join(alice, sid, bob, carol)
    tid = (await bob.call("POST", f"/channels/{text}/threads", {"name": "t"}))["id"]
    await carol.call("PUT", f"/channels/{tid}/thread-members/@me")
    await carol.call("PUT", f"/channels/{tid}/thread-members/@me")  # again: nothing changes
    await bob.call("PUT", f"/channels/{tid}/thread-members/{alice.id}")
    ids = sorted(m["user"]["id"] for m in await bob.call("GET", f"/channels/{tid}/thread-members"))
    assert ids == sorted([alice.id, bob.id, carol.id])
    # Someone who cannot see it cannot be added; bad ids are unknown.
    assert (await bob.error("PUT", f"/channels/{tid}/thread-members/{eve.id}"))[:2] == (
        404,
        "unknown_member",
    )
    assert (await bob.error("PUT", f"/channels/{tid}/thread-members/nobody"))[:2] == (
        404,
        "unknown_user",
    )
    # Carol may not remove Alice; Bob (its starter) may; Carol leaves.
    assert (await carol.error("DELETE", f"/channels/{tid}/thread-members/{alice.id}"))[2] == (
        "MANAGE_THREADS"
    )
    await bob.call("DELETE", f"/channels/{tid}/thread-members/{alice.id}")
    await carol.call("DELETE", f"/channels/{tid}/thread-members/@me")
    ids = [m["user"]["id"] for m in await bob.call("GET", f"/channels/{tid}/thread-members")]
    assert ids == [bob.id]
    # Thread routes on a channel that is not a thread.
    assert (await bob.error("GET", f"/channels/{text}/thread-members"))[:2] == (
        404,
        "unknown_channel",
    )


async def test_bad_input(people: Any) -> None:
    alice = await people("alice")
    sid, text = await new_server(alice)
    tid = (await alice.call("POST", f"/channels/{text}/threads", {"name": "t"}))["id"]
    voice = next(
        c["id"] for c in await alice.call("GET", f"/servers/{sid}/channels") if c["type"] == "voice"
    )
    for body in (
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": 5},
        {"name": "t", "auto_archive_duration": 30},
        {"name": "t", "extra": 1},
    ):
        assert (await alice.error("POST", f"/channels/{text}/threads", body))[:2] == (
            400,
            "invalid_field",
        ), body
    assert (await alice.error("POST", f"/channels/{voice}/threads", {"name": "t"}))[:2] == (
        400,
        "not_a_text_channel",
    )
    assert (await alice.error("POST", f"/channels/{tid}/threads", {"name": "t"}))[:2] == (
        400,
        "not_a_text_channel",
    )
    assert (await alice.error("POST", "/channels/123/threads", {"name": "t"}))[:2] == (
        404,
        "unknown_channel",
    )
    assert (await alice.error("POST", f"/channels/{text}/messages/123/threads", {"name": "t"}))[
        :2
    ] == (404, "unknown_message")
    assert (await alice.error("GET", f"/channels/{text}/threads/archived?limit=0"))[:2] == (
        400,
        "invalid_field",
    )


async def test_thread_events_and_ready(people: Any, shared_server: SharedServer) -> None:
    alice, bob, carol = await people("alice"), await people("bob"), await people("carol")
    sid, text = await new_server(alice)
    await join(alice, sid, bob, carol)
    hidden = (
        await alice.call("POST", f"/servers/{sid}/channels", {"name": "staff", "type": "text"})
    )["id"]
    await alice.call(
        "PUT",
        f"/channels/{hidden}/permissions/{sid}",
        {"type": "role", "allow": "0", "deny": str(int(P.VIEW_CHANNEL))},
    )
    async with (
        open_gateway(shared_server.ws_url) as bob_gw,
        open_gateway(shared_server.ws_url) as carol_gw,
    ):
        await bob_gw.identify(bob.token)
        await carol_gw.identify(carol.token)
        secret = (await alice.call("POST", f"/channels/{hidden}/threads", {"name": "s"}))["id"]
        # Nothing of the hidden channel's thread reaches them.
        await post(alice, secret, "psst")
        marker = await post(alice, text, "marker")
        seen: list[dict[str, Any]] = []
        with trio.fail_after(5):
            while True:
                frame = await carol_gw.dispatch()
                seen.append(frame)
                if frame["t"] == "MESSAGE_CREATE" and frame["d"]["id"] == marker:
                    break
        assert all(f["d"].get("id") != secret and f["d"].get("channel_id") != secret for f in seen)
        mid = await post(alice, text)
        thread = await alice.call("POST", f"/channels/{text}/messages/{mid}/threads", {"name": "t"})
        tid = thread["id"]
        for gw in (bob_gw, carol_gw):
            created = await until(gw, "THREAD_CREATE", lambda d: d["id"] == tid)
            assert created["parent_id"] == text
            update = await until(gw, "MESSAGE_UPDATE", lambda d: d["id"] == mid)
            assert update["thread"] == tid
        await bob.call("PUT", f"/channels/{tid}/thread-members/@me")
        members = await until(carol_gw, "THREAD_MEMBERS_UPDATE", lambda d: d["id"] == tid)
        assert [m["user"]["id"] for m in members["added_members"]] == [bob.id]
        assert members["member_count"] == 2
        await alice.call("PATCH", f"/channels/{tid}", {"name": "renamed"})
        assert (await until(carol_gw, "THREAD_UPDATE", lambda d: d["id"] == tid))[
            "name"
        ] == "renamed"
        message = await post(alice, tid, "inside")
        await until(carol_gw, "MESSAGE_CREATE", lambda d: d["id"] == message)
        await alice.call("DELETE", f"/channels/{tid}")
        await until(carol_gw, "THREAD_DELETE", lambda d: d["id"] == tid)
    # READY: the active threads one is in, with read states for them.
    kept = (await alice.call("POST", f"/channels/{text}/threads", {"name": "kept"}))["id"]
    await bob.call("PUT", f"/channels/{kept}/thread-members/@me")
    last = await post(alice, kept)
    async with open_gateway(shared_server.ws_url) as again:
        ready = await again.identify(bob.token)
        assert [t["id"] for t in ready["threads"]] == [kept]
        server = next(s for s in ready["servers"] if s["id"] == sid)
        assert kept not in [c["id"] for c in server["channels"]]  # threads come apart
        states = {s["channel_id"]: s for s in ready["read_states"]}
        assert states[kept]["last_message_id"] == last


async def ack_of(
    gateway: Gateway, nonce: str, seen: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The send's ack; the dispatches before it go to `seen`."""
    with trio.fail_after(5):
        while True:
            frame = await gateway.receive()
            if frame["op"] == 13 and frame["d"]["nonce"] == nonce:
                return dict(frame["d"])
            if seen is not None and frame["op"] == 0:
                seen.append(frame)


async def test_gateway_sends_in_threads_and_the_parent_takes_its_threads_along(
    people: Any, shared_server: SharedServer
) -> None:
    alice, bob = await people("alice"), await people("bob")
    sid, text = await new_server(alice)
    await join(alice, sid, bob)
    tid = (await alice.call("POST", f"/channels/{text}/threads", {"name": "t"}))["id"]
    await alice.call("PATCH", f"/channels/{tid}", {"archived": True})
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(bob.token)
        # A send over the gateway unarchives it, as a REST post does.
        await gw.send(12, {"channel_id": tid, "content": "back", "nonce": "n1"})
        seen: list[dict[str, Any]] = []
        assert "id" in await ack_of(gw, "n1", seen)
        revived = [f["d"] for f in seen if f["t"] == "THREAD_UPDATE"]
        assert [d["thread_metadata"]["archived"] for d in revived] == [False]
        await alice.call("PATCH", f"/channels/{tid}", {"locked": True})
        await gw.send(12, {"channel_id": tid, "content": "no", "nonce": "n2"})
        assert (await ack_of(gw, "n2"))["error"]["code"] == "thread_locked"
    # Deleting the text channel deletes its threads and their messages.
    await alice.call("DELETE", f"/channels/{text}")
    assert (await alice.error("GET", f"/channels/{tid}"))[:2] == (404, "unknown_channel")
