"""Where each node can be reached directly: its REST and realtime URLs in Redis, for the things
that live on one node at a time and whose clients are told where to go (voice channels, app
rooms; docs/cluster.md).

Each node writes `relay:url:<node>` (its realtime listener, ws:// or wss://) and
`relay:http:<node>` (its REST listener), from `node_realtime_url` and `node_http_url` or else
the listeners' own addresses, expiring after `worker_lease_s` and renewed every third of it: a
node that died is no longer found once they expire.

Resource handling: `run()` renews until cancelled, then deletes them (bounded by LEAVE_S).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import coredis

log = logging.getLogger("relay.cluster")
LEAVE_S = 1.0


def ws_key(node_id: str) -> str:
    return f"relay:url:{node_id}"


def http_key(node_id: str) -> str:
    return f"relay:http:{node_id}"


@dataclass(frozen=True, slots=True)
class Place:
    """A node's public URLs (no trailing slash)."""

    ws: str
    http: str


class NodeUrls:
    def __init__(self, redis: coredis.Redis[bytes], node_id: str, ttl_s: float) -> None:
        self.redis = redis
        self.node_id = node_id
        self.ttl_s = ttl_s
        self.own: Place | None = None

    async def lookup(self, node_id: str) -> Place | None:
        """Another node's URLs, or None if it is gone (or never said)."""
        ws, http = await self.redis.mget([ws_key(node_id), http_key(node_id)])
        if ws is None or http is None:
            return None
        return Place(ws.decode(), http.decode())

    async def _write(self, place: Place) -> None:
        ttl_ms = round(self.ttl_s * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(ws_key(self.node_id), place.ws.encode(), px=ttl_ms)
            pipe.set(http_key(self.node_id), place.http.encode(), px=ttl_ms)

    async def run(
        self, place: Place, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Publish `place` as this node's, and keep it there."""
        self.own = Place(place.ws.rstrip("/"), place.http.rstrip("/"))
        await self._write(self.own)
        task_status.started()
        try:
            while True:
                await trio.sleep(self.ttl_s / 3)
                try:
                    await self._write(self.own)
                except Exception:
                    log.warning("node URLs not renewed", exc_info=True)
        finally:
            # Leaving: the other nodes see at once that this one is gone (they drop its voice
            # states, and stop sending clients here).
            with trio.move_on_after(LEAVE_S, shield=True):
                try:
                    await self.redis.delete([ws_key(self.node_id), http_key(self.node_id)])
                except Exception:
                    log.warning("node URLs not removed", exc_info=True)
