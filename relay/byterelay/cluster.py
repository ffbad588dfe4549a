"""The byte relay in cluster mode: one live login per client id across the nodes, and transfers
to an id logged in on another node forwarded through Redis (docs/cluster.md#byte-relay-ids).

Imported only when `broker` is set. relayd clients cannot be redirected, so every node accepts
every client and forwards:

- **one login per id**: a login takes the id's lease (`relay-id:<hex id>`, the key and value
  format of relay.cluster.lease) whoever held it, with a fresh fencing token, and tells the
  previous holder node (a kick on the id's topic, carrying the new token): that node closes its
  connection as REPLACED, as one node does for a second login. A holder renews its ids' leases
  every third of `lease_ttl_s` in batches (one script per batch); a renewal that finds another
  value there also closes the connection. A logout releases the lease (compare-and-delete).
- **transfers**: a transfer to an id with no connection on this node is published, unchanged,
  on the id's topic `relay:r:<hex id>`; the node holding the id listens there while it does,
  checks the frames (the payload cap, `to` being that id) and queues them for the connection
  with the same slow-receiver policy as a local transfer (wait up to `relay_stall_s` for room,
  then cut the receiver). Nobody listening: Redis drops it, as relayd drops a transfer to an
  offline id.

Bounds (policy "drop newest", counted): the transfers waiting to be published, and those
received and waiting to be queued, each hold at most `relay_forward_queue_bytes` (one larger
frame is taken into an empty queue). The TCP sender is not slowed down by a remote receiver:
there is no backpressure across nodes.

Resource handling: `run()` owns the claim/release task, the renewal task, the publisher and the
deliverer; they end with the node.

Error handling: a Redis error on a claim leaves the login local (the id works on this node,
and is claimed again at each renewal tick until Redis answers); a failed publish batch is
dropped and counted.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

import trio

from relay.byterelay.hub import Why
from relay.cluster.broker import frame
from relay.cluster.lease import Lease, Leases, holder_of
from relay.protocol.relayd import MAX_PAYLOAD_LEN, Parser, RelaydError, Transfer

if TYPE_CHECKING:
    from collections.abc import Callable

    import coredis

    from relay.byterelay.hub import ByteRelay
    from relay.cluster.broker import Broker
    from relay.config import Settings

log = logging.getLogger("relay.byterelay")

TRANSFER = b"T"  # a message on an id's topic: relayd frames for that id
KICK = b"K"  # ...or: another node took the id, with this fencing token (8 bytes, big-endian)
# (`parse` matches these two literally.)
RENEW_BATCH = 500  # leases renewed per script call
PUBLISH_BATCH = 64

# Take the id whoever holds it: the previous value (or false) and the new token.
_CLAIM = """
local old = redis.call('GET', KEYS[1])
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
return {old or false, token}
"""


def id_name(client_id: bytes) -> str:
    return f"relay-id:{client_id.hex()}"


def id_topic(client_id: bytes) -> str:
    return f"relay:r:{client_id.hex()}"


def kick_message(token: int) -> bytes:
    return KICK + token.to_bytes(8, "big")


def parse(data: bytes) -> tuple[bytes, int | bytes] | None:
    """A message on an id's topic: (KICK, token) or (TRANSFER, frames); None if neither."""
    if data.startswith(KICK) and len(data) == 9:
        return KICK, int.from_bytes(data[1:], "big")
    if data.startswith(TRANSFER) and len(data) > 1:
        return TRANSFER, data[1:]
    return None


class _Bytes:
    """A queue bounded in bytes (drop newest; one item larger than the bound fits when empty)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.items: deque[tuple[bytes, bytes]] = deque()
        self.ready = trio.Event()

    def put(self, key: bytes, data: bytes) -> bool:
        if self.items and self.used + len(data) > self.limit:
            return False
        self.items.append((key, data))
        self.used += len(data)
        self.ready.set()
        return True

    async def take(self, max_items: int) -> list[tuple[bytes, bytes]]:
        while not self.items:
            self.ready = trio.Event()
            await self.ready.wait()
        taken = [self.items.popleft() for _ in range(min(max_items, len(self.items)))]
        self.used -= sum(len(data) for _, data in taken)
        return taken


class ClusterRelay:
    """`RelayCluster` for this node's byte relay (module doc)."""

    def __init__(
        self,
        redis: coredis.Redis[bytes],
        broker: Broker,
        relay: ByteRelay,
        settings: Settings,
    ) -> None:
        self.redis = redis
        self.broker = broker
        self.node_id = broker.node_id
        self.relay = relay
        self.leases = Leases(redis, ttl_s=settings.lease_ttl_s)
        self._claim = redis.register_script(_CLAIM)
        self.held: dict[bytes, Lease] = {}  # ids whose lease this node holds
        self._unclaimed: set[bytes] = set()  # logins here whose claim failed (Redis): retried
        # Logins and logouts in order, for the claim task: (id, True) a login, (id, False) not.
        self._changes: deque[tuple[bytes, bool]] = deque()
        self._changed = trio.Event()
        self.outgoing = _Bytes(settings.relay_forward_queue_bytes)
        self.incoming = _Bytes(settings.relay_forward_queue_bytes)
        self.forwarded = 0  # transfers (frames) published for another node
        self.received = 0  # transfers from other nodes queued for a connection here
        self.dropped = 0  # frames dropped: a queue full, a failed publish, or a bad frame
        self.kicked = 0  # connections here closed by a login on another node
        relay.cluster = self

    # -- the hub's hooks (synchronous) ----------------------------------------------------------

    def logged_in(self, client_id: bytes) -> None:
        self._changes.append((client_id, True))
        self._changed.set()

    def logged_out(self, client_id: bytes) -> None:
        self._changes.append((client_id, False))
        self._changed.set()

    def forward(self, transfer: Transfer) -> bool:
        if not self.outgoing.put(transfer.to, TRANSFER + bytes(transfer.raw)):
            self.dropped += transfer.count
            return False
        self.forwarded += transfer.count
        return True

    # -- logins ---------------------------------------------------------------------------------

    async def _follow_logins(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            while self._changes:
                client_id, login = self._changes.popleft()
                try:
                    if login:
                        await self._take(client_id)
                    else:
                        await self._give_up(client_id)
                except Exception:
                    log.warning("relay id lease not updated", exc_info=True)
                    if login:
                        self._unclaimed.add(client_id)

    async def _take(self, client_id: bytes) -> None:
        if self.relay.clients.get(client_id) is None or client_id in self.held:
            return  # logged out again meanwhile, or claimed already
        name = id_name(client_id)
        sent_at = trio.current_time()
        claimed: object = await self._claim(
            keys=[self.leases.key(name), self.leases.fence_key(name)],
            args=[self.node_id, self.leases.ttl_ms],
        )
        assert isinstance(claimed, list)
        old, token = claimed
        assert isinstance(token, int)
        self.held[client_id] = Lease(name, self.node_id, token, sent_at + self.leases.ttl_s)
        self.broker.listen(id_topic(client_id), self._handler(client_id))
        if old is not None:
            holder, _ = holder_of(old)
            if holder != self.node_id:
                # The id's topic reaches the node that held it (it listens there while it does).
                self.broker.publish(id_topic(client_id), kick_message(token))

    async def _give_up(self, client_id: bytes) -> None:
        if self.relay.clients.get(client_id) is not None:
            return  # logged in again here meanwhile: keep it
        lease = self.held.pop(client_id, None)
        self.broker.unlisten(id_topic(client_id))
        if lease is not None:
            await self.leases.release(lease)

    def _lost(self, client_id: bytes) -> None:
        """Another node's login took the id: the connection here is replaced."""
        self.held.pop(client_id, None)
        self.broker.unlisten(id_topic(client_id))
        peer = self.relay.clients.get(client_id)
        if peer is not None:
            self.kicked += 1
            self.relay.stats.replaced += 1
            peer.close(Why.REPLACED)

    async def _renew_forever(self) -> None:
        every = self.leases.ttl_s / 3
        while True:
            await trio.sleep(every)
            for client_id in list(self._unclaimed):  # Redis is back: claim them now
                try:
                    await self._take(client_id)
                except Exception:
                    break
                self._unclaimed.discard(client_id)
            held = list(self.held.items())
            for start in range(0, len(held), RENEW_BATCH):
                batch = held[start : start + RENEW_BATCH]
                try:
                    renewed = await self.leases.renew_many([lease for _, lease in batch])
                except Exception:  # kept locally: the connections are still here
                    log.warning("relay id leases not renewed", exc_info=True)
                    continue
                for (client_id, lease), ok in zip(batch, renewed, strict=True):
                    if not ok and self.held.get(client_id) is lease:
                        self._lost(client_id)

    # -- transfers ------------------------------------------------------------------------------

    def _handler(self, client_id: bytes) -> Callable[[bytes], None]:
        def heard(data: bytes) -> None:
            match parse(data):
                case (b"K", int() as token):
                    lease = self.held.get(client_id)
                    if lease is not None and lease.token < token:
                        self._lost(client_id)
                case (b"T", bytes() as frames):
                    if not self.incoming.put(client_id, frames):
                        self.dropped += 1
                case _:
                    self.dropped += 1

        return heard

    async def _publish_forever(self) -> None:
        mark = self.node_id
        while True:
            batch = await self.outgoing.take(PUBLISH_BATCH)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for to, data in batch:
                        pipe.publish(id_topic(to), frame(mark, data))
            except Exception as e:
                self.dropped += len(batch)
                log.warning("relay transfers not published", extra={"error": repr(e)})

    async def _deliver_forever(self) -> None:
        relay = self.relay
        while True:
            for client_id, raw in await self.incoming.take(PUBLISH_BATCH):
                # Frame by frame: a run may hold one over this node's cap among good ones.
                parser = Parser(MAX_PAYLOAD_LEN)
                parser.feed(raw)
                try:
                    frames = list(parser)
                    if parser.buffered_bytes or not frames:
                        raise RelaydError("an incomplete or empty forward")
                except RelaydError:
                    self.dropped += 1
                    continue
                for transfer in frames:
                    if (
                        not isinstance(transfer, Transfer)
                        or len(transfer.raw) - transfer.payload_offset > relay.max_payload_bytes
                    ):
                        self.dropped += 1
                        continue
                    target = relay.clients.get(client_id)
                    if transfer.to != client_id or target is None:
                        relay.stats.dropped_offline += 1
                        continue
                    self.received += 1
                    if target.outbox.put_nowait(transfer.raw):
                        relay.stats.frames_forwarded += 1
                        relay.stats.bytes_forwarded += len(transfer.raw)
                    else:
                        await relay.wait_for_room(target, transfer)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_logins)
            nursery.start_soon(self._renew_forever)
            nursery.start_soon(self._publish_forever)
            nursery.start_soon(self._deliver_forever)
            task_status.started()
