"""The app-room endpoint (`/v1/websocket` on the realtime listener): join a room, then relay.

Theory of operation. The first message must be `connect` or `reconnect`, within
JOIN_TIMEOUT_S. The room's actor answers it: it queues `connected` to this connection itself,
so nothing the room sends can overtake it. From then on every message is checked here (size,
rate, decoding) and handed to the room's inbox with the client id this connection joined as;
that id is the sender the room stamps on what it forwards, whatever the frame says.

| state   | connect/reconnect        | relay, list, kick, grant_host | leave        | bad frame  |
|---------|--------------------------|-------------------------------|--------------|------------|
| joining | -> joined / error + 4004 | error + 4003                  | error + 4003 | error 4002 |
| joined  | error + 4005             | to the room                   | close 1000   | error 4002 |

Every message counts against the per-client rate (over it: error + 4008) and the size limit
(over it: error + 1009). A peer close with 1000 is a `leave`; any other end of the connection
keeps the client's slot for the room's reconnect grace.

Resource handling: the connection belongs to the listener; this endpoint only reads from it and
queues to it. Handing a message to the room waits up to ROOM_SEND_TIMEOUT_S for inbox space
(TCP pushes back on this client meanwhile); after that the message is dropped with a `busy`
error. On the way out the room is told the connection is gone (shielded, at most GOODBYE_S).

Error handling: `RoomError`s become an `error` frame and, if fatal, the close code of
`relay.protocol.rooms.ERRORS`; a room that stopped ends the connection (the room closed it
already). Transport failures just end the loop.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import trio

from actors import ActorStopped, AskTimeout, Overloaded
from actors.room import Gone, GrantHost, Join, Kick, ListMembers, Rejoin, Relay
from relay.chat import rooms as chat_rooms
from relay.protocol import rooms as wire
from relay.protocol.rooms import Close, Kind, RoomError
from relay.ratelimit import RateLimiter
from relay.realtime.connection import ConnectionClosed

if TYPE_CHECKING:
    from actors.base import Actor, Reply
    from actors.room import RoomMsg
    from relay.chat.rooms import RoomManager
    from relay.realtime.connection import Connection
    from relay.realtime.listener import Request

log = logging.getLogger("relay.rooms")
ENDPOINT = "/v1/websocket"
JOIN_TIMEOUT_S = 10.0
ROOM_SEND_TIMEOUT_S = 2.0
GOODBYE_S = 1.0
NORMAL_CLOSURE = 1000


class RoomConnection:
    def __init__(self, rooms: RoomManager, conn: Connection) -> None:
        settings = rooms.settings
        self.rooms = rooms
        self.conn = conn
        self.max_bytes = settings.room_message_bytes
        self.limiter = RateLimiter(settings.room_message_rate, 1.0, max_keys=1)
        self.room: Actor[RoomMsg] | None = None
        self.client_id = 0
        self.left_normally = False  # the peer closed with 1000: that is a `leave`

    async def run(self) -> None:
        left = False
        try:
            if not await self._join():
                return
            assert self.room is not None
            left = await self._relay_loop(self.room)
        except RoomError as e:
            # Before joining every refusal closes (a join that was `busy` too).
            self._fail(e, Close.JOIN_FAILED if self.room is None else None)
        finally:
            if self.room is not None:
                with trio.move_on_after(GOODBYE_S, shield=True), contextlib.suppress(ActorStopped):
                    await self.room.send(Gone(self.client_id, self.conn, left))

    def _fail(self, error: RoomError, close: int | None = None) -> None:
        """Tell the client why, then close with the error's close code (if it has one)."""
        self.conn.send_nowait(wire.error_frame(error))
        code = error.close or close
        if code is not None:
            self.conn.close_nowait(code, error.code)

    async def _receive(self) -> str | bytes | None:
        """The next message within the limits; None once the connection has ended."""
        try:
            data = await self.conn.receive()
        except ConnectionClosed as e:
            self.left_normally = e.code == NORMAL_CLOSURE
            return None
        size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
        if size > self.max_bytes:
            raise RoomError("message_too_big", f"messages are limited to {self.max_bytes} bytes")
        if not self.limiter.hit("messages", trio.current_time()).allowed:
            raise RoomError("rate_limited", "too many messages")
        return data

    async def _join(self) -> bool:
        """Join through the first message; False if the connection ended first."""
        data: str | bytes | None = None
        with trio.move_on_after(JOIN_TIMEOUT_S) as timeout:
            data = await self._receive()
        if timeout.cancelled_caught:
            raise RoomError("join_timeout", f"send connect within {JOIN_TIMEOUT_S:g} s")
        if data is None:
            return False
        if isinstance(data, bytes):
            raise RoomError("not_joined", "send connect or reconnect first")
        frame = wire.decode_text(data)
        match frame:
            case wire.Connect(room_id, secret):
                room = await self._room(room_id)

                def build(reply: Reply[int]) -> RoomMsg:
                    return Join(secret, self.conn, reply)

            case wire.Reconnect(room_id, client_id, client_secret):
                room = await self._room(room_id)

                def build(reply: Reply[int]) -> RoomMsg:
                    return Rejoin(client_id, client_secret, self.conn, reply)

            case _:
                raise RoomError("not_joined", "send connect or reconnect first")
        try:
            self.client_id = await room.ask(build, timeout_s=ROOM_SEND_TIMEOUT_S)
        except ActorStopped:
            raise RoomError("unknown_room", "no such room") from None
        except AskTimeout:
            raise RoomError("busy", "the room did not answer in time; connect again") from None
        self.room = room
        return True

    async def _room(self, room_id: str) -> Actor[RoomMsg]:
        """The room's actor here; in cluster mode, a room on another node is a `moved` frame
        with that node's URL, then close 4014, and a room whose node died is taken over here."""
        try:
            return await self.rooms.actor(room_id)
        except RoomError as e:
            if e.code != "unknown_room":
                raise
            place = await chat_rooms.elsewhere(self.rooms, room_id)
            if place is None:
                return await self.rooms.actor(room_id)  # adopted here, or unknown_room
            url = f"{place.ws}{ENDPOINT}"
            self.conn.send_nowait(wire.event_frame(wire.Moved(room_id=room_id, url=url)))
            raise RoomError("room_elsewhere", f"the room is on another node: {url}") from None

    async def _relay_loop(self, room: Actor[RoomMsg]) -> bool:
        """Hand messages to the room until the connection ends; True if the client left."""
        conn, client_id = self.conn, self.client_id
        while True:
            data = await self._receive()
            if data is None:
                return self.left_normally
            msg: RoomMsg
            if isinstance(data, bytes):
                kind, target, payload = wire.decode_binary(data)
                msg = Relay(client_id, conn, kind, target, payload, True)
            else:
                match wire.decode_text(data):
                    case wire.Broadcast(data=raw):
                        msg = Relay(client_id, conn, Kind.BROADCAST, 0, bytes(raw), False)
                    case wire.Target(to=to, data=raw):
                        msg = Relay(client_id, conn, Kind.TARGET, to, bytes(raw), False)
                    case wire.ToHost(data=raw):
                        msg = Relay(client_id, conn, Kind.HOST, 0, bytes(raw), False)
                    case wire.ListMembers():
                        msg = ListMembers(client_id, conn)
                    case wire.Kick(client_id=target, reason=reason):
                        msg = Kick(client_id, conn, target, reason)
                    case wire.GrantHost(client_id=target):
                        msg = GrantHost(client_id, conn, target)
                    case wire.Leave():
                        return True
                    case wire.Connect() | wire.Reconnect():
                        raise RoomError("already_joined", "this connection already joined")
            if not await self._hand_over(room, msg):
                return False

    async def _hand_over(self, room: Actor[RoomMsg], msg: RoomMsg) -> bool:
        """Queue `msg` for the room; False if the room has stopped."""
        try:
            try:
                room.tell(msg)  # no deadline scope (or checkpoint) while the room has space
                return True
            except Overloaded:
                pass
            with trio.move_on_after(ROOM_SEND_TIMEOUT_S):
                await room.send(msg)
                return True
        except ActorStopped:
            return False
        self._fail(RoomError("busy", "the room is busy; the message was dropped"))
        return True


async def room_endpoint(rooms: RoomManager, conn: Connection, request: Request) -> None:
    await RoomConnection(rooms, conn).run()
