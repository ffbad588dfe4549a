"""App rooms in cluster mode: a room lives on the node that created it, and clients that reach
another node are told where to go (docs/cluster.md#app-rooms).

The creating node takes the room's lease, `room:<id>` (relay.cluster.lease), before answering
the `POST /rooms`, and renews the leases of all its rooms every third of `lease_ttl_s` in
batches (one script per batch); a room that closes releases its lease. Another node asked about
a room it does not have looks the lease up (`elsewhere`) and answers with the owner node's URLs
(relay.cluster.places): REST with a 307 redirect, the WebSocket with a `moved` frame and close
4014. Room ids are unique snowflakes, so nobody else ever takes a room's lease: a renewal
refused (the key expired while Redis was unreachable) takes it again.

The public listing (`GET /v1/api/rooms`) covers every node: each node writes its public rooms
as anyone sees them to `relay:room:pub:<id>` (expiring after three lease ttls, extended at each
renewal) and their ids to the sorted set `relay:rooms:public` (by id, as 20-digit strings, so
`after` is a range), at most PUBLISH_EVERY_S after a change; a listing reads a range of ids and
then their rooms, skipping (and removing) those whose node is gone.

Resource handling: `run()` owns the release, renewal and publishing tasks.

Error handling: a Redis error while claiming leaves the room reachable on its own node only;
while looking up, the room is unknown (404 / `unknown_room`), as for a room that is gone.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

import msgspec
import trio
from coredis.tokens import PureToken

from relay.chat.objects import Room, room_out
from relay.cluster.lease import Lease, Leases

if TYPE_CHECKING:
    import coredis

    from relay.chat.rooms import RoomRecord
    from relay.cluster.places import NodeUrls, Place

log = logging.getLogger("relay.cluster")
RENEW_BATCH = 500
PUBLISH_EVERY_S = 0.1  # changes to public rooms within this long share one write
PUBLIC = "relay:rooms:public"
_rooms_decoder = msgspec.json.Decoder(Room)


def public_key(room_id: int) -> str:
    return f"relay:room:pub:{room_id}"


def member(room_id: int) -> str:
    return f"{room_id:020d}"


def room_name(room_id: int) -> str:
    return f"room:{room_id}"


class RoomPlaces:
    """`relay.chat.rooms.RoomCluster` for this node (module doc)."""

    def __init__(
        self, redis: coredis.Redis[bytes], node_id: str, urls: NodeUrls, ttl_s: float
    ) -> None:
        self.redis = redis
        self.node_id = node_id
        self.urls = urls
        self.leases = Leases(redis, ttl_s=ttl_s)
        self.held: dict[int, Lease] = {}
        self._released: deque[Lease] = deque()
        self._wake = trio.Event()
        self._dirty: dict[int, RoomRecord | None] = {}  # None: gone
        self._dirty_event = trio.Event()
        self._public: set[int] = set()  # this node's rooms in the public listing

    async def claim(self, room_id: int) -> None:
        try:
            lease = await self.leases.acquire(room_name(room_id), self.node_id)
        except Exception:
            log.warning("room lease not taken", extra={"room": room_id}, exc_info=True)
            return
        if lease is not None:
            self.held[room_id] = lease

    def changed(self, record: RoomRecord) -> None:
        if record.public or record.id in self._public:
            self._dirty[record.id] = record
            self._dirty_event.set()

    def released(self, room_id: int) -> None:
        if room_id in self._public:
            self._dirty[room_id] = None
            self._dirty_event.set()
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

    async def public_page(self, after: int, limit: int) -> list[Room]:
        page: list[Room] = []
        start = f"({member(after)}"
        for _ in range(5):  # a few rounds at most, if many of the ids are of dead nodes' rooms
            found = await self.redis.zrange(
                PUBLIC, start, "+", sortby=PureToken.BYLEX, offset=0, count=limit * 2
            )
            ids = [i for i in found if isinstance(i, bytes)]
            if not ids:
                break
            values = await self.redis.mget([public_key(int(i)) for i in ids])
            stale = []
            for room_id, value in zip(ids, values, strict=True):
                if value is None:
                    stale.append(room_id)
                elif len(page) < limit:
                    page.append(_rooms_decoder.decode(value))
            if stale:
                await self.redis.zrem(PUBLIC, stale)
            if len(page) >= limit or len(ids) < limit * 2:
                break
            start = f"({ids[-1].decode()}"
        return page

    async def _publish_forever(self) -> None:
        """Write the public rooms that changed (module doc)."""
        ttl_ms = round(self.leases.ttl_s * 3000)
        while True:
            await self._dirty_event.wait()
            await trio.sleep(PUBLISH_EVERY_S)
            self._dirty_event = trio.Event()
            dirty, self._dirty = self._dirty, {}
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for room_id, record in dirty.items():
                        if record is not None and record.public:
                            data = msgspec.json.encode(room_out(record, None))
                            pipe.set(public_key(room_id), data, px=ttl_ms)
                            pipe.zadd(PUBLIC, {member(room_id): 0})
                            self._public.add(room_id)
                        else:
                            pipe.delete([public_key(room_id)])
                            pipe.zrem(PUBLIC, [member(room_id)])
                            self._public.discard(room_id)
            except Exception:  # written again at its next change; expires meanwhile
                log.warning("public rooms not written", exc_info=True)

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
            await self._extend_public()

    async def _extend_public(self) -> None:
        ttl_ms = round(self.leases.ttl_s * 3000)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for room_id in self._public:
                    pipe.pexpire(public_key(room_id), ttl_ms)
        except Exception:
            log.warning("public rooms not extended", exc_info=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._release_forever)
            nursery.start_soon(self._renew_forever)
            nursery.start_soon(self._publish_forever)
            task_status.started()
