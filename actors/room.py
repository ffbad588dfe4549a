"""The room actor: one app room's members, its host and rules, and the fan-out of what they relay.

Theory of operation. Members are kept by client id in join order (their seniority; a reconnect
keeps it). A member is *connected* (it has an outbox: its WebSocket connection) or *away*
(disconnected, holding its slot, identity and host status for `reconnect_grace_s`). Client ids
count up from 1 and are never reused within a room's life, so a stale id never names someone
else. The first member to join is the host.

Relaying: the sender's id comes from the connection that joined (the endpoint passes it with
the connection; a message from a connection that is no longer the member's is dropped), never
from the client's frame. Each forwarded frame is built once and the same bytes are queued to
every receiver with `send_nowait`.

| protocol | broadcast, target | host   | when the host leaves                            |
|----------|-------------------|--------|-------------------------------------------------|
| host     | the host only     | anyone | host_migrating, then host_assigned (the heir)   |
| peer     | anyone            | anyone | host_assigned (the heir)                        |

The heir is the longest-connected member still connected (an away one if none is).

Join/leave/disconnect/reconnect events go to the host in a `host` room and to everyone else in
a `peer` room. `list`, `kick` and `grant_host` are the host's. A room with no members closes
after `empty_grace_s` (also a new room nobody joins).

Resource handling: `run()` owns one nursery for timers (a reconnect grace per away member, the
empty-room grace; at most members + 1). A timer only sends the actor a message carrying the
generation it was started for; stale ones are ignored, and a member's timer is cancelled when
it reconnects or leaves. Outboxes belong to their connections: the actor only queues to them
with `send_nowait` and closes them with `close_nowait`; it never awaits one.

Error handling: an outbox that refuses a frame is a slow consumer (full; its connection is
closed with 4010) or already closing: either way the member becomes away and may reconnect. A
client's bad request is answered with a non-fatal `error` frame to that client alone. A crash is
logged by the registry; `on_crash` closes every member's connection (4000) and the registry
restarts the room empty, with the same id, secret and settings.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec
import trio

from actors.base import Actor, Reply
from actors.errors import ActorStopped
from relay.protocol import rooms as wire
from relay.protocol.rooms import Close, Kind, RoomError

if TYPE_CHECKING:
    from collections.abc import Iterable


class Outbox(Protocol):
    """What the room needs of a member's connection (`relay.realtime.connection.Connection`)."""

    def send_nowait(self, frame: bytes) -> bool: ...

    def close_nowait(self, code: int | None = None, reason: str = "") -> None: ...

    @property
    def closing(self) -> bool: ...


class Directory(Protocol):
    """The room manager's view of every room, kept up to date by the rooms themselves."""

    def room_changed(self, room_id: int, clients: int, host_id: int | None, status: str) -> None:
        """Called after every change of membership, host or status."""

    def can_admit(self) -> bool:
        """Whether the server-wide client capacity has room for one more client."""

    def room_closed(self, room_id: int) -> None:
        """Called once when the room stops (not after a crash: it restarts)."""


@dataclass(frozen=True, slots=True)
class RoomConfig:
    room_id: int
    secret: str
    protocol: str  # "host" | "peer"
    max_clients: int
    public: bool
    metadata: bytes  # a JSON object
    reconnect_grace_s: float
    empty_grace_s: float


# -- messages ------------------------------------------------------------------------------------


class Join(msgspec.Struct, frozen=True):
    """A new client; answered with its client id after `connected` is queued to `outbox`."""

    secret: str
    outbox: Outbox
    reply: Reply[int]


class Rejoin(msgspec.Struct, frozen=True):
    """A member coming back (within its grace, or from a second connection)."""

    client_id: int
    client_secret: str
    outbox: Outbox
    reply: Reply[int]


class Relay(msgspec.Struct, frozen=True):
    client_id: int
    outbox: Outbox
    kind: Kind
    target: int  # for TARGET; 0 otherwise
    payload: bytes  # raw JSON (`binary` False) or the binary payload
    binary: bool


class ListMembers(msgspec.Struct, frozen=True):
    client_id: int
    outbox: Outbox


class Kick(msgspec.Struct, frozen=True):
    client_id: int
    outbox: Outbox
    target: int
    reason: str | None


class GrantHost(msgspec.Struct, frozen=True):
    client_id: int
    outbox: Outbox
    target: int


class Gone(msgspec.Struct, frozen=True):
    """A member's connection ended: it left (`left`) or may come back within the grace."""

    client_id: int
    outbox: Outbox
    left: bool


class Configure(msgspec.Struct, frozen=True):
    max_clients: int
    public: bool
    metadata: bytes
    reply: Reply[None]


class CloseRoom(msgspec.Struct, frozen=True):
    message: str
    reply: Reply[None]


class GraceOver(msgspec.Struct, frozen=True):
    client_id: int
    generation: int


class EmptyOver(msgspec.Struct, frozen=True):
    generation: int


RoomMsg = (
    Join
    | Rejoin
    | Relay
    | ListMembers
    | Kick
    | GrantHost
    | Gone
    | Configure
    | CloseRoom
    | GraceOver
    | EmptyOver
)


# -- the actor -----------------------------------------------------------------------------------


class _Member:
    __slots__ = ("client_id", "generation", "outbox", "secret", "timer")

    def __init__(self, client_id: int, secret: str, outbox: Outbox) -> None:
        self.client_id = client_id
        self.secret = secret
        self.outbox: Outbox | None = outbox
        self.generation = 0
        self.timer: trio.CancelScope | None = None


def _frame_error(code: str, message: str) -> bytes:
    return wire.error_frame(RoomError(code, message))


class RoomActor(Actor[RoomMsg]):
    inbox_size = 256
    batch_max = 64  # relays queued meanwhile fan out together: receivers coalesce their writes

    def __init__(self, key: str, config: RoomConfig, directory: Directory) -> None:
        super().__init__(key)
        self.room_id = config.room_id
        self._secret = config.secret
        self._host_protocol = config.protocol == "host"
        self._protocol = config.protocol
        self._max_clients = config.max_clients
        self._public = config.public
        self._metadata = config.metadata
        self._reconnect_grace_s = config.reconnect_grace_s
        self._empty_grace_s = config.empty_grace_s
        self._directory = directory
        self._members: dict[int, _Member] = {}
        self._host_id: int | None = None
        self._next_id = 1
        self._closing = False
        self._empty_generation = 0
        self._empty_timer: trio.CancelScope | None = None
        self._timers: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._timers = nursery
            await super().run(task_status=task_status)
            nursery.cancel_scope.cancel()

    async def on_start(self) -> None:
        self._report()
        self._start_empty_timer()

    async def on_stop(self) -> None:
        self._directory.room_closed(self.room_id)

    def on_crash(self, exc: Exception) -> None:
        frame = _frame_error("internal_error", "the room failed; connect again")
        for member in self._members.values():
            if member.outbox is not None:
                member.outbox.send_nowait(frame)
                member.outbox.close_nowait(Close.INTERNAL_ERROR, "internal error")
        self._members.clear()

    async def handle(self, msg: RoomMsg) -> None:
        match msg:
            case Relay():
                self._relay(msg)
            case Join(secret, outbox, reply):
                self._join(secret, outbox, reply)
            case Rejoin(client_id, client_secret, outbox, reply):
                self._rejoin(client_id, client_secret, outbox, reply)
            case Gone(client_id, outbox, left):
                member = self._members.get(client_id)
                if member is not None and member.outbox is outbox:
                    if left:
                        self._remove(member, "left")
                    else:
                        self._away(member)
            case ListMembers(client_id, outbox):
                member = self._sender(client_id, outbox)
                if member is not None and self._require_host(member):
                    frame = wire.Members(host_id=self._host_id, members=self._member_infos())
                    self._send(member, wire.event_frame(frame))
            case Kick(client_id, outbox, target, reason):
                self._kick(client_id, outbox, target, reason)
            case GrantHost(client_id, outbox, target):
                self._grant_host(client_id, outbox, target)
            case Configure(max_clients, public, metadata, reply):
                self._max_clients, self._public, self._metadata = max_clients, public, metadata
                update = wire.RoomUpdated(
                    max_clients=max_clients, public=public, metadata=msgspec.Raw(metadata)
                )
                self._send_all(self._connected(), wire.event_frame(update))
                self._report()
                reply.send(None)
            case CloseRoom(message, reply):
                self._close_room(message)
                reply.send(None)
            case GraceOver(client_id, generation):
                member = self._members.get(client_id)
                if member is not None and member.outbox is None and member.generation == generation:
                    self._remove(member, "timed_out")
            case EmptyOver(generation):
                if generation == self._empty_generation and not self._members:
                    self._closing = True
                    self._report()
                    self.close()

    # -- joining ---------------------------------------------------------------------------------

    def _join(self, secret: str, outbox: Outbox, reply: Reply[int]) -> None:
        if outbox.closing:  # the joiner gave up waiting (or left) before we got here
            reply.fail(RoomError("busy", "the connection closed while joining"))
        elif self._closing:
            reply.fail(RoomError("unknown_room", "no such room"))
        elif not hmac.compare_digest(secret.encode(), self._secret.encode()):
            reply.fail(RoomError("invalid_secret", "wrong room secret"))
        elif len(self._members) >= self._max_clients:
            reply.fail(RoomError("room_full", f"the room holds {self._max_clients} clients"))
        elif not self._directory.can_admit():
            reply.fail(RoomError("server_full", "the server is at its client capacity"))
        else:
            client_id = self._next_id
            self._next_id += 1
            member = self._members[client_id] = _Member(
                client_id, secrets.token_urlsafe(24), outbox
            )
            if self._host_id is None:
                self._host_id = client_id
            self._cancel_empty_timer()
            self._send(member, self._connected_frame(member))
            self._notify(client_id, wire.event_frame(wire.ClientJoined(client_id=client_id)))
            self._report()
            reply.send(client_id)

    def _rejoin(self, client_id: int, secret: str, outbox: Outbox, reply: Reply[int]) -> None:
        member = self._members.get(client_id)
        if outbox.closing:
            reply.fail(RoomError("busy", "the connection closed while joining"))
            return
        if self._closing:
            reply.fail(RoomError("unknown_room", "no such room"))
            return
        if member is None or not hmac.compare_digest(secret.encode(), member.secret.encode()):
            reply.fail(RoomError("invalid_client", "unknown client or wrong client secret"))
            return
        came_back = member.outbox is None
        if member.outbox is not None:  # the same client on a new connection: it wins
            member.outbox.send_nowait(_frame_error("replaced", "reconnected elsewhere"))
            member.outbox.close_nowait(Close.REPLACED, "reconnected elsewhere")
        member.outbox = outbox
        member.generation += 1
        if member.timer is not None:
            member.timer.cancel()
            member.timer = None
        self._send(member, self._connected_frame(member))
        if came_back:
            self._notify(client_id, wire.event_frame(wire.ClientReconnected(client_id=client_id)))
        self._report()
        reply.send(client_id)

    def _connected_frame(self, member: _Member) -> bytes:
        return wire.event_frame(
            wire.Connected(
                room_id=str(self.room_id),
                client_id=member.client_id,
                client_secret=member.secret,
                host_id=self._host_id,
                protocol=self._protocol,
                max_clients=self._max_clients,
                metadata=msgspec.Raw(self._metadata),
                members=self._member_infos(),
            )
        )

    # -- relaying --------------------------------------------------------------------------------

    def _relay(self, msg: Relay) -> None:
        sender = self._sender(msg.client_id, msg.outbox)
        if sender is None:
            return
        kind = msg.kind
        if self._host_protocol and kind is not Kind.HOST and sender.client_id != self._host_id:
            text = "in a host room only the host broadcasts and targets; send to the host"
            self._send(sender, _frame_error("forbidden", text))
            return
        if kind is Kind.BROADCAST:
            receivers: Iterable[_Member] = (
                m for m in self._members.values() if m is not sender and m.outbox is not None
            )
        else:
            receiver_id = msg.target if kind is Kind.TARGET else self._host_id
            receiver = self._members.get(receiver_id) if receiver_id is not None else None
            if receiver is None:
                self._send(sender, _frame_error("unknown_client", f"no client {receiver_id}"))
                return
            if receiver.outbox is None:
                self._send(sender, _frame_error("not_connected", f"{receiver_id} is away"))
                return
            receivers = (receiver,)
        if msg.binary:
            frame = wire.relay_binary_frame(kind, sender.client_id, msg.payload)
        else:
            frame = wire.relay_text_frame(kind, sender.client_id, msg.payload)
        self._send_all(receivers, frame)

    # -- host powers -----------------------------------------------------------------------------

    def _kick(self, client_id: int, outbox: Outbox, target: int, reason: str | None) -> None:
        member = self._sender(client_id, outbox)
        if member is None or not self._require_host(member):
            return
        victim = self._members.get(target)
        if victim is None:
            self._send(member, _frame_error("unknown_client", f"no client {target}"))
        elif victim is member:
            self._send(member, _frame_error("forbidden", "the host cannot kick itself"))
        else:
            if victim.outbox is not None:
                text = f"kicked by the host: {reason}" if reason else "kicked by the host"
                victim.outbox.send_nowait(_frame_error("kicked", text))
                victim.outbox.close_nowait(Close.KICKED, "kicked")
                victim.outbox = None
            self._remove(victim, "kicked")

    def _grant_host(self, client_id: int, outbox: Outbox, target: int) -> None:
        member = self._sender(client_id, outbox)
        if member is None or not self._require_host(member):
            return
        heir = self._members.get(target)
        if heir is None:
            self._send(member, _frame_error("unknown_client", f"no client {target}"))
        elif heir.outbox is None:
            self._send(member, _frame_error("not_connected", f"{target} is away"))
        else:
            self._host_id = target
            self._send_all(self._connected(), wire.event_frame(wire.HostAssigned(host_id=target)))
            self._report()

    def _require_host(self, member: _Member) -> bool:
        if member.client_id == self._host_id:
            return True
        self._send(member, _frame_error("not_host", "only the host may do this"))
        return False

    # -- leaving ---------------------------------------------------------------------------------

    def _away(self, member: _Member) -> None:
        """The member's connection is gone: hold its slot for the reconnect grace."""
        member.outbox = None
        member.generation += 1
        member.timer = self._start_timer(
            self._reconnect_grace_s, GraceOver(member.client_id, member.generation)
        )
        client_id = member.client_id
        self._notify(client_id, wire.event_frame(wire.ClientDisconnected(client_id=client_id)))
        self._report()

    def _remove(self, member: _Member, reason: Literal["left", "kicked", "timed_out"]) -> None:
        """The member is out for good (left, kicked, grace over); its outbox is not closed."""
        del self._members[member.client_id]
        if member.timer is not None:
            member.timer.cancel()
        client_id = member.client_id
        if client_id == self._host_id:
            self._migrate_host(client_id)
        self._notify(
            client_id, wire.event_frame(wire.ClientLeft(client_id=client_id, reason=reason))
        )
        if not self._members:
            self._start_empty_timer()
        self._report()

    def _migrate_host(self, previous: int) -> None:
        """The host is gone: the longest-connected member takes over (an away one if none)."""
        connected = list(self._connected())
        heirs = connected or list(self._members.values())
        self._host_id = heirs[0].client_id if heirs else None
        if not connected:
            return
        if self._host_protocol:
            migrating = wire.HostMigrating(previous_host_id=previous)
            self._send_all(connected, wire.event_frame(migrating))
        assigned = wire.HostAssigned(host_id=self._host_id)
        self._send_all(self._connected(), wire.event_frame(assigned))

    def _close_room(self, message: str) -> None:
        self._closing = True
        frame = _frame_error("room_closed", message)
        for member in self._members.values():
            if member.timer is not None:
                member.timer.cancel()
            if member.outbox is not None:
                member.outbox.send_nowait(frame)
                member.outbox.close_nowait(Close.ROOM_CLOSED, "room closed")
        self._members.clear()
        self._host_id = None
        self._report()
        self.close()

    # -- helpers ---------------------------------------------------------------------------------

    def _sender(self, client_id: int, outbox: Outbox) -> _Member | None:
        """The member behind a request, if `outbox` is still its connection (else: stale)."""
        member = self._members.get(client_id)
        return member if member is not None and member.outbox is outbox else None

    def _connected(self) -> Iterable[_Member]:
        return [m for m in self._members.values() if m.outbox is not None]

    def _member_infos(self) -> list[wire.MemberInfo]:
        return [
            wire.MemberInfo(client_id=m.client_id, connected=m.outbox is not None)
            for m in self._members.values()
        ]

    def _notify(self, subject: int, frame: bytes) -> None:
        """Membership events: to the host (host protocol) or everyone else (peer protocol)."""
        if self._host_protocol:
            host = self._members.get(self._host_id) if self._host_id is not None else None
            audience = [host] if host is not None and host.client_id != subject else []
        else:
            audience = [m for m in self._members.values() if m.client_id != subject]
        self._send_all((m for m in audience if m.outbox is not None), frame)

    def _send(self, member: _Member, frame: bytes) -> None:
        outbox = member.outbox
        if outbox is not None and not outbox.send_nowait(frame):
            self._cut(member)

    def _send_all(self, members: Iterable[_Member], frame: bytes) -> None:
        """Queue one frame to many; the slow are cut after the loop, never waited for."""
        slow: list[_Member] = []
        for member in members:
            outbox = member.outbox
            if outbox is not None and not outbox.send_nowait(frame):
                slow.append(member)
        for member in slow:
            self._cut(member)

    def _cut(self, member: _Member) -> None:
        """The member's outbox refused a frame: full (slow consumer) or its connection closing."""
        outbox = member.outbox
        if outbox is None:
            return
        if not outbox.closing:
            outbox.close_nowait(Close.SLOW_CONSUMER, "too slow to keep up; reconnect")
        self._away(member)

    def _report(self) -> None:
        if self._closing:
            status = "closing"
        elif not self._members:
            status = "empty"
        elif len(self._members) >= self._max_clients:
            status = "full"
        else:
            status = "open"
        self._directory.room_changed(self.room_id, len(self._members), self._host_id, status)

    # -- timers ----------------------------------------------------------------------------------

    def _start_empty_timer(self) -> None:
        self._cancel_empty_timer()
        self._empty_timer = self._start_timer(
            self._empty_grace_s, EmptyOver(self._empty_generation)
        )

    def _cancel_empty_timer(self) -> None:
        self._empty_generation += 1
        if self._empty_timer is not None:
            self._empty_timer.cancel()
            self._empty_timer = None

    def _start_timer(self, delay_s: float, msg: RoomMsg) -> trio.CancelScope:
        scope = trio.CancelScope()
        assert self._timers is not None
        self._timers.start_soon(self._timer, scope, delay_s, msg)
        return scope

    async def _timer(self, scope: trio.CancelScope, delay_s: float, msg: RoomMsg) -> None:
        with scope, contextlib.suppress(ActorStopped):
            await trio.sleep(delay_s)
            await self.send(msg)
