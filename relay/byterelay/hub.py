"""The byte relay's hub: which connection holds which client id, the relay rules, and counters.

Rules (relayd's, DESIGN §4): a connection logs in once with a client id; the last login wins
(the older connection with that id is closed at once). A transfer is forwarded unchanged to the
connection logged in as `to`; to an offline id it is dropped and counted. A transfer before the
login, a `from` other than the logged-in id, a second login with another id, or any malformed
frame closes the connection without a reply (RelaydError from `Peer.handle`). A heartbeat
(`to_len == 0`) is not forwarded; like any frame it shows the connection is alive.

Actors and the hot path: every connected client is served by its own reader and writer tasks
(`Peer` subclasses in tcp.py and ws.py), and its `Outbox` is owned by its writer: that pair of
tasks is the client's actor. Forwarding is one hop: the sender's reader parses a frame, looks
`to` up in `clients` (a dict) and queues the raw bytes into the receiver's outbox. After each
read (`Peer.flush`), every receiver it queued for either writes its queue to its socket at
once, without waiting, if its writer is idle (TCP; one `writev` for everything that read
brought it), or wakes its writer, which writes everything queued with one send. So an idle
receiver costs no task switch, and a busy one gets one write for many frames (DESIGN §1's
hybrid). A hub actor in between would add a channel hop and a task switch per frame and push
all traffic through one task, for no gain: the hub's state changes only in synchronous methods
on the Trio thread (no await between a check and its update), so it needs no lock and no inbox,
like the gateway hub.

Slow receivers (policy): each receiver's outbox holds at most `queue_bytes` (one larger frame
is taken into an empty outbox). When it is full, the sender's reader waits for room, so it
stops reading and TCP pushes back on the sender. If the receiver's writer releases nothing for
`stall_s`, the receiver is disconnected as a slow consumer (`slow_disconnects`), the frame is
dropped, and the sender goes on. A waiting sender is the one exception to "never await a
send you do not own": the wait is bounded by `stall_s` of no progress and ends in a decision.
"""

from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from relay.byterelay.outbox import Outbox
from relay.protocol.relayd import DEFAULT_MAX_PAYLOAD_BYTES, Login, RelaydError
from relay.realtime.gate import Gate

if TYPE_CHECKING:
    from relay.config import Settings
    from relay.protocol.relayd import Frame, Transfer

log = logging.getLogger("relay.byterelay")


class Why(enum.Enum):
    """Why a relay connection ended."""

    GONE = "gone"  # the client closed or reset it, or a write failed
    VIOLATION = "violation"  # a malformed frame or a broken rule
    TOO_LARGE = "too_large"  # a payload over the cap
    TEXT = "text"  # WebSocket only: a text message
    IDLE = "idle"  # nothing received for idle_s
    REPLACED = "replaced"  # a newer login with the same id
    SLOW = "slow"  # a full outbox made no progress for stall_s
    ENDED = "ended"  # cancelled from outside (shutdown)


@dataclass(slots=True)
class RelayStatistics:
    """Counters since start (both transports)."""

    connections: int = 0  # accepted so far
    open_connections: int = 0
    logins: int = 0
    replaced: int = 0  # connections closed by a newer login with the same id
    frames_forwarded: int = 0
    bytes_forwarded: int = 0
    heartbeats: int = 0
    dropped_offline: int = 0  # transfers to an id nobody is logged in as
    dropped_gone: int = 0  # the receiver left (or was cut) while the frame waited for room
    slow_disconnects: int = 0
    violations: int = 0  # VIOLATION, TOO_LARGE and TEXT closes
    idle_closes: int = 0
    peak_queue_bytes: int = 0  # the most any one outbox held (of connections that closed)


class RelayCluster(Protocol):
    """Cluster mode (relay.byterelay.cluster): one login per id across the nodes, and transfers
    to ids logged in on another node forwarded there. Synchronous: each call only queues."""

    forwarded: int  # frames published for another node
    received: int  # frames from other nodes queued for a connection here
    dropped: int  # frames dropped on the way (a queue full, a failed publish, over the cap)

    def logged_in(self, client_id: bytes) -> None:
        """A connection here logged in as `client_id` (the cluster kicks it elsewhere)."""

    def logged_out(self, client_id: bytes) -> None:
        """The connection here logged in as `client_id` is gone."""

    def forward(self, transfer: Transfer) -> bool:
        """Queue a transfer for the node its receiver is logged in on; False if dropped."""


class ByteRelay:
    """The hub: client id -> the connection logged in with it."""

    def __init__(
        self,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        idle_s: float = 120.0,
        queue_bytes: int = 1024 * 1024,
        stall_s: float = 2.0,
        max_connections: int = 10_000,
        max_connections_per_ip: int = 1_000,
    ) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.idle_s = idle_s
        self.queue_bytes = queue_bytes
        self.stall_s = stall_s
        self.gate = Gate(max_connections, max_connections_per_ip)  # the TCP listener's
        self.clients: dict[bytes, Peer] = {}
        self.stats = RelayStatistics()
        self.cluster: RelayCluster | None = None  # set in cluster mode only

    @classmethod
    def from_settings(cls, settings: Settings) -> ByteRelay:
        return cls(
            max_payload_bytes=settings.relay_max_payload_bytes,
            idle_s=settings.relay_idle_s,
            queue_bytes=settings.relay_queue_bytes,
            stall_s=settings.relay_stall_s,
            max_connections=settings.max_connections,
            max_connections_per_ip=settings.max_connections_per_ip,
        )

    def login(self, peer: Peer, client_id: bytes) -> None:
        """`peer` logged in (from Peer.handle): it takes the id; an older holder is closed."""
        old = self.clients.get(client_id)
        self.clients[client_id] = peer
        self.stats.logins += 1
        if old is not None:
            self.stats.replaced += 1
            old.close(Why.REPLACED)
        if self.cluster is not None:
            self.cluster.logged_in(client_id)

    def forget(self, peer: Peer, why: Why) -> None:
        """`peer` is closing (from Peer.close): it gives up its id and its counters are kept."""
        if peer.client_id is not None and self.clients.get(peer.client_id) is peer:
            del self.clients[peer.client_id]
            if self.cluster is not None:
                self.cluster.logged_out(peer.client_id)
        stats = self.stats
        stats.open_connections -= 1
        stats.peak_queue_bytes = max(stats.peak_queue_bytes, peer.outbox.high_water_bytes)
        if why in (Why.VIOLATION, Why.TOO_LARGE, Why.TEXT):
            stats.violations += 1
        elif why is Why.IDLE:
            stats.idle_closes += 1

    async def wait_for_room(self, target: Peer, transfer: Transfer) -> None:
        """The slow-receiver policy (module docstring): wait, or cut the receiver."""
        if await target.outbox.put(transfer.raw, self.stall_s):
            self.stats.frames_forwarded += transfer.count
            self.stats.bytes_forwarded += len(transfer.raw)
            return
        self.stats.dropped_gone += transfer.count
        if target.outbox.closed:
            return
        self.stats.slow_disconnects += 1
        log.info(
            "slow relay client disconnected",
            extra={"client_id": _show(target.client_id), "queued_bytes": target.outbox.used_bytes},
        )
        target.close(Why.SLOW)


class Peer(ABC):
    """One relay connection, TCP or WebSocket: its login state and its outbox.

    Subclasses run the reader and writer tasks and implement `_stop`, which ends them at once.
    """

    transport = "?"

    def __init__(self, relay: ByteRelay, remote: tuple[str, int] | None) -> None:
        self.relay = relay
        self.remote = remote
        self.outbox = Outbox(relay.queue_bytes)
        self.client_id: bytes | None = None
        self.why: Why | None = None  # set once, when the connection starts to close
        self._touched: list[Peer] = []  # receivers of frames queued since the last flush
        relay.stats.connections += 1
        relay.stats.open_connections += 1

    def handle(self, frame: Frame) -> tuple[Peer, Transfer] | None:
        """Apply one frame (or a run of transfers) from this client; a transfer is queued for
        its receiver, to be sent by `flush`. Returns (receiver, frame) if the receiver's outbox
        is full: the caller then calls `flush` and awaits `relay.wait_for_room`.

        Raises:
            RelaydError: the frame breaks the rules; close the connection without a reply.
        """
        relay = self.relay
        if isinstance(frame, Login):
            if self.client_id is None:
                self.client_id = frame.client_id
                relay.login(self, frame.client_id)
            elif frame.client_id != self.client_id:
                raise RelaydError("a second login with another id")
            return None  # the same login again changes nothing
        if frame.sender != self.client_id:
            if self.client_id is None:
                raise RelaydError("a transfer before login")
            raise RelaydError("`from` is not the logged-in id")
        to = frame.to
        if not to:
            relay.stats.heartbeats += frame.count
            return None
        target = relay.clients.get(to)
        if target is None:
            if relay.cluster is None or not relay.cluster.forward(frame):
                relay.stats.dropped_offline += frame.count
            return None
        if target.outbox.put_nowait(frame.raw, wake=False):
            relay.stats.frames_forwarded += frame.count
            relay.stats.bytes_forwarded += len(frame.raw)
            touched = self._touched
            if not touched or touched[-1] is not target:
                touched.append(target)
            return None
        return target, frame

    def flush(self) -> None:
        """Send what `handle` queued: each receiver writes it at once or wakes its writer.
        The reader calls this after each read, and before it waits for anything."""
        if self._touched:
            touched, self._touched = self._touched, []
            for target in touched:
                target.write_queued()

    def write_queued(self) -> None:
        """Frames were queued for this client without waking its writer (`handle`): write
        them now, or wake the writer. TcpPeer writes at once while its writer is idle."""
        self.outbox.wake()

    def close(self, why: Why) -> None:
        """End this connection at once (idempotent): it leaves the hub, its queue is dropped."""
        if self.why is not None:
            return
        self.why = why
        self.relay.forget(self, why)
        self.outbox.close()
        self.flush()  # what it queued before a bad frame still goes out
        log.debug(
            "relay connection closed",
            extra={
                "transport": self.transport,
                "why": why.value,
                "client_id": _show(self.client_id),
                "remote": self.remote,
            },
        )
        self._stop(why)

    @abstractmethod
    def _stop(self, why: Why) -> None:
        """End this connection's tasks at once (the transport decides how)."""


def _show(client_id: bytes | None) -> str | None:
    """A client id for logs: ids are opaque bytes, usually UTF-8."""
    return None if client_id is None else client_id[:64].decode("utf-8", "replace")
