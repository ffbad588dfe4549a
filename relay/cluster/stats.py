"""What /readyz reports of a cluster node (no coredis import: the route loads this always)."""

from __future__ import annotations

import msgspec


class BrokerHealth(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    worker_id: int  # the snowflake worker id this process leased or was given
    connected: bool  # the pub/sub connection is up
    subscriptions: int  # topics subscribed to now
    lag_s: float  # how late the watchdog's latest probe came back through Redis
    published: int  # publications sent so far
    publish_dropped: int  # publications dropped (queue full, or Redis failed)
    received: int  # other nodes' publications heard
    delivered: int  # of those, delivered to this node's sessions
    resyncs: int  # times this node fell behind (or lost the broker) and resynced
    resynced_sessions: int  # sessions ended by those resyncs (closed with 4014)
