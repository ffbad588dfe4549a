"""The fan-out across processes: `BrokerFanout` wraps this node's hub (the in-process fan-out,
relay.gateway.hub) and the broker (relay.cluster.broker).

Everything the chat layer hands it is delivered locally, as in one process, and published once
to the broker's topic for it (relay.cluster.envelope): `to_server` on the server's topic,
`to_users` on each user's, `announce` on `relay:changes`; channel events and new messages at
their channel actor's turn (the hub's `on_channel_event`) on their server's topic, or for a DM
on each recipient's. The node subscribes to exactly the topics its local sessions need (a
server's while one of its members is online here, a user's while they have a session here,
and the two global ones), following the hub's indexes, and delivers what it hears to its local
sessions, encoding each event once as the hub does. It skips its own publications (it delivered
them already).

New messages (`post`, `post_with`) and channel events (`to_channel`) go to the channel's owner
(relay.cluster.owners: one node per channel at a time, holding its lease), forwarded through
Redis when that is another node. The owner's channel actor (built by the hub, with a fenced
write) assigns ids, commits, and hands each event to the hub's `_publish`: delivered to the
owner's own sessions and published here (`_channel_event`), so every node delivers each event
of a channel in the owner's order, and each session gets it once.

Falling behind: the broker's inbox is bounded (`broker_queue`); when it overflows, or a message
waited longer than `broker_max_lag_s` before its turn, or the pub/sub connection was lost, the
messages for some topics were lost: the sessions that needed them are ended and closed with
4014 (RESYNC) so that their clients IDENTIFY again (`_behind`); a lost global topic (changes,
presence) ends every session here and drops every permission view.

Resource handling: `run()` owns the delivering task, the subscription follower and the online
directory's renewal; the broker's tasks are the broker's.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import trio

from relay.cluster import envelope
from relay.cluster.broker import frame
from relay.cluster.envelope import (
    CHANGES,
    PRESENCE,
    ChangeCast,
    ChannelCast,
    OnlineCast,
    PresenceCast,
    ServerCast,
    UserCast,
    as_event,
    server_topic,
    user_topic,
)
from relay.cluster.online import ONLINE_RENEW_S, OnlineDirectory, entry, hash_key
from relay.cluster.topiclog import OWN, PUB_IDS, SYNC, Entry, Mark, Tracker, Trimmed, read_after

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping

    import outcome

    from actors import Asked, Reply
    from relay.chat.events import ChatEvent
    from relay.chat.fanout import Change
    from relay.chat.views import Views
    from relay.cluster.broker import Broker
    from relay.cluster.owners import ChannelOwners
    from relay.config import Settings
    from relay.storage.audience import ChannelAudience
    from relay.storage.messages import NewMessage, Posted

log = logging.getLogger("relay.cluster")


def _channel_of(entry: Entry) -> int | None:
    """The server channel a logged publication is about, if any."""
    try:
        cast = envelope.decode(entry.payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if isinstance(cast, ChannelCast) and cast.audience.server_id is not None:
        return cast.audience.channel_id
    return None


FOLLOW_EVERY_S = 0.02  # index changes within this long share one subscription update
_SERVER = envelope.PREFIX + "s:"
_USER = envelope.PREFIX + "u:"


class LocalHub(Protocol):
    """What the fan-out needs of this node's hub (relay.gateway.hub.Hub)."""

    views: Views
    on_channel_event: Callable[[ChannelAudience, ChatEvent], Callable[[], None] | None] | None
    on_presence: Callable[[int, str, str | None, list[int]], None] | None
    on_indexes_changed: Callable[[], None] | None
    online_elsewhere: Callable[[int], bool] | None

    @property
    def by_user(self) -> Mapping[int, Collection[object]]: ...
    @property
    def online_members(self) -> Mapping[int, Collection[int]]: ...

    def to_server(self, server_id: int, event: ChatEvent) -> None: ...
    def to_users(self, user_ids: Iterable[int], event: ChatEvent, *, dm: bool = False) -> None: ...
    def announce(self, change: Change) -> None: ...
    def online(self, server_id: int) -> Collection[int]: ...
    def deliver_to_user(self, user_id: int, event: ChatEvent, *, dm: bool = False) -> None: ...
    def deliver_one(self, session: Any, event: ChatEvent, *, dm: bool = False) -> None: ...
    async def deliver_channel(
        self, info: ChannelAudience, event: ChatEvent, write_now: bool = False
    ) -> None: ...
    def dm_recipients(self, info: ChannelAudience) -> Collection[int]: ...
    def remote_presence(
        self, user_id: int, status: str, activity: str | None, server_ids: Iterable[int]
    ) -> None: ...
    def resync(
        self, server_ids: Iterable[int], user_ids: Iterable[int], *, everyone: bool = False
    ) -> int: ...


class BrokerFanout:
    """`relay.chat.fanout.Fanout` across processes (module doc)."""

    def __init__(
        self, hub: LocalHub, broker: Broker, owners: ChannelOwners, settings: Settings
    ) -> None:
        self.hub = hub
        self.owners = owners
        self.broker = broker
        self.node_id = broker.node_id
        self.max_lag_s = settings.broker_max_lag_s
        self.directory = OnlineDirectory(self.node_id)
        self._published_online: dict[int, frozenset[int]] = {}  # server -> as last published
        self._indexes_changed = trio.Event()
        self.delivered = 0  # broker messages delivered here (other nodes' publications)
        self.resynced_sessions = 0  # sessions ended because this node fell behind
        # Topic logs (relay.cluster.topiclog): this node's count of each logged topic, its
        # publications' ids (random start: a node id reused after a restart does not make its
        # old ids look like new ones), its channel events published but not yet delivered here,
        # and the topics a RESUME being prepared holds subscribed.
        self.tracker = Tracker()
        self.logging = broker.logging
        self.log_size = settings.broker_topic_log
        self._next_pub = secrets.randbelow(PUB_IDS - 1) + 1
        self._delivering: dict[int, tuple[trio.Event, list[str]]] = {}
        self._processing: str | None = None  # the topic whose message is being delivered
        self._pinned: Counter[str] = Counter()
        self._synced = trio.Event()  # set (and replaced) when a topic's count starts
        # Told each logged topic whose count starts here (its sessions' states are written
        # again, now with its mark): relay.services.
        self.on_synced: Callable[[str], None] = lambda topic: None
        self.caught_up = 0  # events delivered to sessions taken over from the topic logs
        self.catch_ups_refused = 0  # takeovers whose logs did not hold what was missed
        hub.on_channel_event = self._channel_event
        hub.on_presence = self._presence
        hub.on_indexes_changed = self._indexes_changed.set
        hub.online_elsewhere = self.directory.online_elsewhere
        broker.on_behind = self._behind
        broker.on_lost = self.tracker.lost
        broker.on_unsubscribed = self.tracker.forget

    # -- the chat layer's Fanout -----------------------------------------------------------------

    async def post(self, new: NewMessage) -> Asked[Posted]:
        # To the channel's owner, wherever it is (relay.cluster.owners): its actor assigns
        # the id, commits with its fencing token and publishes the event to every node.
        return await self.owners.post(new)

    async def post_with(
        self,
        new: NewMessage,
        on_answer: Callable[[outcome.Outcome[Posted]], object],
        *,
        deadline: float = math.inf,
    ) -> Reply[Posted]:
        # The same, for the gateway's pipelined sends (deadline inf: the owners' own).
        return await self.owners.post_with(new, on_answer, deadline=deadline)

    async def to_channel(self, channel_id: int, event: ChatEvent) -> None:
        # Through the owner's channel actor, in order with its messages; published at its turn.
        await self.owners.publish(channel_id, event)

    def to_server(self, server_id: int, event: ChatEvent) -> None:
        self.hub.to_server(server_id, event)
        topic, pub = server_topic(server_id), self._pub()
        self._delivered(topic, pub)
        self._publish(topic, ServerCast(self.node_id, server_id, as_event(event)), pub)

    def to_users(self, user_ids: Iterable[int], event: ChatEvent, *, dm: bool = False) -> None:
        user_ids = list(user_ids)
        self.hub.to_users(user_ids, event, dm=dm)
        pub = self._pub()
        for user_id in user_ids:
            topic = user_topic(user_id)
            self._delivered(topic, pub)
            self._publish(topic, UserCast(self.node_id, user_id, as_event(event), dm), pub)

    def announce(self, change: Change) -> None:
        self.hub.announce(change)
        self._publish(CHANGES, ChangeCast(self.node_id, change))

    def online(self, server_id: int) -> Collection[int]:
        return self.directory.online(server_id, self.hub.online(server_id))

    # -- publishing ------------------------------------------------------------------------------

    def _publish(self, topic: str, cast: envelope.Envelope, pub: int = 0) -> None:
        self.broker.publish(topic, envelope.encode(cast), pub)

    def _pub(self) -> int:
        """A new publication id (0 when topics are not logged)."""
        if not self.logging:
            return 0
        pub = self._next_pub
        self._next_pub = pub % (PUB_IDS - 1) + 1
        return pub

    def _delivered(self, topic: str, pub: int) -> None:
        # Only while subscribed: its echo comes back (and takes it out of `ahead`).
        if pub and topic in self.broker.subscribed:
            self.tracker.delivered(topic, pub)

    def _channel_event(self, info: ChannelAudience, event: ChatEvent) -> Callable[[], None] | None:
        """Publish a channel event (its actor's turn), before the hub delivers it here; the
        answer is called once it has been (then its echo may count: `_deliver_forever`)."""
        pub = self._pub()
        if info.server_id is not None:
            cast = ChannelCast(self.node_id, info, as_event(event))
            topics = [server_topic(info.server_id)]
            self._publish(topics[0], cast, pub)
        else:
            topics = []
            for user_id in self.hub.dm_recipients(info):
                topics.append(user_topic(user_id))
                cast = ChannelCast(self.node_id, info, as_event(event), user_id)
                self._publish(topics[-1], cast, pub)
        if not pub:
            return None
        done = trio.Event()
        self._delivering[pub] = (done, topics)

        def delivered() -> None:
            self._delivering.pop(pub, None)
            for topic in topics:
                self._delivered(topic, pub)
            done.set()

        return delivered

    def _presence(
        self, user_id: int, status: str, activity: str | None, servers: list[int]
    ) -> None:
        self._publish(PRESENCE, PresenceCast(self.node_id, user_id, status, activity, servers))

    # -- receiving -------------------------------------------------------------------------------

    async def _deliver_forever(self) -> None:
        async for at, topic, data, mark in self.broker.inbox:
            if trio.current_time() - at > self.max_lag_s:
                self.broker.resyncs += 1
                self._behind({topic} | self.broker.drain())
                continue
            if mark is not None and data == SYNC:
                self._heard(topic, mark, sync=True, own=False)
                continue
            if mark is not None and data == OWN:
                # Delivered here when it was published; it counts once that delivery is over.
                delivering = self._delivering.get(mark.pub)
                if delivering is not None:
                    await delivering[0].wait()
                self._heard(topic, mark, sync=False, own=True)
                continue
            try:
                cast = envelope.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                log.warning("undecodable broker message", extra={"topic": topic, "error": str(e)})
                if mark is not None:
                    self._heard(topic, mark, sync=False, own=False)
                continue
            if cast.node == self.node_id:
                continue  # delivered here when it was published (the broker drops them unread)
            self._processing = topic
            await self._deliver(cast)
            self._processing = None
            if mark is not None:
                self._heard(topic, mark, sync=False, own=False)

    def _heard(self, topic: str, mark: Mark, *, sync: bool, own: bool) -> None:
        """Count a logged topic's message; a gap in the count is a loss: resync."""
        started = topic not in self.tracker.marks
        if not self.tracker.heard(topic, mark, sync=sync, own=own):
            log.warning("a topic's log offsets skipped", extra={"topic": topic})
            self.broker.resyncs += 1
            self._behind({topic})
            return
        if started and topic in self.tracker.marks:
            synced, self._synced = self._synced, trio.Event()
            synced.set()
            self.on_synced(topic)

    async def _deliver(self, cast: envelope.Envelope) -> None:
        """Another node's publication to this node's sessions."""
        self.delivered += 1
        match cast:
            case ServerCast(_, server_id, event):
                self.hub.to_server(server_id, event)
            case UserCast(_, user_id, event, dm):
                self.hub.deliver_to_user(user_id, event, dm=dm)
            case ChannelCast(_, info, event, None):
                # As the channel actor does: write at once when nothing else is waiting.
                write_now = self.broker.inbox.statistics().current_buffer_used == 0
                await self.hub.deliver_channel(info, event, write_now)
            case ChannelCast(_, _, event, int() as user_id):
                self.hub.deliver_to_user(user_id, event, dm=True)
            case ChangeCast(_, change):
                self.hub.announce(change)
            case PresenceCast(node, user_id, status, activity, servers):
                if status == "offline" and (
                    user_id in self.hub.by_user
                    or self.directory.online_elsewhere(user_id, besides=node)
                ):
                    return  # gone from that node only: still online here or elsewhere
                self.hub.remote_presence(user_id, status, activity, servers)
            case OnlineCast(node, server_id, users):
                self.directory.heard(node, server_id, users)

    def _behind(self, topics: set[str]) -> None:
        """Messages for `topics` were lost here: end the sessions that needed them (4014), and
        count their logs afresh (from a new sync)."""
        self.tracker.forget(topics)
        self.broker.sync_again(topics)
        servers = {int(t.removeprefix(_SERVER)) for t in topics if t.startswith(_SERVER)}
        users = {int(t.removeprefix(_USER)) for t in topics if t.startswith(_USER)}
        everyone = CHANGES in topics or PRESENCE in topics
        if everyone:
            self.hub.views.invalidate_all()
        ended = self.hub.resync(servers, users, everyone=everyone)
        self.resynced_sessions += ended
        log.warning(
            "fell behind the broker: sessions resync",
            extra={"topics": len(topics), "sessions": ended, "everyone": everyone},
        )

    # -- a session taken over: what it missed from the topic logs -------------------------------

    def marks(self, topics: Iterable[str]) -> dict[str, Mark]:
        """This node's marks of those of `topics` it counts (a session's, as its frames stand)."""
        found: dict[str, Mark] = {}
        for topic in topics:
            mark = self.tracker.mark(topic)
            if mark is not None:
                found[topic] = mark
        return found

    async def catch_up(
        self, node: str, marks: dict[str, Mark], topics: list[str], timeout_s: float
    ) -> Callable[[Any], int] | None:
        """For a session taken over from `node`, whose frames were complete up to `marks`: the
        function that delivers it what its `topics` carried since and this node has processed
        (its own deliveries after that go to it live); to be called with the session right
        after the hub has it, with no await between. None if that is impossible: a topic
        without a mark, a log trimmed past its mark or of another epoch, or Redis failing."""
        if not self.logging or any(t not in marks for t in topics):
            self.catch_ups_refused += 1
            return None
        self._pinned.update(topics)
        self._indexes_changed.set()
        try:
            with trio.move_on_after(timeout_s):
                return await self._catch_up(node, marks, topics)
        except Trimmed:
            pass
        except Exception:  # Redis failing, or an odd answer: the client IDENTIFYs again
            log.warning("topic logs not read", exc_info=True)
        finally:
            self._pinned.subtract(topics)
            self._pinned = +self._pinned
            self._indexes_changed.set()
        self.catch_ups_refused += 1
        return None

    async def _catch_up(
        self, node: str, marks: dict[str, Mark], topics: list[str]
    ) -> Callable[[Any], int] | None:
        tracker = self.tracker
        while missing := [t for t in topics if t not in tracker.marks]:
            self.broker.sync_again(missing)  # subscribed but not counted (a failed sync)
            await self._synced.wait()  # subscribed and counted here
        read: dict[str, list[Entry]] = {t: [] for t in topics}
        while True:
            for topic in topics:  # each log from where the last read ended (bounded)
                after = read[topic][-1].offset if read[topic] else marks[topic].offset
                start = Mark(marks[topic].epoch, after)
                while True:
                    entries, last = await read_after(self.broker.redis, topic, start, self.log_size)
                    read[topic] += entries
                    if len(read[topic]) > self.log_size:
                        raise Trimmed(topic)  # more than the log keeps: some are gone
                    if not entries or entries[-1].offset >= last:
                        break
                    start = Mark(start.epoch, entries[-1].offset)
            await self._load_views(read)
            # From here to the hub's registration of the session, nothing awaits: what this
            # node processed so far is what the session gets from the logs; the rest, live.
            plan = self._plan(node, marks, topics, read)
            if plan is not None:
                return plan
            await trio.sleep(0.01)

    async def _load_views(self, read: dict[str, list[Entry]]) -> None:
        """The permission views of the servers whose channel events were read, each knowing
        the channels they name (a channel created since its view loaded: reloaded)."""
        for topic, entries in read.items():
            if not topic.startswith(_SERVER):
                continue
            server_id = int(topic.removeprefix(_SERVER))
            view = await self.hub.views.get(server_id)
            channels = {c for c in map(_channel_of, entries) if c is not None}
            if view is not None and not all(view.has_channel(c) for c in channels):
                self.hub.views.invalidate(server_id)
                await self.hub.views.get(server_id)

    def _plan(
        self, node: str, marks: dict[str, Mark], topics: list[str], read: dict[str, list[Entry]]
    ) -> Callable[[Any], int] | None:
        """The deliveries, if what was read covers what this node has processed (or delivered
        of its own) on every topic and nothing of them is half-way delivered; else None."""
        tracker = self.tracker
        if self._processing in topics or any(
            t in topics for _, ts in self._delivering.values() for t in ts
        ):
            return None
        chosen: list[tuple[str, envelope.Envelope]] = []
        for topic in topics:
            known = tracker.marks.get(topic)
            if known is None or known[0] != marks[topic].epoch:
                return None
            upto, ahead = known[1], tracker.ahead.get(topic, set())
            entries = read[topic]
            last = entries[-1].offset if entries else marks[topic].offset
            mine = {e.pub for e in entries if e.node == self.node_id}
            if last < upto or not ahead <= mine:
                return None  # published since the read: read again
            skip = set(marks[topic].ahead)
            for e in entries:
                if e.node == node and e.pub in skip:
                    continue  # its frames already held it
                if e.offset <= upto or (e.node == self.node_id and e.pub in ahead):
                    try:
                        chosen.append((topic, envelope.decode(e.payload)))
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        continue
        for topic in topics:
            if (
                topic.startswith(_SERVER)
                and self.hub.views.cached(int(topic.removeprefix(_SERVER))) is None
            ):
                return None  # invalidated while reading: load it again

        def deliver(session: Any) -> int:
            delivered = 0
            for _, cast in chosen:
                delivered += self._catch_up_one(session, cast)
            self.caught_up += delivered
            return delivered

        return deliver

    def _catch_up_one(self, session: Any, cast: envelope.Envelope) -> int:
        """One logged publication to one session, as live delivery filters it."""
        hub, user_id = self.hub, session.user_id
        match cast:
            case ServerCast(_, server_id, event):
                if user_id in hub.online(server_id):
                    hub.deliver_one(session, event)
                    return 1
            case ChannelCast(_, info, event, None):
                view = None if info.server_id is None else hub.views.cached(info.server_id)
                if (
                    view is not None
                    and user_id in hub.online(view.server_id)
                    and view.can_view(user_id, info.channel_id)
                ):
                    hub.deliver_one(session, event)
                    return 1
            case UserCast(_, uid, event, dm) if uid == user_id:
                hub.deliver_one(session, event, dm=dm)
                return 1
            case ChannelCast(_, _, event, int() as uid) if uid == user_id:
                hub.deliver_one(session, event, dm=True)
                return 1
        return 0

    # -- following the hub's indexes -------------------------------------------------------------

    async def _follow_indexes(self) -> None:
        """Keep the subscriptions and this node's published online sets in step with the hub's
        indexes, a batch of changes at a time."""
        while True:
            await self._indexes_changed.wait()
            await trio.sleep(FOLLOW_EVERY_S)
            self._indexes_changed = trio.Event()
            self.hub.on_indexes_changed = self._indexes_changed.set
            online = self.hub.online_members
            wanted = {CHANGES, PRESENCE, *self._pinned}
            wanted.update(user_topic(u) for u in self.hub.by_user)
            wanted.update(server_topic(s) for s in online)
            self.broker.want(wanted)
            changed = {
                s: frozenset(online.get(s, ()))
                for s in {*online, *self._published_online}
                if self._published_online.get(s) != frozenset(online.get(s, ()))
            }
            await self._publish_online(changed)

    async def _publish_online(self, changed: dict[int, frozenset[int]]) -> None:
        """Tell the other nodes this node's new online sets, and keep them in the hashes."""
        if not changed:
            return
        new = [s for s in changed if s not in self._published_online]
        for server_id, users in changed.items():
            # Not logged: it is no event of any session's (a RESUME elsewhere needs none).
            cast = OnlineCast(self.node_id, server_id, list(users))
            self.broker.publish(server_topic(server_id), envelope.encode(cast), log_it=False)
            if users:
                self._published_online[server_id] = users
            else:
                self._published_online.pop(server_id, None)
                self.directory.forget(server_id)
        await self._write_hashes(changed, seed=new)

    async def _write_hashes(self, servers: Mapping[int, frozenset[int]], seed: list[int]) -> None:
        """Write this node's entries for `servers`, and read the `seed` servers' hashes (new
        here: who is online on the other nodes)."""
        redis = self.broker.redis
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for server_id, users in servers.items():
                    if users:
                        pipe.hset(hash_key(server_id), {self.node_id: entry(users)})
                    else:
                        pipe.hdel(hash_key(server_id), [self.node_id])
                reads = [(s, pipe.hgetall(hash_key(s))) for s in seed]
            for server_id, fields in reads:
                expired = self.directory.load(server_id, await fields)
                if expired:
                    await redis.hdel(hash_key(server_id), expired)
        except Exception as e:  # Redis unreachable or answering oddly: retried at renewal
            log.warning("online directory not written", extra={"error": repr(e)})

    async def _renew_online(self) -> None:
        """Every ONLINE_RENEW_S: renew this node's entries and re-read the others' (dropping
        those of nodes that died)."""
        while True:
            await trio.sleep(ONLINE_RENEW_S)
            servers = dict(self._published_online)
            await self._write_hashes(servers, seed=list(servers))

    async def leave(self) -> None:
        """At shutdown: remove this node's online entries and tell the other nodes (best
        effort: the entries expire after ONLINE_TTL_S anyway)."""
        try:
            async with self.broker.redis.pipeline(transaction=False) as pipe:
                for server_id in self._published_online:
                    pipe.hdel(hash_key(server_id), [self.node_id])
                    gone = OnlineCast(self.node_id, server_id, [])
                    pipe.publish(
                        server_topic(server_id), frame(self.node_id, envelope.encode(gone))
                    )
        except Exception as e:
            log.warning("online entries not removed: %r", e)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver_forever)
            nursery.start_soon(self._follow_indexes)
            nursery.start_soon(self._renew_online)
            self._indexes_changed.set()  # the global topics now, and whatever sessions need
            task_status.started()
