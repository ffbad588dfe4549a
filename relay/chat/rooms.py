"""App rooms' service: the room manager (the directory of live app rooms, the server-wide client
capacity, and the registry of room actors), and the room operations of the REST routes.

The REST routes (relay.rest.rooms) call the functions at the end of this module, which check
what a body's types cannot (max_clients against room_max_clients, the metadata's encoded size,
who may see a private room) and answer relay.chat.objects; the WebSocket endpoint
(relay.rooms.endpoint) uses the manager to find a room's actor.

Rooms are in-memory only. Each room is a `RoomActor` (it owns members, host and rules); the
manager keeps a `RoomRecord` per room: its settings (changed here, then sent to the actor) and a
copy of its live figures (clients, host, status) that the actor reports after every change. So
listings, the summary and capacity checks read plain state on the Trio thread, without asking
every actor, and every check-then-update (rooms per user, committed capacity, admitting a
client) happens with no checkpoint in between: no locks needed.

Capacity: `committed` is the sum of the rooms' `max_clients`, `current` the sum of their
members (away members included: they hold a slot). Creating a room or raising its `max_clients`
must keep `committed <= room_capacity`; admitting a client must keep `current <= room_capacity`
(it can bind when a room's `max_clients` was lowered below its current count).

Resource handling: `run()` owns the registry of room actors (one supervised task per room).
`close()` closes every room's inbox; the rooms drain and stop, and `run()` returns. A room
leaves the directory when its actor stops (empty grace over) or when its creator deletes it.

Error handling: REST callers get `relay.errors` (404 unknown_room, 403 not_creator, 422
too_many_rooms / capacity_exceeded, 503 when a room does not answer); WebSocket callers get
`RoomError("unknown_room")`. A crashed room is restarted empty by the registry from its record.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import trio
from msgspec import UNSET

from actors import ActorStopped, AskTimeout, Registry
from actors.room import CloseRoom, Configure, RoomActor, RoomConfig
from relay.chat.args import field_error, snowflake
from relay.chat.objects import ProtocolCounts, Summary, room_out
from relay.errors import Forbidden, NotFound, Unavailable, Unprocessable
from relay.protocol.rooms import RoomError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from actors.base import Actor, Reply
    from actors.room import RoomMsg
    from relay.chat import commands
    from relay.chat.objects import Room
    from relay.config import Settings
    from relay.ids import Snowflakes

log = logging.getLogger("relay.rooms")
PROTOCOLS = ("host", "peer")
ASK_TIMEOUT_S = 5.0


class RoomPlace(Protocol):
    """A node's public URLs (relay.cluster.places.Place)."""

    @property
    def ws(self) -> str: ...
    @property
    def http(self) -> str: ...


class RoomCluster(Protocol):
    """Cluster mode (relay.cluster.rooms): each room lives on one node at a time."""

    on_lost: Callable[[int], Awaitable[None]] | None

    async def claim(self, room_id: int, record: RoomRecord | None = None) -> None:
        """Make the room findable from the other nodes (before its creator hears of it), and
        save its settings for a takeover."""

    async def adopt(self, room_id: int) -> RoomRecord | None:
        """Take a room whose node died (its lease is free, its settings saved): its record."""

    async def summary(self, own: Summary) -> Summary:
        """`own` added to the other nodes' summaries."""

    async def give_up(self, room_id: int) -> None:
        """Undo `adopt`: the room stays saved for another node."""

    async def count(self, creator_id: int, room_id: int, limit: int | None) -> bool:
        """Count a new room among its creator's live rooms on every node, if fewer than `limit`
        (False: the creator has that many); `released` takes it off."""

    def released(self, room_id: int) -> None: ...

    def changed(self, record: RoomRecord) -> None:
        """A room's settings or live figures changed (the cluster-wide public listing)."""

    async def public_page(self, after: int, limit: int) -> list[Room]:
        """Public rooms of every node with an id above `after`, in id order."""

    async def elsewhere(self, room_id: int) -> RoomPlace | None:
        """The URLs of the node that has the room, if another node does."""


@dataclass(slots=True)
class RoomRecord:
    id: int
    secret: str
    creator_id: int
    protocol: str
    max_clients: int
    public: bool
    metadata: bytes  # a JSON object, at most room_metadata_bytes
    created_at: int  # Unix ms
    # Reported by the room's actor:
    current_clients: int = 0
    host_id: int | None = None
    status: str = "empty"  # empty | open | full | closing


@dataclass(frozen=True, slots=True)
class Counts:
    number_of_rooms: int = 0
    current_clients: int = 0
    committed_clients: int = 0


class UnknownRoom(LookupError):
    """The registry was asked for a room that is not (or no longer) in the directory."""


def _key(room_id: int) -> str:
    return f"room:{room_id}"


class RoomManager:
    def __init__(self, settings: Settings, ids: Snowflakes) -> None:
        self.settings = settings
        self.capacity = settings.room_capacity
        self._ids = ids
        self._rooms: dict[int, RoomRecord] = {}  # insertion order = id order
        self._by_creator: dict[int, int] = {}  # user id -> live rooms created
        self.committed = 0
        self.current = 0
        self.registry: Registry[RoomMsg] = Registry(self._new_room)
        self.cluster: RoomCluster | None = None  # set in cluster mode only

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.registry.run)
            task_status.started()

    def close(self) -> None:
        self.registry.close_all()

    # -- the directory (called by the room actors) ---------------------------------------------

    def room_changed(self, room_id: int, clients: int, host_id: int | None, status: str) -> None:
        record = self._rooms.get(room_id)
        if record is None:  # deleted while its actor winds down
            return
        self.current += clients - record.current_clients
        record.current_clients, record.host_id, record.status = clients, host_id, status
        if self.cluster is not None:
            self.cluster.changed(record)

    def can_admit(self) -> bool:
        return self.current < self.capacity

    def room_closed(self, room_id: int) -> None:
        record = self._rooms.pop(room_id, None)
        if record is None:
            return
        if self.cluster is not None:
            self.cluster.released(room_id)
        self.committed -= record.max_clients
        self.current -= record.current_clients
        left = self._by_creator[record.creator_id] - 1
        if left:
            self._by_creator[record.creator_id] = left
        else:
            del self._by_creator[record.creator_id]
        log.info("room closed", extra={"room": room_id})

    def _new_room(self, key: str) -> RoomActor:
        record = self._rooms.get(int(key.removeprefix("room:")))
        if record is None:
            raise UnknownRoom(key)
        settings = self.settings
        config = RoomConfig(
            room_id=record.id,
            secret=record.secret,
            protocol=record.protocol,
            max_clients=record.max_clients,
            public=record.public,
            metadata=record.metadata,
            reconnect_grace_s=settings.room_reconnect_grace_s,
            empty_grace_s=settings.room_empty_grace_s,
        )
        return RoomActor(key, config, self)

    # -- cluster mode: takeover ------------------------------------------------------------------

    async def adopt(self, record: RoomRecord) -> bool:
        """Serve a room whose node died, restarted empty from its saved settings (cluster
        mode); False if this node cannot commit its `max_clients` (it stays unserved).
        `rooms_per_user` is not checked: the room exists already."""
        if record.id in self._rooms:
            return True
        if self.committed + record.max_clients > self.capacity:
            return False
        self._rooms[record.id] = record
        self._by_creator[record.creator_id] = self._by_creator.get(record.creator_id, 0) + 1
        self.committed += record.max_clients
        try:
            await self.registry.get(_key(record.id))
        except (ActorStopped, UnknownRoom):
            self.room_closed(record.id)
            return False
        log.info("room taken over", extra={"room": record.id})
        return True

    async def lost(self, room_id: int) -> None:
        """Another node adopted this room (this one's lease expired): close this copy; its
        clients get `room_closed` and connect again, reaching the other node."""
        record = self._rooms.get(room_id)
        if record is None:
            return

        def build(reply: Reply[None]) -> RoomMsg:
            return CloseRoom("the room moved to another node; connect again", reply)

        try:
            await self._ask(record, build)
        except (NotFound, Unavailable):
            log.warning("room copy not closed in time", extra={"room": room_id})
        self.room_closed(room_id)

    # -- REST ------------------------------------------------------------------------------------

    async def create(
        self, creator_id: int, protocol: str, max_clients: int, public: bool, metadata: bytes
    ) -> RoomRecord:
        """Add a room and start its actor.

        Raises:
            Unprocessable: too_many_rooms, capacity_exceeded.
            Unavailable: the room registry is not running (shutting down).
        """
        limit = self.settings.rooms_per_user
        room_id = self._ids.next()
        # Cluster mode: the creator's rooms on every node, counted atomically in Redis first
        # (an await), then this node's checks and bookkeeping with no checkpoint between them.
        if self.cluster is not None and not await self.cluster.count(creator_id, room_id, limit):
            raise Unprocessable(f"at most {limit} live rooms per user", code="too_many_rooms")
        owned = self._by_creator.get(creator_id, 0)
        try:
            if owned >= limit:
                raise Unprocessable(f"at most {limit} live rooms per user", code="too_many_rooms")
            self._check_capacity(max_clients)
        except Unprocessable:
            if self.cluster is not None:
                self.cluster.released(room_id)
            raise
        record = RoomRecord(
            id=room_id,
            secret=secrets.token_urlsafe(32),
            creator_id=creator_id,
            protocol=protocol,
            max_clients=max_clients,
            public=public,
            metadata=metadata,
            created_at=time.time_ns() // 1_000_000,
        )
        self._rooms[record.id] = record
        self._by_creator[creator_id] = owned + 1
        self.committed += max_clients
        try:
            await self.registry.get(_key(record.id))
        except (ActorStopped, UnknownRoom):
            self.room_closed(record.id)
            raise Unavailable("rooms are not available", code="rooms_unavailable") from None
        log.info("room created", extra={"room": record.id, "protocol": protocol})
        if self.cluster is not None:
            self.cluster.changed(record)
        return record

    def has(self, room_id: int) -> bool:
        return room_id in self._rooms

    def get(self, room_id: int) -> RoomRecord:
        record = self._rooms.get(room_id)
        if record is None:
            raise NotFound("unknown room", code="unknown_room")
        return record

    def public_page(self, after: int, limit: int) -> list[RoomRecord]:
        """Public rooms with an id above `after`, in id order, at most `limit`."""
        page: list[RoomRecord] = []
        for record in self._rooms.values():
            if record.id > after and record.public:
                page.append(record)
                if len(page) == limit:
                    break
        return page

    async def update(
        self,
        room_id: int,
        user_id: int,
        *,
        max_clients: int | None = None,
        public: bool | None = None,
        metadata: bytes | None = None,
    ) -> RoomRecord:
        """Change a room's settings (its creator only); the room's members get room_updated.

        Raises:
            NotFound, Forbidden, Unprocessable (capacity_exceeded), Unavailable.
        """
        record = self._owned(room_id, user_id)
        if max_clients is not None and max_clients > record.max_clients:
            self._check_capacity(max_clients - record.max_clients)
        if max_clients is not None:
            self.committed += max_clients - record.max_clients
            record.max_clients = max_clients
        if public is not None:
            record.public = public
        if metadata is not None:
            record.metadata = metadata
        if self.cluster is not None:
            self.cluster.changed(record)

        def build(reply: Reply[None]) -> RoomMsg:
            return Configure(record.max_clients, record.public, record.metadata, reply)

        await self._ask(record, build)
        return record

    async def delete(self, room_id: int, user_id: int) -> None:
        """Close a room (its creator only): every member is told why and disconnected.

        Raises:
            NotFound, Forbidden, Unavailable.
        """
        record = self._owned(room_id, user_id)

        def build(reply: Reply[None]) -> RoomMsg:
            return CloseRoom("the room was closed by its creator", reply)

        await self._ask(record, build)
        self.room_closed(room_id)

    def summary(self) -> tuple[Counts, dict[str, Counts]]:
        """Totals, and the same per protocol."""
        rooms = dict.fromkeys(PROTOCOLS, 0)
        current = dict.fromkeys(PROTOCOLS, 0)
        committed = dict.fromkeys(PROTOCOLS, 0)
        for record in self._rooms.values():
            rooms[record.protocol] += 1
            current[record.protocol] += record.current_clients
            committed[record.protocol] += record.max_clients
        total = Counts(len(self._rooms), self.current, self.committed)
        return total, {p: Counts(rooms[p], current[p], committed[p]) for p in PROTOCOLS}

    def _owned(self, room_id: int, user_id: int) -> RoomRecord:
        record = self.get(room_id)
        if record.creator_id != user_id:
            raise Forbidden("only the room's creator may do this", code="not_creator")
        return record

    def _check_capacity(self, more: int) -> None:
        if self.committed + more > self.capacity:
            free = self.capacity - self.committed
            raise Unprocessable(
                f"the server can commit {free} more clients to rooms", code="capacity_exceeded"
            )

    async def _ask(self, record: RoomRecord, build: Callable[[Reply[None]], RoomMsg]) -> None:
        try:
            await self.registry.ask(_key(record.id), build, timeout_s=ASK_TIMEOUT_S)
        except (ActorStopped, UnknownRoom):
            raise NotFound("unknown room", code="unknown_room") from None
        except AskTimeout:
            raise Unavailable("the room did not answer in time", code="room_busy") from None

    # -- WebSocket -------------------------------------------------------------------------------

    async def actor(self, room_id_text: str) -> Actor[RoomMsg]:
        """The running actor of a room, for a client joining it.

        Raises:
            RoomError: unknown_room.
        """
        room_id = int(room_id_text) if room_id_text.isascii() and room_id_text.isdigit() else 0
        if room_id not in self._rooms:
            raise RoomError("unknown_room", "no such room")
        try:
            return await self.registry.get(_key(room_id))
        except (ActorStopped, UnknownRoom):
            raise RoomError("unknown_room", "no such room") from None


# -- operations (the REST routes) ---------------------------------------------------------------


def _max_clients(settings: Settings, value: int) -> int:
    if value > settings.room_max_clients:
        raise field_error("max_clients", f"must be from 1 to {settings.room_max_clients}")
    return value


def _metadata_json(settings: Settings, value: dict[str, Any] | None) -> bytes:
    data = msgspec.json.encode(value or {})
    if len(data) > settings.room_metadata_bytes:
        limit = settings.room_metadata_bytes
        raise field_error("metadata", f"must be at most {limit} bytes as JSON")
    return data


async def create_room(rooms: RoomManager, user_id: int, data: commands.CreateRoom) -> Room:
    """A new room of `user_id` (400 invalid_field over room_max_clients or
    room_metadata_bytes; what `RoomManager.create` raises)."""
    record = await rooms.create(
        user_id,
        data.protocol,
        _max_clients(rooms.settings, data.max_clients),
        data.public,
        _metadata_json(rooms.settings, data.metadata),
    )
    if rooms.cluster is not None:
        await rooms.cluster.claim(record.id, record)
    return room_out(record, user_id)


async def elsewhere(rooms: RoomManager, room_id: str) -> RoomPlace | None:
    """Cluster mode: the node that has this room, if it is not here (None: here, or unknown).
    A room whose node died (its lease expired, its settings saved) is taken over here first,
    restarted empty (docs/cluster.md#app-rooms), so the caller then finds it here."""
    if rooms.cluster is None:
        return None
    try:
        rid = int(room_id)
    except ValueError:
        return None
    if not 0 < rid < 2**63 or rooms.has(rid):
        return None
    place = await rooms.cluster.elsewhere(rid)
    if place is None:
        record = await rooms.cluster.adopt(rid)
        if record is not None and not await rooms.adopt(record):
            await rooms.cluster.give_up(rid)  # not here after all: another node may take it
    return place


async def public_rooms(rooms: RoomManager, after: int, limit: int) -> list[Room]:
    """A page of the public rooms, in id order after `after` (as anyone sees them); in cluster
    mode, those of every node."""
    if rooms.cluster is not None:
        return await rooms.cluster.public_page(after, limit)
    return [room_out(r, None) for r in rooms.public_page(after, limit)]


def get_room(rooms: RoomManager, viewer: int | None, room_id: str) -> Room:
    """A room by id: a private one only for its creator (404 unknown_room for anyone else, and
    for `viewer` None: no token)."""
    record = rooms.get(snowflake(room_id, "room"))
    if not record.public and record.creator_id != viewer:
        raise NotFound("unknown room", code="unknown_room")
    return room_out(record, viewer)


async def update_room(
    rooms: RoomManager, user_id: int, room_id: str, data: commands.UpdateRoom
) -> Room:
    """Change a room's settings (its creator only); what `RoomManager.update` raises, and 400
    as `create_room`."""
    settings = rooms.settings
    record = await rooms.update(
        snowflake(room_id, "room"),
        user_id,
        max_clients=None if data.max_clients is UNSET else _max_clients(settings, data.max_clients),
        public=None if data.public is UNSET else data.public,
        metadata=None if data.metadata is UNSET else _metadata_json(settings, data.metadata),
    )
    return room_out(record, user_id)


async def delete_room(rooms: RoomManager, user_id: int, room_id: str) -> None:
    """Close a room (its creator only)."""
    await rooms.delete(snowflake(room_id, "room"), user_id)


async def cluster_summary(rooms: RoomManager) -> Summary:
    """`summary`, in cluster mode of every node: each one's rooms, clients and capacity added
    up (docs/cluster.md#app-rooms)."""
    own = summary(rooms)
    return own if rooms.cluster is None else await rooms.cluster.summary(own)


def summary(rooms: RoomManager) -> Summary:
    """Rooms and clients, in all and per protocol, and the server's capacity."""
    total, per_protocol = rooms.summary()
    return Summary(
        number_of_rooms=total.number_of_rooms,
        max_clients=rooms.capacity,
        current_clients=total.current_clients,
        committed_clients=total.committed_clients,
        protocols={
            name: ProtocolCounts(
                number_of_rooms=c.number_of_rooms,
                current_clients=c.current_clients,
                committed_clients=c.committed_clients,
            )
            for name, c in per_protocol.items()
        },
    )
