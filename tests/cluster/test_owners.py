"""Channel ownership across processes: two real ChannelOwners ("nodes") over one real Redis and
one real Store. A post arriving at the node that does not own its channel commits through the
owner, in order; an owner that dies is taken over within the lease ttl without losing anything
acknowledged; an owner paused past its lease cannot commit once another took over.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import coredis
import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import ActorStopped
from actors.channel import ChannelActor
from relay.chat.events import TypingStartEvent
from relay.chat.objects import TypingStart
from relay.cluster import owners as wire
from relay.cluster.owners import (
    Answer,
    ChannelOwners,
    ForwardedEvent,
    ForwardedPost,
    WireError,
)
from relay.errors import BadRequest, NotFound, RateLimited, RelayError, Unavailable
from relay.storage import audience, fencing, messages
from relay.storage.messages import AuthorRow, MessageRow, NewMessage, Posted
from relay.storage.sqlite.db import open_store
from tests.storage.test_messages import ALICE, NOW, TEXT, VOICE, populate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    import outcome
    from sqlite_utils import Database

    from relay.storage.sqlite.db import Store
    from tests.realservers import RedisServer

_prefixes = itertools.count()


def typing(user: str) -> TypingStartEvent:
    return TypingStartEvent(d=TypingStart(channel_id=str(TEXT), user_id=user, timestamp="0"))


def new(text: str, channel_id: int = TEXT) -> NewMessage:
    return NewMessage(
        channel_id=channel_id,
        author_id=ALICE,
        content=text,
        nonce=None,
        reply_to=None,
        mentions=[],
        now_ms=NOW,
    )


class Node:
    """One process's ChannelOwners; `delivered` lists what its owned channels published."""

    def __init__(
        self,
        name: str,
        client: coredis.Redis[bytes],
        store: Store,
        prefix: str,
        ttl_s: float,
        idle_s: float | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.client = client
        self.idle_s = idle_s
        self.delivered: list[str] = []
        self.owners = ChannelOwners(client, store, name, self.new_actor, ttl_s=ttl_s, prefix=prefix)

    def new_actor(
        self, channel_id: int, write: Callable[[Database, int, NewMessage], Posted]
    ) -> ChannelActor:
        return ChannelActor(
            f"channel:{channel_id}",
            self.store,
            self.publish,
            lambda row: row,
            partial(self.store.read, audience.channel_audience, channel_id),
            write=write,
            idle_timeout_s=self.idle_s,
        )

    async def publish(self, info: audience.ChannelAudience, event: object, now: bool) -> None:
        if isinstance(event, TypingStartEvent):
            self.delivered.append(f"typing {event.d.user_id}")
        else:
            assert isinstance(event, MessageRow)
            self.delivered.append(event.content)


async def send(node: Node, text: str, channel_id: int = TEXT) -> Posted:
    return await (await node.owners.post(new(text, channel_id))).answer()


async def post_with(node: Node, text: str, *, deadline_s: float) -> outcome.Outcome[Posted]:
    """Post through `post_with` and wait for the outcome handed to the callback."""
    done: list[outcome.Outcome[Posted]] = []
    answered = trio.Event()

    def on_answer(result: outcome.Outcome[Posted]) -> None:
        done.append(result)
        answered.set()

    await node.owners.post_with(new(text), on_answer, deadline=trio.current_time() + deadline_s)
    await answered.wait()
    return done[0]


async def history(store: Store) -> list[str]:
    rows = await store.read(messages.history, TEXT, ALICE, limit=100)
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    return [r.content for r in rows]


class Proxy:
    """A TCP proxy in front of Redis for one node; `freeze()` stops all traffic through it (new
    connections too): the node is gone as far as Redis can tell (kill -9, a partition), and
    what the node sends Redis goes unanswered."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("redis://").split(":")
        self.host, self.upstream_port = host, int(port)
        self.scope = trio.CancelScope()
        self.url = ""
        self.frozen = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.url = f"redis://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            task_status.started()
            await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream(self.host, self.upstream_port) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, nursery.cancel_scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            async for data in source:
                if self.frozen.is_set():
                    await trio.sleep_forever()  # dropped: nothing passes any more
                await sink.send_all(data)
        except trio.BrokenResourceError:
            pass
        scope.cancel()

    def freeze(self) -> None:
        self.frozen.set()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "relay.db") as opened:
        await opened.write(populate)
        yield opened


@contextlib.asynccontextmanager
async def two_nodes(
    store: Store, url_a: str, url_b: str, *, ttl_s: float, idle_s_a: float | None = None
) -> AsyncIterator[tuple[Node, Node, trio.Nursery]]:
    """Nodes A and B, each with its own Redis client (A's through `url_a`), on a key prefix of
    their own, their owners running in the nursery yielded."""
    prefix = f"test-owners-{next(_prefixes)}:"
    async with (
        coredis.Redis.from_url(url_a, decode_responses=False) as client_a,
        coredis.Redis.from_url(url_b, decode_responses=False) as client_b,
        trio.open_nursery() as nursery,
    ):
        a = Node("a", client_a, store, prefix, ttl_s=ttl_s, idle_s=idle_s_a)
        b = Node("b", client_b, store, prefix, ttl_s=ttl_s)
        await nursery.start(a.owners.run)
        await nursery.start(b.owners.run)
        yield a, b, nursery


async def test_a_post_at_the_non_owner_commits_through_the_owner_in_order(
    redis: RedisServer, store: Store
) -> None:
    async with two_nodes(store, redis.url, redis.url, ttl_s=5.0) as (a, b, nursery):
        with trio.fail_after(10):
            first = await send(a, "0")  # nobody owned the channel: A took it
            assert a.owners.owns(TEXT)
            asked = [await b.owners.post(new(str(i))) for i in range(1, 16)]
            # A channel event from B goes through the owner too, in order with B's posts.
            await b.owners.publish(TEXT, typing("b"))
            asked += [await b.owners.post(new(str(i))) for i in range(16, 31)]
            # Sends from both nodes, interleaved, keep one order: the owner's.
            also = [await a.owners.post(new(f"a{i}")) for i in range(3)]
            posted = [await x.answer() for x in asked + also]
            got: list[outcome.Outcome[Posted]] = []
            done = trio.Event()

            def answered(result: outcome.Outcome[Posted]) -> None:
                got.append(result)
                done.set()

            await b.owners.post_with(new("with"), answered, deadline=trio.current_time() + 5)
            await done.wait()
            last = got[0].unwrap()
            # An error crosses too: the owner's write refused it.
            with pytest.raises(BadRequest):
                await send(a, "x", VOICE)  # refused, and A owns the channel now
            assert a.owners.owns(VOICE)
            with pytest.raises(BadRequest) as refused:
                await send(b, "y", VOICE)
        assert refused.value.code == "not_a_text_channel"
        by_text = {p.message.content: p.message.id for p in [first, *posted, last]}
        # Each node's posts keep the order it queued them in (B's reach the owner later than
        # A's own, so the two interleave as they arrived), and delivery order = id order =
        # history order.
        from_b = [str(i) for i in range(1, 31)]
        assert [t for t in a.delivered if t in from_b or t.startswith("typing")] == [
            *from_b[:15],
            "typing b",
            *from_b[15:],
        ]
        assert [t for t in a.delivered if t.startswith("a")] == ["a0", "a1", "a2"]
        assert a.delivered[0] == "0"
        assert a.delivered[-1] == "with"
        assert len(a.delivered) == 36
        messages_delivered = [t for t in a.delivered if not t.startswith("typing")]
        assert [by_text[t] for t in messages_delivered] == sorted(by_text.values())
        assert await history(store) == messages_delivered
        assert not b.owners.owns(TEXT)
        assert b.delivered == []
        assert b.owners.forwarded == 33
        assert a.owners.served == 31
        nursery.cancel_scope.cancel()  # a clean shutdown of both nodes
    async with coredis.Redis.from_url(redis.url, decode_responses=False) as client:
        leases = [f"{a.prefix}lease:channel:{TEXT}", f"{a.prefix}lease:channel:{VOICE}"]
        assert await client.exists(leases) == 0  # released: the next post anywhere takes them


async def test_a_dead_owner_is_taken_over_within_the_ttl_losing_nothing_acknowledged(
    redis: RedisServer, store: Store
) -> None:
    ttl_s = 0.5
    proxy = Proxy(redis.url)
    async with trio.open_nursery() as outer:
        await outer.start(proxy.run)
        async with two_nodes(store, proxy.url, redis.url, ttl_s=ttl_s) as (a, b, nursery):
            acknowledged: list[str] = []
            with trio.fail_after(10):
                acknowledged.append((await send(a, "a0")).message.content)
                for i in range(5):
                    acknowledged.append((await send(b, f"b{i}")).message.content)
                assert a.owners.owns(TEXT)
                proxy.freeze()  # A is gone for Redis (and for B): no renewal, no reading
                cut_at = trio.current_time()
                refused = 0
                i = 0
                while not b.owners.owns(TEXT):
                    i += 1
                    result = await post_with(b, f"t{i}", deadline_s=0.2)
                    busy: Unavailable | None = None
                    try:
                        acknowledged.append(result.unwrap().message.content)
                    except Unavailable as e:
                        busy = e
                    if busy is not None:
                        assert busy.code == "channel_busy"  # not acknowledged: may be lost
                        refused += 1
                taken_after = trio.current_time() - cut_at
                for j in range(5):
                    acknowledged.append((await send(b, f"c{j}")).message.content)
                # A, cut off from Redis, refuses its own clients' sends, and keeps running.
                for _ in range(2):
                    cut_off = await post_with(a, "from a", deadline_s=0.3)
                    with pytest.raises(Unavailable, match="retry"):
                        cut_off.unwrap()
            assert refused >= 1  # posts forwarded to the dead owner were not acknowledged
            # The documented takeover time (the ttl), plus slack for a loaded machine.
            assert taken_after < ttl_s + 3
            stored = await history(store)
            assert [text for text in stored if text in acknowledged] == acknowledged
            assert stored[-5:] == [f"c{j}" for j in range(5)]
            assert b.delivered[-5:] == [f"c{j}" for j in range(5)]
            assert not a.owners.owns(TEXT)  # A noticed it lost the lease
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()


async def test_an_owner_paused_past_its_ttl_cannot_commit_after_the_takeover(
    redis: RedisServer, store: Store
) -> None:
    # A long ttl: A's renewal loop does not notice in time, as if A was paused (SIGSTOP)
    # right when its lease expired and resumed after B took over.
    async with two_nodes(store, redis.url, redis.url, ttl_s=30.0) as (a, b, nursery):
        with trio.fail_after(10):
            await send(a, "a0")
            old = await a.owners.leases.owner(f"channel:{TEXT}")
            assert old is not None
            await a.client.delete([a.owners.leases.key(f"channel:{TEXT}")])  # expired
            await send(b, "b0")  # nobody held it: B takes it (a newer token) and commits
            assert b.owners.owns(TEXT)
            assert a.owners.owns(TEXT)  # A has not noticed yet
            late = await send(a, "a-late")  # A's write is refused by the fence, rerouted to B
        assert late.message.content == "a-late"
        assert not a.owners.owns(TEXT)
        assert a.delivered == ["a0"]
        assert b.delivered == ["b0", "a-late"]
        assert await history(store) == ["a0", "b0", "a-late"]
        new_owner = await b.owners.leases.owner(f"channel:{TEXT}")
        assert new_owner is not None
        assert new_owner[0] == "b"
        assert new_owner[1] > old[1]
        assert await store.read(fencing.newest, TEXT) == new_owner[1]
        nursery.cancel_scope.cancel()


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


async def test_an_owner_process_stopped_with_sigstop_cannot_commit_after_the_takeover(
    redis: RedisServer, store: Store, tmp_path: Path
) -> None:
    prefix = f"test-owners-{next(_prefixes)}:"
    ttl_s = 0.3
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.cluster.paused_owner", redis.url,
         str(tmp_path / "relay.db"), prefix, str(TEXT), str(ALICE), str(ttl_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        async with (
            coredis.Redis.from_url(redis.url, decode_responses=False) as client,
            trio.open_nursery() as nursery,
        ):
            b = Node("b", client, store, prefix, ttl_s=ttl_s)
            await nursery.start(b.owners.run)
            with trio.fail_after(20):
                told = await read_line(process.stdout)
                assert told.startswith("owner ")
                old_token = int(told.split()[1])
                process.send_signal(signal.SIGSTOP)  # paused with the lease in hand
                for _ in range(200):  # its lease expires in Redis (it renews nothing)
                    if await b.owners.leases.owner(f"channel:{TEXT}") is None:
                        break
                    await trio.sleep(0.02)
                await send(b, "b0")  # B takes the channel over and commits
                process.send_signal(signal.SIGCONT)
                await process.stdin.send_all(b"go\n")  # its write, as it wakes up
                assert await read_line(process.stdout) == "refused"
                assert await process.wait() == 0
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert await history(store) == ["b0"]
    newest = await store.read(fencing.newest, TEXT)
    assert newest is not None
    assert newest > old_token


async def test_an_idle_channel_is_given_up_and_taken_by_the_next_node_that_posts(
    redis: RedisServer, store: Store
) -> None:
    async with two_nodes(store, redis.url, redis.url, ttl_s=30.0, idle_s_a=0.05) as (
        a,
        b,
        nursery,
    ):
        with trio.fail_after(5):
            first = await send(a, "a0")

            async def released() -> bool:  # its actor idled out, and the lease went with it
                owner = await a.owners.leases.owner(f"channel:{TEXT}")
                return owner is None and not a.owners.owns(TEXT)

            for _ in range(200):
                if await released():
                    break
                await trio.sleep(0.02)
            assert await released()
            second = await send(b, "b0")  # at once: no ttl to wait for
        assert b.owners.owns(TEXT)
        assert second.message.id > first.message.id
        assert b.owners.forwarded == 0
        nursery.cancel_scope.cancel()


# -- the wire ------------------------------------------------------------------------------------

ids = st.integers(min_value=0, max_value=2**63 - 1)
texts = st.text(max_size=40)
new_messages = st.builds(
    NewMessage,
    channel_id=ids,
    author_id=ids,
    content=texts,
    nonce=st.none() | texts,
    reply_to=st.none() | ids,
    mentions=st.lists(ids, max_size=3),
    now_ms=ids,
    flags=st.integers(0, 7),
    role_mentions=st.lists(ids, max_size=3),
)
rows = st.builds(
    MessageRow,
    id=ids,
    channel_id=ids,
    server_id=st.none() | ids,
    author=st.builds(AuthorRow, id=ids, username=texts, display_name=st.none() | texts),
    content=texts,
    nonce=st.none() | texts,
    reply_to=st.none() | ids,
    edited_at=st.none() | ids,
    mentions=st.lists(ids, max_size=3),
    reactions=st.just([]),
)
errors = st.builds(
    WireError,
    kind=st.sampled_from(["NotFound", "not_owner", "RateLimited", "internal"]),
    message=texts,
    code=texts,
    fields=st.none() | st.dictionaries(texts, texts, max_size=2),
    retry_after_s=st.floats(0, 1e6),
)
events = st.builds(
    TypingStartEvent,
    d=st.builds(TypingStart, channel_id=texts, user_id=texts, timestamp=texts),
)
envelopes = (
    st.builds(ForwardedPost, request_id=ids, requester=texts, deadline_ms=ids, new=new_messages)
    | st.builds(
        ForwardedEvent,
        request_id=ids,
        requester=texts,
        deadline_ms=ids,
        channel_id=ids,
        event=events,
    )
    | st.builds(
        Answer,
        request_id=ids,
        posted=st.none() | st.builds(Posted, message=rows, created=st.booleans()),
        error=st.none() | errors,
    )
)


@settings(max_examples=60)
@given(envelopes)
def test_every_envelope_round_trips(envelope: ForwardedPost | ForwardedEvent | Answer) -> None:
    assert wire.decode(wire.encode(envelope)) == envelope


@given(st.binary(max_size=64))
def test_bytes_that_are_no_envelope_raise_a_decode_error(data: bytes) -> None:
    with contextlib.suppress(msgspec.DecodeError):  # and nothing else
        wire.decode(data)


def test_errors_cross_with_their_class_code_and_details() -> None:
    found = wire.error_of(wire.wire_error(NotFound("gone", code="unknown_channel")))
    assert isinstance(found, NotFound)
    assert (found.code, found.message) == ("unknown_channel", "gone")
    slow = RateLimited("slowmode", limit=1, retry_after_s=2.5, limit_name="slowmode")
    slow.code = "slowmode"
    crossed = wire.error_of(wire.wire_error(slow))
    assert isinstance(crossed, RateLimited)
    assert (crossed.code, crossed.retry_after_s, crossed.headers) == ("slowmode", 2.5, slow.headers)
    assert isinstance(wire.error_of(wire.wire_error(fencing.StaleOwner(1, 2))), wire.NotOwner)
    stopped = wire.error_of(wire.wire_error(ActorStopped("channel:1")))
    assert isinstance(stopped, Unavailable)
    assert stopped.code == "channel_busy"  # it may have committed: retry with the nonce
    internal = wire.error_of(wire.wire_error(KeyError("a bug")))
    assert type(internal) is RelayError
    assert "a bug" not in internal.message
