"""App rooms in cluster mode: a room lives on the node that created it, and clients that reach
another node are told where to go (docs/cluster.md#app-rooms).

The creating node takes the room's lease, `room:<id>` (relay.cluster.lease), before answering
the `POST /rooms`, and renews the leases of all its rooms every third of `lease_ttl_s` in
batches (one script per batch); a room that closes releases its lease. Another node asked about
a room it does not have looks the lease up (`elsewhere`) and answers with the owner node's URLs
(relay.cluster.places): REST with a 307 redirect, the WebSocket with a `moved` frame and close
4014. Room ids are unique snowflakes, so nobody else ever takes a room's lease: a renewal
refused (the key expired while Redis was unreachable) takes it again.

Resource handling: `run()` owns the release and renewal task.

Error handling: a Redis error while claiming leaves the room reachable on its own node only;
while looking up, the room is unknown (404 / `unknown_room`), as for a room that is gone.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

import trio

from relay.cluster.lease import Lease, Leases

if TYPE_CHECKING:
    import coredis

    from relay.cluster.places import NodeUrls, Place

log = logging.getLogger("relay.cluster")
RENEW_BATCH = 500


def room_name(room_id: int) -> str:
    return f"room:{room_id}"


class RoomPlaces:
    """`relay.chat.rooms.RoomCluster` for this node (module doc)."""

    def __init__(
        self, redis: coredis.Redis[bytes], node_id: str, urls: NodeUrls, ttl_s: float
    ) -> None:
        self.node_id = node_id
        self.urls = urls
        self.leases = Leases(redis, ttl_s=ttl_s)
        self.held: dict[int, Lease] = {}
        self._released: deque[Lease] = deque()
        self._wake = trio.Event()

    async def claim(self, room_id: int) -> None:
        try:
            lease = await self.leases.acquire(room_name(room_id), self.node_id)
        except Exception:
            log.warning("room lease not taken", extra={"room": room_id}, exc_info=True)
            return
        if lease is not None:
            self.held[room_id] = lease

    def released(self, room_id: int) -> None:
        lease = self.held.pop(room_id, None)
        if lease is not None:
            self._released.append(lease)
            self._wake.set()

    async def elsewhere(self, room_id: int) -> Place | None:
        """The URLs of the node holding the room, if another node does."""
        try:
            owner = await self.leases.owner(room_name(room_id))
            if owner is None or owner[0] == self.node_id:
                return None
            return await self.urls.lookup(owner[0])
        except Exception:
            log.warning("room owner not found", extra={"room": room_id}, exc_info=True)
            return None

    async def _release_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._released:
                lease = self._released.popleft()
                try:
                    await self.leases.release(lease)
                except Exception:  # it expires within the ttl
                    log.warning("room lease not released", exc_info=True)

    async def _renew_forever(self) -> None:
        while True:
            await trio.sleep(self.leases.ttl_s / 3)
            held = list(self.held.items())
            for start in range(0, len(held), RENEW_BATCH):
                batch = held[start : start + RENEW_BATCH]
                try:
                    renewed = await self.leases.renew_many([lease for _, lease in batch])
                except Exception:
                    log.warning("room leases not renewed", exc_info=True)
                    continue
                for (room_id, lease), ok in zip(batch, renewed, strict=True):
                    if not ok and self.held.get(room_id) is lease:
                        del self.held[room_id]
                        await self.claim(room_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._release_forever)
            nursery.start_soon(self._renew_forever)
            task_status.started()
