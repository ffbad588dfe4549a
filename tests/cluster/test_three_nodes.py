"""Three Relay processes on one PostgreSQL database and one Redis, behind nginx: scripts/cluster
as a user runs it (tests/cluster/nodes.py).

One test, in steps that build on each other (a kill -9 comes last but for the stop), so that
the cluster starts once even when pytest-xdist spreads tests over workers:
- accounts made through nginx land on any node and work on every node;
- messages posted on each node reach the users on the others, once each, in history's order
  (posted one after another, and posted at once on all three: one order everywhere);
- typing, presence and voice states cross nodes; an app room is reached through any node;
- kill -9 of a node while every node takes posts: every post that got a 200 is in history
  afterwards, read through another node; the killed node's gateway clients reconnect through
  nginx, land on a live node, RESUME there (sequence numbers on without a gap, nothing twice)
  and get new messages;
- Ctrl-C stops the script and every process it started, exit status 0.
"""

from __future__ import annotations

import random
import socket
import subprocess
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import coredis
import httpx
import pytest
import trio
from nacl.signing import SigningKey

from relay.client import ApiError, GatewayClosed, RelayClient, open_gateway, open_websocket
from relay.cluster.envelope import server_topic
from relay.protocol.rooms import Close, Kind
from tests.cluster.nodes import ROOT, alive
from tests.rooms.conftest import RoomClient

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import Gateway
    from tests.cluster.nodes import ThreeNodes


@dataclass
class User:
    name: str
    id: str
    token: str


async def register(client: RelayClient, name: str) -> User:
    """A user logging in with a key: no password hashing, so set-up stays fast."""
    key = SigningKey.generate()
    user = await client.register(name, public_key=bytes(key.verify_key))
    await client.login_with_key(name, key)
    assert client.access_token is not None
    return User(name, str(user["id"]), client.access_token)


def as_user(url: str, user: User) -> RelayClient:
    client = RelayClient(url)
    client.access_token = user.token
    return client


async def next_message(gw: Gateway) -> dict[str, Any]:
    frame = await gw.dispatch("MESSAGE_CREATE")
    found: dict[str, Any] = frame["d"]
    return found


async def subscribed_nodes(cluster: ThreeNodes, server_id: str, count: int) -> None:
    """Wait until `count` nodes subscribe to the server's topic in Redis: a node hears other
    nodes' events only from then on (docs/cluster.md, "What the broker carries")."""
    topic = server_topic(int(server_id))
    redis: coredis.Redis[bytes] = coredis.Redis.from_url(cluster.broker)
    async with redis:
        with trio.fail_after(10):
            while True:
                if int((await redis.pubsub_numsub(topic))[topic.encode()]) == count:
                    return
                await trio.sleep(0.01)


async def join_room(stack: AsyncExitStack, realtime: str, room: dict[str, Any]) -> RoomClient:
    """Join the app room through the node at `realtime`, following a `moved` to its node."""
    ws = await stack.enter_async_context(open_websocket(realtime + "/v1/websocket"))
    client = RoomClient(ws)
    await client.send("connect", room_id=room["id"], secret=room["secret"])
    first = await client.event()
    if first["type"] == "connected":
        client.connected = first
        return client
    assert first["type"] == "moved", first
    await client.expect_error("room_elsewhere", Close.ELSEWHERE)
    ws = await stack.enter_async_context(open_websocket(first["url"]))
    client = RoomClient(ws)
    await client.join(room["id"], room["secret"])
    return client


async def full_history(client: RelayClient, channel: str) -> list[dict[str, Any]]:
    """Every message of the channel, oldest first, 100 at a time."""
    found: list[dict[str, Any]] = []
    after = "1"  # before any id
    while True:
        page = await client.call(
            "GET", f"/v1/api/channels/{channel}/messages?after={after}&limit=100"
        )
        found += page
        if len(page) < 100:
            return found
        after = page[-1]["id"]


async def test_three_nodes_behind_nginx(three_nodes: ThreeNodes) -> None:
    cluster = three_nodes
    one, two, three = cluster.nodes
    async with AsyncExitStack() as stack:
        # Accounts through nginx: round robin spreads them over the nodes.
        names = ("alice", "bob", "carol")
        clients = [await stack.enter_async_context(cluster.client()) for _ in names]
        alice, bob, carol = [await register(c, n) for c, n in zip(clients, names, strict=True)]
        guild = await clients[0].call("POST", "/v1/api/servers", {"name": "Cluster"})
        invite = await clients[0].call("POST", f"/v1/api/servers/{guild['id']}/invites", {})
        for client in clients[1:]:
            await client.call("POST", f"/v1/api/invites/{invite['code']}")
        channel = next(c["id"] for c in guild["channels"] if c["type"] == "text")
        path = f"/v1/api/channels/{channel}/messages"
        # Each user talks to "their" node directly from here on.
        rest = {
            u.name: await stack.enter_async_context(as_user(node.http, u))
            for u, node in ((alice, one), (bob, two), (carol, three))
        }

        with trio.fail_after(30):
            async with AsyncExitStack() as gateways:
                ga = await gateways.enter_async_context(open_gateway(one.realtime))
                await ga.identify(alice.token)
                gb = await gateways.enter_async_context(open_gateway(two.realtime))
                ready = await gb.identify(bob.token)
                assert [s["id"] for s in ready["servers"]] == [guild["id"]]  # PostgreSQL's
                # Presence crosses nodes: Alice (node 1) sees Bob (node 2) come online.
                while True:
                    seen = await ga.dispatch("PRESENCE_UPDATE")
                    if seen["d"]["user_id"] == bob.id:
                        assert seen["d"]["status"] == "online"
                        break
                gc = await gateways.enter_async_context(open_gateway(three.realtime))
                await gc.identify(carol.token)
                await subscribed_nodes(cluster, guild["id"], 3)
                everyone = (ga, gb, gc)

                # Messages from each node reach every node once; each is posted after the
                # previous one reached everybody, so every node shows history's order.
                posted = []
                for i in range(6):
                    author = ("alice", "bob", "carol")[i % 3]
                    sent = await rest[author].call("POST", path, {"content": f"m{i} {author}"})
                    posted.append(sent["id"])
                    for gw in everyone:
                        got = await next_message(gw)
                        assert (got["id"], got["content"]) == (sent["id"], f"m{i} {author}")
                stored = await full_history(rest["carol"], channel)
                assert [m["id"] for m in stored] == posted

                # Posted at once on all three nodes: the channel's owner node orders them, and
                # every node delivers each once, in that order, which is history's.
                async def burst(author: str) -> None:
                    for i in range(5):
                        await rest[author].call("POST", path, {"content": f"{author} {i}"})

                async with trio.open_nursery() as nursery:
                    for author in rest:
                        nursery.start_soon(burst, author)
                stored = (await full_history(rest["alice"], channel))[len(posted) :]
                assert len(stored) == 15
                for gw in everyone:
                    heard = [(await next_message(gw))["id"] for _ in range(15)]
                    assert heard == [m["id"] for m in stored]  # one order, history's
                posted += [m["id"] for m in stored]

                # Typing crosses nodes: Bob types on node 2, Alice and Carol hear it.
                await rest["bob"].call("POST", f"/v1/api/channels/{channel}/typing")
                for gw in (ga, gc):
                    typing = await gw.dispatch("TYPING_START")
                    assert typing["d"]["user_id"] == bob.id
                    assert typing["d"]["channel_id"] == channel

                # Voice states cross nodes: Bob joins the voice channel on node 2 (op 4), then
                # leaves it; Alice and Carol see both. (The voice channel itself, its media
                # and its state list, still live on the node each member reached.)
                voice = next(c["id"] for c in guild["channels"] if c["type"] == "voice")
                for target in (voice, None):
                    await gb.send(4, {"server_id": guild["id"], "channel_id": target})
                    for gw in (ga, gc):
                        state = await gw.dispatch("VOICE_STATE_UPDATE")
                        assert (state["d"]["user_id"], state["d"]["channel_id"]) == (bob.id, target)

                # An app room lives on the node that created it (through nginx: any of
                # them); a client that joins through another node is sent there ("moved", a
                # direct URL) and joins; a broadcast reaches the members who came through
                # every node.
                room = await clients[0].call(
                    "POST", "/v1/api/rooms", {"max_clients": 8, "protocol": "peer"}
                )
                async with AsyncExitStack() as rooms:
                    members = [
                        await join_room(rooms, node.realtime, room) for node in cluster.nodes
                    ]
                    await members[1].send_binary(Kind.BROADCAST, 0, b"to the room")
                    for member in (members[0], members[2]):
                        frame = await member.receive()
                        while isinstance(frame, dict):  # client_joined and the like
                            frame = await member.receive()
                        _, sender, payload = frame
                        assert (sender, payload) == (members[1].client_id, b"to the room")

                # Carol leaves node 3: Alice on node 1 sees her go offline.
                await gc.ws.aclose()
                while True:
                    seen = await ga.dispatch("PRESENCE_UPDATE")
                    if seen["d"]["user_id"] == carol.id and seen["d"]["status"] == "offline":
                        break

        await _kill_under_load(cluster, rest, alice, bob, carol, channel)

    assert cluster.stop() == 0, cluster.output()
    assert not any(node.alive() for node in cluster.nodes)
    assert not any(alive(pid) for pid in cluster.servers.values()), cluster.servers
    assert "cluster: stopped" in cluster.output()


async def _kill_under_load(
    cluster: ThreeNodes,
    rest: dict[str, RelayClient],
    alice: User,
    bob: User,
    carol: User,
    channel: str,
) -> None:
    two = cluster.nodes[1]
    path = f"/v1/api/channels/{channel}/messages"
    acked: list[str] = []
    busy = trio.Event()  # 30 posts acknowledged: every node is taking writes
    refused = 0
    killed = trio.Event()

    async def poster(client: RelayClient, label: str) -> None:
        nonlocal refused
        n = 0
        while True:
            n += 1
            try:
                sent = await client.call("POST", path, {"content": f"{label} {n}"})
            except (httpx.TransportError, ApiError):
                # The killed node's connections fail; nginx answers 502 for a request that
                # was in flight to it. Neither was acknowledged.
                refused += 1
                if killed.is_set() and client is rest["bob"]:
                    return  # Bob's node is gone
                await trio.sleep(0.01)
                continue
            acked.append(sent["id"])
            if len(acked) >= 30:
                busy.set()
            if n >= 15 and killed.is_set():
                return

    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            # Bob's gateway is on node 2, the node about to die; Alice listens on node 1.
            gb = await stack.enter_async_context(open_gateway(two.realtime))
            await gb.identify(bob.token)
            through_nginx = [await stack.enter_async_context(as_user(cluster.url, u))
                             for u in (alice, carol)]  # fmt: skip
            bob_heard: list[str] = []

            async def bob_listens() -> None:
                # Until node 2 dies: what reached Bob before the cut.
                try:
                    while True:
                        frame = await gb.receive()
                        if frame.get("t") == "MESSAGE_CREATE":
                            bob_heard.append(frame["d"]["id"])
                except GatewayClosed:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(bob_listens)
                for label, client in (("one", rest["alice"]), ("two", rest["bob"]),
                                      ("three", rest["carol"]), ("lb-a", through_nginx[0]),
                                      ("lb-c", through_nginx[1])):  # fmt: skip
                    nursery.start_soon(poster, client, label)
                await busy.wait()
                await trio.sleep(random.uniform(0, 0.05))
                two.kill()
                killed.set()
            assert not two.alive()
            session_id, seq = gb.session_id, gb.seq
            assert session_id is not None

        # Nothing acknowledged was lost: read through node 3 (and node 1 agrees).
        stored = await full_history(rest["carol"], channel)
        stored_ids = [m["id"] for m in stored]
        assert set(acked) <= set(stored_ids), f"{len(set(acked) - set(stored_ids))} lost"
        assert len(stored_ids) == len(set(stored_ids))  # no post stored twice
        assert [m["id"] for m in await full_history(rest["alice"], channel)] == stored_ids

        # Bob reconnects through nginx (node 2 refuses, so he lands on node 1 or 3) and
        # RESUMEs his session there once node 2's lease on it expired (lease_ttl_s): what
        # node 2 had for him after his last seq is replayed, numbered on without a gap, nothing
        # he had already. (Events published while no node served the session are not replayed:
        # docs/cluster.md, "RESUME on any process".) Then he hears what Carol posts: his new
        # node hears node 3 once it has subscribed to the server's topic, so Carol posts until
        # one arrives; nothing else arrives.
        async with open_gateway(cluster.ws_url) as gb:
            await gb.resume(bob.token, session_id, seq)
            replayed = [await gb.receive()]
            while replayed[-1].get("t") != "RESUMED":
                assert replayed[-1]["op"] == 0, replayed[-1]  # not INVALID_SESSION
                replayed.append(await gb.receive())
            assert [f["s"] for f in replayed] == list(range(seq + 1, seq + 1 + len(replayed)))
            again = [f["d"]["id"] for f in replayed if f["t"] == "MESSAGE_CREATE"]
            assert not set(again) & set(bob_heard)
            assert set(again) | set(bob_heard) <= set(stored_ids)
            sent_after: list[str] = []
            with trio.fail_after(10):
                while True:
                    sent = await rest["carol"].call("POST", path, {"content": "after the kill"})
                    sent_after.append(sent["id"])
                    with trio.move_on_after(0.5):
                        got = await next_message(gb)
                        assert got["id"] in sent_after
                        break


def test_just_cluster_runs_the_script() -> None:
    """`just cluster ARGS` is scripts/cluster ARGS (the test above runs the script)."""
    just = ROOT / ".venv" / "bin" / "just"
    if not just.exists():
        pytest.skip("rust-just is not installed in .venv (scripts/bootstrap installs it)")
    done = subprocess.run(
        [str(just), "--dry-run", "cluster", "--port", "9000"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stderr.strip() == "exec scripts/cluster --port 9000"


def test_a_taken_port_stops_the_script_before_it_starts_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(ROOT / "scripts" / "cluster"), "--data", str(tmp_path), "--port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"cluster: port {port} is in use" in done.stderr
    assert not (tmp_path / "postgres").exists()
