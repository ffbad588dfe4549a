"""Cluster mode: several Relay processes sharing a Redis broker (docs/cluster.md).

Imported only when `broker` is set (the one-process default never loads coredis); `stats` alone
is read by /readyz and /metrics. The broker part: the wire envelope between nodes (`envelope`),
the broker client (`broker`), the fan-out that publishes to it and delivers what it hears
(`fanout`), who is online on the other nodes (`online`), worker-id leases (`workers`), rate
limits and gateway connection caps shared through Redis (`limits`, `caps`), and this process
as a node, tying them together (`node`). Ownership (docs/ownership.md): leases with fencing
tokens (`lease`), sends forwarded to a channel's owner (`owners`), and gateway sessions' replay
buffers in Redis Streams (`replay`). Where the rest lives (docs/cluster.md): each node's
public URLs (`places`), voice channels served by one node at a time (`voice`), app rooms on the
node that made them (`rooms`); byte-relay ids are relay.byterelay.cluster's.
"""
