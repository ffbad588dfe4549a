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
    owned_channels: int = 0  # channels whose owner this node is now (docs/ownership.md)
    forwarded: int = 0  # posts and channel events this node sent to another node's owner
    served: int = 0  # posts forwarded by other nodes that this node committed as owner
    sessions_taken_over: int = 0  # gateway sessions resumed here from another node
    caught_up: int = 0  # events from the topic logs delivered to sessions taken over here
    catch_ups_refused: int = 0  # takeovers refused: a topic log no longer held what was missed
