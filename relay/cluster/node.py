"""This process as a node of a cluster: its Redis client, worker-id lease, broker and fan-out.

Resource handling: `run_node` opens the Redis client (one pool for the process) at the top of
the services' task tree, leases the worker id, runs the broker and hands back a `Node`; the
fan-out's tasks are started in the node's own nursery (`start_fanout`), inside the client's
lifetime, so their shutdown (removing this node's online entries) can still reach Redis.
Releasing the worker id is the last thing before the client closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from relay.cluster.broker import Broker, open_redis
from relay.cluster.fanout import BrokerFanout, LocalHub
from relay.cluster.limits import RedisBudget
from relay.cluster.workers import WorkerLease

if TYPE_CHECKING:
    import coredis

    from relay.chat.context import Chat
    from relay.config import Settings


@dataclass
class Node:
    settings: Settings
    redis: coredis.Redis[bytes]
    broker: Broker
    worker_id: int
    nursery: trio.Nursery
    fanout: BrokerFanout | None = None

    async def start_fanout(self, hub: LocalHub) -> BrokerFanout:
        """The cross-process fan-out around this node's hub, running."""
        self.fanout = BrokerFanout(hub, self.broker, self.settings)
        await self.nursery.start(self.fanout.run)
        return self.fanout

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
    assert settings.broker is not None
    async with open_redis(settings.broker) as redis:
        broker = Broker(redis, settings)
        lease = WorkerLease(redis, broker.node_id, settings.worker_lease_s)
        worker_id = await lease.acquire(settings.worker_id)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lease.keep)
                await nursery.start(broker.run)
                task_status.started(Node(settings, redis, broker, worker_id, nursery))
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await lease.release()
