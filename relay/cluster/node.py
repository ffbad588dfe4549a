"""This process as a node of a cluster: its Redis client, worker-id lease, broker and fan-out.

Resource handling: `run_node` opens the Redis client (one pool for the process) at the top of
the services' task tree, leases the worker id, runs the broker and hands back a `Node`; the
fan-out's tasks are started in the node's own nursery (`start_fanout`), inside the client's
lifetime. That part is shielded from the services' cancellation so that, once cancelled, the
node can still leave the cluster through Redis (its online entries removed and announced, its
worker id released) before its nursery and then the client close.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio

from relay.cluster.broker import Broker, open_redis
from relay.cluster.caps import SharedCaps
from relay.cluster.fanout import BrokerFanout, LocalHub
from relay.cluster.limits import RedisBudget
from relay.cluster.owners import ChannelOwners
from relay.cluster.sessions import ClusterSessions
from relay.cluster.stats import BrokerHealth
from relay.cluster.workers import WorkerLease

if TYPE_CHECKING:
    from collections.abc import Callable

    import coredis
    from sqlite_utils import Database

    from actors.channel import ChannelActor
    from relay.chat.context import Chat
    from relay.config import Settings
    from relay.storage.messages import NewMessage, Posted
    from relay.storage.sqlite.db import Store


LEAVE_S = 2.0  # at most this long to leave the cluster at shutdown


class ClusterHub(LocalHub, Protocol):
    """The hub, as the node needs it: also the builder of the channel actors it owns."""

    def channel_actor(
        self, channel_id: int, write: Callable[[Database, int, NewMessage], Posted]
    ) -> ChannelActor: ...


@dataclass
class Node:
    settings: Settings
    redis: coredis.Redis[bytes]
    broker: Broker
    worker_id: int
    nursery: trio.Nursery
    caps: SharedCaps
    fanout: BrokerFanout | None = None
    owners: ChannelOwners | None = None
    sessions: ClusterSessions | None = None
    stopping: trio.Event = field(default_factory=trio.Event)

    async def start_fanout(self, hub: ClusterHub, store: Store) -> BrokerFanout:
        """The cross-process fan-out around this node's hub, with the channel owners it
        posts through, running (the owners first: stopping the node releases their leases)."""
        s = self.settings
        owners = ChannelOwners(
            self.redis,
            store,
            self.broker.node_id,
            hub.channel_actor,
            ttl_s=s.lease_ttl_s,
            forward_timeout_s=s.send_timeout_s,
        )
        await self.nursery.start(owners.run)
        self.owners = owners
        self.fanout = BrokerFanout(hub, self.broker, owners, self.settings)
        await self.nursery.start(self.fanout.run)
        return self.fanout

    async def start_sessions(self) -> ClusterSessions:
        """Gateway sessions' leases and replay buffers in Redis, running (the replay buffers
        are written out and the leases released when the node stops)."""
        s = self.settings
        sessions = ClusterSessions(
            self.redis,
            self.broker.node_id,
            ttl_s=s.lease_ttl_s,
            replay_size=s.replay_size,
            window_s=s.resume_window_s,
        )
        await self.nursery.start(sessions.run)
        self.sessions = sessions
        return sessions

    def health(self) -> BrokerHealth:
        broker, fanout, owners, sessions = self.broker, self.fanout, self.owners, self.sessions
        return BrokerHealth(
            node_id=broker.node_id,
            worker_id=self.worker_id,
            connected=broker.connected,
            subscriptions=len(broker.subscribed),
            lag_s=round(broker.lag_s, 4),
            published=broker.published,
            publish_dropped=broker.publish_dropped,
            received=broker.received,
            delivered=fanout.delivered if fanout is not None else 0,
            resyncs=broker.resyncs,
            resynced_sessions=fanout.resynced_sessions if fanout is not None else 0,
            owned_channels=owners.owned() if owners is not None else 0,
            forwarded=owners.forwarded if owners is not None else 0,
            served=owners.served if owners is not None else 0,
            sessions_taken_over=sessions.taken_over if sessions is not None else 0,
            caught_up=fanout.caught_up if fanout is not None else 0,
            catch_ups_refused=fanout.catch_ups_refused if fanout is not None else 0,
        )

    def share_limits(self, chat: Chat) -> None:
        """The chat layer's per-user budgets, counted in Redis for every node at once."""
        window = self.settings.message_window_s
        s = self.settings
        chat.message_limiter = RedisBudget(self.redis, "message", s.message_rate, window)
        chat.action_limiter = RedisBudget(self.redis, "action", s.action_rate, window)
        chat.search_limiter = RedisBudget(self.redis, "search", s.search_rate, window)
        chat.bot_message_limiter = RedisBudget(self.redis, "bot", s.bot_message_rate, window)


async def run_node(
    settings: Settings, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
) -> None:
    """This process's node until cancelled; then it leaves the cluster (online entries,
    worker id) before the Redis client closes."""
    async with trio.open_nursery() as nursery:
        node: Node = await nursery.start(_shielded_node, settings)
        task_status.started(node)
        try:
            await trio.sleep_forever()
        finally:
            node.stopping.set()  # the shielded part leaves, then ends


async def _shielded_node(
    settings: Settings, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
) -> None:
    # Shielded: coredis's connections are tasks of the client's pool, and a cancellation of the
    # services would end them before this node could say it is leaving. `run_node` ends this by
    # setting `stopping`; leaving is bounded by LEAVE_S.
    with trio.CancelScope(shield=True):
        assert settings.broker is not None
        async with open_redis(settings.broker) as redis:
            broker = Broker(redis, settings)
            lease = WorkerLease(redis, broker.node_id, settings.worker_lease_s)
            worker_id = await lease.acquire(settings.worker_id)
            caps = SharedCaps(redis, broker.node_id, settings.worker_lease_s)
            await caps.announce()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lease.keep)
                nursery.start_soon(caps.keep_alive)
                await nursery.start(broker.run)
                node = Node(settings, redis, broker, worker_id, nursery, caps)
                task_status.started(node)
                await node.stopping.wait()
                with trio.move_on_after(LEAVE_S):
                    if node.sessions is not None:  # first: its clients RESUME elsewhere now
                        await node.sessions.leave()
                    if node.fanout is not None:
                        await node.fanout.leave()
                    await caps.leave()
                    await lease.release()
                nursery.cancel_scope.cancel()
