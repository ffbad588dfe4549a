"""App rooms in cluster mode: a room lives on one node at a time, and clients that reach
another node are told where to go (docs/cluster.md#app-rooms).

The creating node takes the room's lease, `room:<id>` (relay.cluster.lease), before answering
the `POST /rooms`, and renews the leases of all its rooms every third of `lease_ttl_s` in
batches (one script per batch); a room that closes releases its lease. Another node asked about
a room it does not have looks the lease up (`elsewhere`) and answers with the owner node's URLs
(relay.cluster.places): REST with a 307 redirect, the WebSocket with a `moved` frame and close
4014.

Takeover: the room's settings (id, secret, creator, protocol, max_clients, public, metadata,
creation time) are saved in `relay:room:rec:<id>` when it is claimed and at each change of
them, expiring `lease_ttl_s + room_empty_grace_s` after the holder last renewed. A node asked
about a room whose lease is free (its node died: the lease expired) and whose settings are
still saved `adopt`s it: one script takes the lease (a new fencing token) and reads the
settings, so one node at a time wins; the room restarts there empty (members, client ids and
host are in memory and die with their node). A holder whose renewal is refused takes its lease
again if it is free, and closes its copy of the room if another node adopted it meanwhile.

The public listing (`GET /v1/api/rooms`) covers every node: each node writes its public rooms
as anyone sees them to `relay:room:pub:<id>` (expiring after three lease ttls, extended at each
renewal) and their ids to the sorted set `relay:rooms:public` (by id, as 20-digit strings, so
`after` is a range), at most PUBLISH_EVERY_S after a change; a listing reads a range of ids and
then their rooms, skipping (and removing) those whose node is gone.

`rooms_per_user` across nodes: `count` adds a new room to `relay:rooms:by:<creator>` (room id ->
this run's instance, relay.cluster.caps) with one script that counts the rooms of live
instances only and refuses at the limit; a room that closes is taken off with its lease.

The summary (`GET /v1/api/summary`) of every node: each writes its own to the hash
`relay:rooms:summary` (instance -> JSON) at most PUBLISH_EVERY_S after a change; `summary` adds
this node's current one to those of the other live instances.

Resource handling: `run()` owns the release, renewal and publishing tasks; leaving it (a clean
stop) releases every room's lease, saved settings and count, bounded by LEAVE_S.

Error handling: a Redis error while claiming leaves the room reachable on its own node only;
while looking up or adopting, the room is unknown (404 / `unknown_room`), as for a room that is
gone.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

import msgspec
import trio
from coredis.tokens import PureToken

from relay.chat.objects import ProtocolCounts, Room, Summary, room_out
from relay.chat.rooms import RoomRecord
from relay.cluster.caps import ALIVE
from relay.cluster.lease import Lease, Leases

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import coredis

    from relay.cluster.places import NodeUrls, Place

log = logging.getLogger("relay.cluster")
RENEW_BATCH = 500
LEAVE_S = 1.0  # at most this long to release the rooms at a clean stop
PUBLISH_EVERY_S = 0.1  # changes to public rooms within this long share one write
PUBLIC = "relay:rooms:public"
_rooms_decoder = msgspec.json.Decoder(Room)

# adopt: KEYS lease, fence, saved settings; ARGV holder, ttl ms. The lease if it is free and the
# settings are saved: {token, settings}; else nil (held, or nothing to adopt).
_ADOPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local saved = redis.call('GET', KEYS[3])
if not saved then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'NX', 'PX', ARGV[2])
return {token, saved}
"""
# release: KEYS lease, saved settings, the creator's rooms; ARGV the lease's value (or ''),
# room id, instance. The lease and settings go if the lease is ours; the room leaves its
# creator's count if this instance counted it.
_RELEASE = """
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[3] then redis.call('HDEL', KEYS[3], ARGV[2]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# count: KEYS the creator's rooms; ARGV room id, instance, limit (-1: none), alive prefix, ttl.
# 1: counted; 0: the creator has `limit` live rooms already (on live instances).
_COUNT = """
if tonumber(ARGV[3]) >= 0 then
  local live = 0
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    if fields[i] ~= ARGV[1] then
      if redis.call('EXISTS', ARGV[4] .. fields[i + 1]) == 1 then
        live = live + 1
      else
        redis.call('HDEL', KEYS[1], fields[i])
      end
    end
  end
  if live >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
CREATOR_TTL_MS = 86_400_000  # a creator's count goes after a day unused
SUMMARIES = "relay:rooms:summary"  # instance -> that process's own summary (JSON)
# summaries: KEYS SUMMARIES; ARGV alive prefix, the asking instance. The summaries of the other
# live instances (dead ones' go).
_SUMMARIES = """
local found = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if fields[i] == ARGV[2] then
  elseif redis.call('EXISTS', ARGV[1] .. fields[i]) == 1 then
    found[#found + 1] = fields[i + 1]
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return found
"""
_summary_decoder = msgspec.json.Decoder(Summary)


class Saved(msgspec.Struct, frozen=True, array_like=True):
    """A room's settings in Redis, for the node that adopts it (module doc)."""

    id: int
    secret: str
    creator_id: int
    protocol: str
    max_clients: int
    public: bool
    metadata: bytes
    created_at: int

    @classmethod
    def of(cls, r: RoomRecord) -> Saved:
        return cls(
            r.id, r.secret, r.creator_id, r.protocol, r.max_clients, r.public, r.metadata,
            r.created_at,
        )  # fmt: skip

    def record(self) -> RoomRecord:
        return RoomRecord(
            id=self.id,
            secret=self.secret,
            creator_id=self.creator_id,
            protocol=self.protocol,
            max_clients=self.max_clients,
            public=self.public,
            metadata=self.metadata,
            created_at=self.created_at,
        )


_saved_decoder = msgspec.msgpack.Decoder(Saved)


def public_key(room_id: int) -> str:
    return f"relay:room:pub:{room_id}"


def saved_key(room_id: int) -> str:
    return f"relay:room:rec:{room_id}"


def creator_key(user_id: int) -> str:
    return f"relay:rooms:by:{user_id}"


def member(room_id: int) -> str:
    return f"{room_id:020d}"


def room_name(room_id: int) -> str:
    return f"room:{room_id}"


class RoomPlaces:
    """`relay.chat.rooms.RoomCluster` for this node (module doc)."""

    def __init__(
        self,
        redis: coredis.Redis[bytes],
        node_id: str,
        urls: NodeUrls,
        ttl_s: float,
        *,
        keep_s: float,
        instance: str,
    ) -> None:
        self.redis = redis
        self.node_id = node_id
        self.instance = instance  # this run of the node (relay.cluster.caps): counts' owner
        self.urls = urls
        self.leases = Leases(redis, ttl_s=ttl_s)
        # How long a room's settings outlive its holder's last renewal: the lease's ttl and
        # room_empty_grace_s (an empty room closes after that long anyway).
        self.keep_ms = round((ttl_s + keep_s) * 1000)
        self.held: dict[int, Lease] = {}
        # Rooms gone from here: their lease (if held) and creator (if counted in Redis).
        self._released: deque[tuple[int, Lease | None, int | None]] = deque()
        self._creators: dict[int, int] = {}  # room -> creator, for rooms counted in Redis
        self._wake = trio.Event()
        self._dirty: dict[int, RoomRecord | None] = {}  # None: gone
        self._dirty_event = trio.Event()
        self._public: set[int] = set()  # this node's rooms in the public listing
        self._saved: dict[int, Saved] = {}  # the settings last saved, per held room
        self._to_save: dict[int, RoomRecord] = {}
        self._adopt = redis.register_script(_ADOPT)
        self._summaries = redis.register_script(_SUMMARIES)
        # This node's own summary (relay.chat.rooms.summary), written to SUMMARIES on changes.
        self.own_summary: Callable[[], Summary] | None = None
        self._summary_dirty = True
        self._count = redis.register_script(_COUNT)
        self._release = redis.register_script(_RELEASE)
        # Called with a room's id when another node adopted it while this one held it.
        self.on_lost: Callable[[int], Awaitable[None]] | None = None
        self._nursery: trio.Nursery | None = None

    async def claim(self, room_id: int, record: RoomRecord | None = None) -> None:
        try:
            lease = await self.leases.acquire(room_name(room_id), self.node_id)
            if lease is not None and record is not None:
                await self._save(record)
        except Exception:
            log.warning("room lease not taken", extra={"room": room_id}, exc_info=True)
            return
        if lease is not None:
            self.held[room_id] = lease

    async def count(self, creator_id: int, room_id: int, limit: int | None) -> bool:
        """Count a room in its creator's live rooms on every node, if under `limit` (None: no
        limit, for a room taken over); False: the creator has that many."""
        try:
            counted: object = await self._count(
                keys=[creator_key(creator_id)],
                args=[
                    room_id, self.instance, -1 if limit is None else limit, ALIVE, CREATOR_TTL_MS,
                ],
            )  # fmt: skip
        except Exception:
            log.warning("room not counted for its creator", exc_info=True)
            return True  # the node's own count decides
        if counted != 1:
            return False
        self._creators[room_id] = creator_id
        return True

    async def _save(self, record: RoomRecord) -> None:
        saved = Saved.of(record)
        await self.redis.set(saved_key(record.id), msgspec.msgpack.encode(saved), px=self.keep_ms)
        self._saved[record.id] = saved

    async def adopt(self, room_id: int) -> RoomRecord | None:
        """Take a room whose lease is free and whose settings are saved (its node died), and
        hold it from now on: its record, or None (held by a node, or nothing to adopt)."""
        sent_at = trio.current_time()
        try:
            found: object = await self._adopt(
                keys=[
                    self.leases.key(room_name(room_id)),
                    self.leases.fence_key(room_name(room_id)),
                    saved_key(room_id),
                ],
                args=[self.node_id, self.leases.ttl_ms],
            )
        except Exception:
            log.warning("room not adopted", extra={"room": room_id}, exc_info=True)
            return None
        if not isinstance(found, list):
            return None
        token, data = found
        try:
            saved = _saved_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        self.held[room_id] = Lease(
            room_name(room_id), self.node_id, int(token), sent_at + self.leases.ttl_s
        )
        self._saved[room_id] = saved
        log.info("room adopted", extra={"room": room_id, "token": token})
        await self.count(saved.creator_id, room_id, None)
        return saved.record()

    async def give_up(self, room_id: int) -> None:
        """Undo `adopt` (this node could not serve the room after all): the lease and the
        creator's count go, the saved settings stay for another node to adopt."""
        lease = self.held.pop(room_id, None)
        self._saved.pop(room_id, None)
        creator = self._creators.pop(room_id, None)
        try:
            await self._release(
                keys=[
                    self.leases.key(room_name(room_id)),
                    "relay:room:kept",  # in place of the saved settings' key: they stay
                    creator_key(creator if creator is not None else 0),
                ],
                args=["" if lease is None else lease.value, room_id, self.instance],
            )
        except Exception:  # the lease expires within the ttl
            log.warning("adopted room not given up", extra={"room": room_id}, exc_info=True)

    def changed(self, record: RoomRecord) -> None:
        self._summary_dirty = True
        self._dirty_event.set()
        saved = self._saved.get(record.id)
        if saved is not None and saved != Saved.of(record):
            self._to_save[record.id] = record
            self._dirty_event.set()
        if record.public or record.id in self._public:
            self._dirty[record.id] = record
            self._dirty_event.set()

    def released(self, room_id: int) -> None:
        self._summary_dirty = True
        self._dirty_event.set()
        if room_id in self._public:
            self._dirty[room_id] = None
            self._dirty_event.set()
        self._saved.pop(room_id, None)
        self._to_save.pop(room_id, None)
        lease = self.held.pop(room_id, None)
        creator = self._creators.pop(room_id, None)
        if lease is not None or creator is not None:
            self._released.append((room_id, lease, creator))
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

    async def summary(self, own: Summary) -> Summary:
        """`own` (this node's, current) added to the other live nodes' latest."""
        try:
            found: object = await self._summaries(keys=[SUMMARIES], args=[ALIVE, self.instance])
        except Exception:
            log.warning("room summaries not read", exc_info=True)
            return own
        assert isinstance(found, list)
        total = own
        for data in found:
            try:
                other = _summary_decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            total = _added(total, other)
        return total

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
            to_save, self._to_save = self._to_save, {}
            summary = None
            if self._summary_dirty and self.own_summary is not None:
                self._summary_dirty = False
                summary = msgspec.json.encode(self.own_summary())
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    if summary is not None:
                        pipe.hset(SUMMARIES, {self.instance: summary})
                    for room_id, settings in to_save.items():
                        if room_id not in self.held:
                            continue  # closed or lost meanwhile
                        saved = Saved.of(settings)
                        pipe.set(saved_key(room_id), msgspec.msgpack.encode(saved), px=self.keep_ms)
                        self._saved[room_id] = saved
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
                try:
                    await self._release_one(*self._released.popleft())
                except Exception:  # it expires within the ttl
                    log.warning("room lease not released", exc_info=True)

    def _release_one(
        self,
        room_id: int,
        lease: Lease | None,
        creator: int | None,
        client: coredis.client.Client[bytes] | None = None,
    ) -> Awaitable[object]:
        return self._release(
            keys=[
                self.leases.key(room_name(room_id)),
                saved_key(room_id),
                creator_key(creator if creator is not None else 0),
            ],
            args=["" if lease is None else lease.value, room_id, self.instance],
            client=client,
        )

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
                        await self._renewal_refused(room_id)
            await self._extend()

    async def _renewal_refused(self, room_id: int) -> None:
        """The lease expired (Redis was unreachable, or this process paused): take it again if
        it is free; if another node adopted the room meanwhile, this copy closes."""
        del self.held[room_id]
        saved = self._saved.get(room_id)
        await self.claim(room_id, saved.record() if saved is not None else None)
        if room_id in self.held:
            return
        try:
            owner = await self.leases.owner(room_name(room_id))
        except Exception:
            owner = None  # unknown: tried again at the next renewal
        if owner is None:
            self.held[room_id] = Lease(room_name(room_id), self.node_id, 0, 0.0)  # refused next
            return
        log.warning("room adopted elsewhere", extra={"room": room_id, "node": owner[0]})
        self._saved.pop(room_id, None)
        if self.on_lost is not None and self._nursery is not None:
            # In a task of its own: closing the copy waits on the room, not the renewals.
            self._nursery.start_soon(self.on_lost, room_id)

    async def _extend(self) -> None:
        """The public rooms' entries and the held rooms' saved settings live on."""
        ttl_ms = round(self.leases.ttl_s * 3000)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for room_id in self._public:
                    pipe.pexpire(public_key(room_id), ttl_ms)
                for room_id in self.held:
                    pipe.pexpire(saved_key(room_id), self.keep_ms)
        except Exception:
            log.warning("public rooms not extended", exc_info=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._dirty_event.set()  # this node's summary, its capacity, from the start
                nursery.start_soon(self._release_forever)
                nursery.start_soon(self._renew_forever)
                nursery.start_soon(self._publish_forever)
                task_status.started()
        finally:
            with trio.move_on_after(LEAVE_S, shield=True):
                await self._leave()

    async def _leave(self) -> None:
        """A clean stop ends this node's rooms for good, as in one process: their leases and
        saved settings go (a room is taken over only after a crash)."""
        try:
            await self.redis.hdel(SUMMARIES, [self.instance])
        except Exception:
            log.warning("room summary not removed", exc_info=True)
        gone = [*self._released]
        for room_id in {*self.held, *self._creators}:
            gone.append((room_id, self.held.get(room_id), self._creators.get(room_id)))
        self.held.clear()
        self._creators.clear()
        self._released.clear()
        if not gone:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                done = [self._release_one(*room, client=pipe) for room in gone]
            for result in done:
                await result
        except Exception:  # the leases expire within the ttl, the settings later
            log.warning("room leases not released", exc_info=True)


def _added(a: Summary, b: Summary) -> Summary:
    names = sorted({*a.protocols, *b.protocols})
    zero = ProtocolCounts(number_of_rooms=0, current_clients=0, committed_clients=0)
    protocols = {}
    for name in names:
        x, y = a.protocols.get(name, zero), b.protocols.get(name, zero)
        protocols[name] = ProtocolCounts(
            number_of_rooms=x.number_of_rooms + y.number_of_rooms,
            current_clients=x.current_clients + y.current_clients,
            committed_clients=x.committed_clients + y.committed_clients,
        )
    return Summary(
        number_of_rooms=a.number_of_rooms + b.number_of_rooms,
        max_clients=a.max_clients + b.max_clients,
        current_clients=a.current_clients + b.current_clients,
        committed_clients=a.committed_clients + b.committed_clients,
        protocols=protocols,
    )
