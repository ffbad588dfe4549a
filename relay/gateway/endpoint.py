"""The chat gateway endpoint (`/v1/gateway` on the realtime listener): HELLO, IDENTIFY or
RESUME, then heartbeats, presence updates and dispatched events until the socket closes.

Theory of operation. A connection starts unauthenticated; only HEARTBEAT, IDENTIFY and RESUME
are accepted then (anything else closes with 4003). IDENTIFY checks the access token, builds a
Session, registers it with the hub and dispatches READY as the session's first event. RESUME
re-attaches an existing session of the same user and replays, in order, every event after the
client's `seq`; if the replay buffer no longer has them, the client gets INVALID_SESSION
(d = false) and must IDENTIFY. A session outlives its connection for `resume_window_s`.

| state            | HEARTBEAT | IDENTIFY        | RESUME          | PRESENCE_UPDATE |
|------------------|-----------|-----------------|-----------------|-----------------|
| unauthenticated  | ack       | -> ready / 4004 | -> ready / 9    | close 4003      |
| ready            | ack       | close 4005      | close 4005      | update          |

Resource handling: one nursery per connection holds the reader loop and the heartbeat watchdog;
when either ends, the other is cancelled. The session is detached (not ended) on the way out.
A session whose connection's outbox is full cuts that connection (4010) from `deliver`, which
never waits: the room goes on, the session keeps buffering for a RESUME.

Error handling: protocol violations close the socket with the gateway close codes of
`relay.protocol.gateway.Close`; transport failures just end the connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from relay.errors import Unauthorized
from relay.gateway.session import Session
from relay.protocol import wsframe
from relay.protocol.gateway import (
    Close,
    Event,
    FrameError,
    Heartbeat,
    Identify,
    Op,
    PresenceUpdate,
    Resume,
    decode_client,
    encode_control,
)
from relay.ratelimit import RateLimiter
from relay.realtime.connection import ConnectionClosed
from relay.rest.auth import me_out
from relay.storage import users

if TYPE_CHECKING:
    from relay.accounts import Principal
    from relay.realtime.connection import Connection
    from relay.realtime.listener import Request
    from relay.runtime import Runtime

log = logging.getLogger("relay.gateway")
ENCODINGS = ("json", "msgpack")


class _Closing(Exception):
    """Close the connection with this gateway close code."""

    def __init__(self, code: Close, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Sink:
    """Hands a session's payloads to this connection's outbox, framed for its encoding."""

    def __init__(self, conn: Connection, binary: bool) -> None:
        self.conn = conn
        self.binary = binary

    def frame(self, payload: bytes) -> bytes:
        return wsframe.binary_frame(payload) if self.binary else wsframe.text_frame(payload)

    def send_payload(self, payload: bytes) -> bool:
        return self.conn.send_nowait(self.frame(payload))

    def close(self, code: int, reason: str) -> None:
        self.conn.close_nowait(code, reason)

    def slow_consumer(self) -> None:
        self.conn.close_nowait(int(Close.SLOW_CONSUMER), "too slow to keep up; RESUME to continue")


class GatewayConnection:
    def __init__(self, rt: Runtime, conn: Connection, encoding: str) -> None:
        self.rt = rt
        self.conn = conn
        self.encoding = encoding
        self.sink = _Sink(conn, binary=encoding == "msgpack")
        self.session: Session | None = None
        settings = rt.settings
        self.heartbeat_s = settings.heartbeat_interval_s
        self.grace_s = settings.heartbeat_grace_s
        # The watchdog sleeps in this scope; each heartbeat moves its deadline forward.
        self.heartbeat_scope = trio.CancelScope(
            deadline=trio.current_time() + self.heartbeat_s + self.grace_s
        )
        self.limiter = RateLimiter(settings.gateway_rate, 60.0, max_keys=1)

    def control(self, op: Op, d: Any) -> bytes:
        return self.sink.frame(encode_control(op, d, self.encoding))

    async def run(self) -> None:
        await self.conn.send(
            self.control(Op.HELLO, {"heartbeat_interval": int(self.heartbeat_s * 1000)})
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watchdog)
                await self._read_loop()
                nursery.cancel_scope.cancel()
        except* _Closing as group:
            closing = group.exceptions[0]
            assert isinstance(closing, _Closing)
            await self.conn.close(int(closing.code), closing.reason)
        finally:
            if self.session is not None:
                self.session.detach(self.sink)
                with trio.CancelScope(shield=True):
                    await self.rt.hub.session_gone(self.session)

    async def _watchdog(self) -> None:
        with self.heartbeat_scope:
            await trio.sleep_forever()
        raise _Closing(Close.SESSION_TIMED_OUT, "no heartbeat in time")

    async def _read_loop(self) -> None:
        while True:
            try:
                data = await self.conn.receive()
            except ConnectionClosed:
                return
            if not self.limiter.hit("frames", trio.current_time()).allowed:
                raise _Closing(Close.RATE_LIMITED, "too many frames")
            try:
                frame = decode_client(data, self.encoding)
            except FrameError as e:
                raise _Closing(e.code, str(e)[:120]) from None
            await self._handle(frame)

    async def _handle(self, frame: Heartbeat | Identify | PresenceUpdate | Resume) -> None:
        match frame:
            case Heartbeat():
                self.heartbeat_scope.deadline = (
                    trio.current_time() + self.heartbeat_s + self.grace_s
                )
                await self.conn.send(self.control(Op.HEARTBEAT_ACK, None))
            case Identify(d=data):
                self._require_fresh()
                await self._identify(self._authenticate(data.token))
            case Resume(d=data):
                self._require_fresh()
                await self._resume(self._authenticate(data.token), data.session_id, data.seq)
            case PresenceUpdate(d=data):
                if self.session is None:
                    raise _Closing(Close.NOT_AUTHENTICATED, "IDENTIFY first")
                self.session.status = data.status
                self.session.activity = data.activity
                await self.rt.hub.set_status(self.session)

    def _require_fresh(self) -> None:
        if self.session is not None:
            raise _Closing(Close.ALREADY_AUTHENTICATED, "this connection already has a session")

    def _authenticate(self, token: str) -> Principal:
        try:
            return self.rt.accounts.authenticate(f"Bearer {token}")
        except Unauthorized as e:
            raise _Closing(Close.AUTHENTICATION_FAILED, e.code) from None

    async def _identify(self, who: Principal) -> None:
        rt = self.rt
        user_id = who.user_id
        ready = await ready_payload(rt, user_id)
        if ready is None:
            raise _Closing(Close.AUTHENTICATION_FAILED, "unknown user")
        settings = rt.settings
        session = Session(
            user_id,
            who.session_id,
            self.encoding,
            replay_size=settings.replay_size,
            replay_age_s=settings.replay_age_s,
        )
        ready["session_id"] = session.id
        # From here to attach nothing awaits: READY is seq 1 and no event can slip in between.
        rt.hub.add_session(session, [int(s["id"]) for s in ready["servers"]])
        session.attach(self.sink)
        session.deliver(Event("READY", ready))
        self.session = session
        await rt.hub.set_status(session)

    async def _resume(self, who: Principal, session_id: str, seq: int) -> None:
        hub = self.rt.hub
        session = hub.sessions.get(session_id)
        if session is None or session.user_id != who.user_id:
            await self.conn.send(self.control(Op.INVALID_SESSION, False))
            return
        if seq > session.seq:
            raise _Closing(Close.INVALID_SEQ, f"seq {seq} was never sent (last is {session.seq})")
        if session.sink is not None:  # still attached elsewhere: that connection is replaced
            old = session.sink
            session.detach(old)
            old.slow_consumer()
        sent = seq
        while True:  # replay with backpressure; events arriving meanwhile are caught next turn
            missed = session.missed_since(sent)
            if missed is None:
                hub.end_session(session)
                await self.conn.send(self.control(Op.INVALID_SESSION, False))
                return
            if not missed:
                break
            for payload in missed:
                await self.conn.send(self.sink.frame(payload))
            sent += len(missed)
        session.auth_session_id = who.session_id
        session.attach(self.sink)
        session.deliver(Event("RESUMED", {"replayed": sent - seq}))
        self.session = session
        await hub.set_status(session)


async def ready_payload(rt: Runtime, user_id: int) -> dict[str, Any] | None:
    """Everything a client needs to start: who it is, its servers with channels, DMs, read
    states, and who among the people it shares a server with is online."""
    from relay.rest.messages import read_states
    from relay.rest.servers import dm_channels, ready_servers

    user = await rt.store.read(users.get_user, user_id)
    if user is None:
        return None
    keys = await rt.store.read(users.list_keys, user_id)
    servers = msgspec.to_builtins(await ready_servers(rt, user_id))
    hub = rt.hub
    sharing: set[int] = set()
    for server in servers:
        sharing.update(hub.online_members.get(int(server["id"]), ()))
    presences = [
        {"user_id": str(uid), "status": hub.statuses[uid][0], "activity": hub.statuses[uid][1]}
        for uid in sorted(sharing)
        if uid in hub.statuses
    ]
    return {
        "v": 1,
        "session_id": "",
        "user": msgspec.to_builtins(me_out(user, keys)),
        "servers": servers,
        "private_channels": msgspec.to_builtins(await dm_channels(rt, user_id)),
        "read_states": msgspec.to_builtins(await read_states(rt, user_id)),
        "presences": presences,
    }


async def gateway_endpoint(rt: Runtime, conn: Connection, request: Request) -> None:
    encoding = request.query.get("encoding", "json")
    if encoding not in ENCODINGS:
        await conn.close(int(Close.INVALID_ENCODING), "encoding must be json or msgpack")
        return
    await GatewayConnection(rt, conn, encoding).run()
