"""The chat gateway endpoint (`/v1/gateway` on the realtime listener): HELLO, IDENTIFY or
RESUME, then heartbeats, presence updates, message sends and dispatched events until the socket
closes.

Theory of operation. A connection starts unauthenticated; only HEARTBEAT, IDENTIFY and RESUME
are accepted then (anything else closes with 4003). IDENTIFY checks the access token, builds a
Session with the IDENTIFY's intents (absent: all; bad ones close with 4013 when decoded),
registers it with the hub and dispatches READY as the session's first event. RESUME
re-attaches an existing session of the same user, intents and all, and replays, in order,
every event after the client's `seq`; if the replay buffer no longer has them, the client gets
INVALID_SESSION (d = false) and must IDENTIFY. A session outlives its connection for
`resume_window_s`.

| state           | HEARTBEAT | IDENTIFY        | RESUME       | PRESENCE_UPDATE | MESSAGE_SEND |
|-----------------|-----------|-----------------|--------------|-----------------|--------------|
| unauthenticated | ack       | -> ready / 4004 | -> ready / 9 | close 4003      | close 4003   |
| ready           | ack       | close 4005      | close 4005   | update          | send, ack 13 |

Message sends (op 12) are pipelined: the reader hands each one to its own task and reads on, so
one connection is not limited to one message per commit. Each send task checks the channel (as
the REST route does, concurrently with the sends before it; a channel that passed is trusted for
SENDABLE_TTL_S, since the write checks again), then queues the message with the channel's
actor strictly after the previous send was queued (so history order is send order), waits for
the commit, and acknowledges (op 13) strictly after the previous send's ack. At most
`gateway_max_inflight_sends` sends are in flight; then the reader waits for one to finish, and
TCP pushes back on the client. Sends have their own per-user rate limit, shared with REST
posts (`Hub.message_refused`), answered with a `rate_limited` ack; they do not count against
`gateway_rate` unless refused by it, so a client that ignores `retry_after` is still closed
(4008) like any flood.

Resource handling: the reader loop runs in the endpoint's task and waits for each frame until
the heartbeat deadline (then 4009); one nursery holds the send tasks; when the reader fails,
they are cancelled. When the client goes away or closes, sends already read get SEND_DRAIN_S to
finish (and acknowledge, while the socket still takes frames). A send cancelled before it was
queued is not stored; one queued is committed by its channel's actor whatever happens to the
connection, so a retry with the same nonce (on any connection) gets its id. The session is
detached (not ended) on the way out. A session whose connection's outbox is full cuts that
connection (4010) from `deliver`, which never waits: the room goes on, the session keeps
buffering for a RESUME.

Error handling: protocol violations close the socket with the gateway close codes of
`relay.protocol.gateway.Close`; transport failures just end the connection. A send's own
errors (REST's error codes) are answered in its ack and never close the socket.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from relay.errors import RateLimited, RelayError, Unauthorized, Unavailable
from relay.gateway.session import Session
from relay.protocol import wsframe
from relay.protocol.gateway import (
    ALL_INTENTS,
    ClientFrame,
    Close,
    Event,
    FrameError,
    Heartbeat,
    Identify,
    MessageSend,
    MessageSendData,
    Op,
    PresenceUpdate,
    Resume,
    SendAck,
    SendError,
    decode_client,
    encode_control,
    encode_send_ack,
)
from relay.ratelimit import Bucket
from relay.realtime.connection import ConnectionClosed
from relay.rest.auth import me_out
from relay.rest.messages import (
    SEND_TIMEOUT_S,
    channel_busy,
    message_posted,
    queue_message,
    sendable_channel,
)
from relay.storage import users
from relay.storage.db import StoreClosed

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors import Asked
    from relay.accounts import Principal
    from relay.realtime.connection import Connection
    from relay.realtime.listener import Request
    from relay.rest.message_bodies import Message
    from relay.runtime import Runtime
    from relay.storage.audience import VisibleChannel

log = logging.getLogger("relay.gateway")
ENCODINGS = ("json", "msgpack")
SEND_DRAIN_S = 2.0  # after the client left or closed: sends in flight may finish this long
# A channel REST's pre-check let this connection post in is not looked up again for this long
# (the write checks again in its transaction, with the same error codes): that read, a worker
# thread round trip per message, would otherwise cost more than the write and spread the sends
# out so that group commit has little to group.
SENDABLE_TTL_S = 2.0
SENDABLE_CHANNELS = 64  # per connection; more and the memory starts over


class _Closing(Exception):
    """Close the connection with this gateway close code."""

    def __init__(self, code: Close, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _first_closing(group: BaseExceptionGroup[_Closing]) -> _Closing:
    """The first _Closing of a (possibly nested: the send nursery is inside) group."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, _Closing)
    return first


class _Send:
    """One MESSAGE_SEND in flight. `queued`: it and every send before it on the connection are
    queued with their channels (or failed); `acked`: they are all answered."""

    __slots__ = ("acked", "data", "error", "queued")

    def __init__(self, data: MessageSendData, error: RelayError | None) -> None:
        self.data = data
        self.error = error  # decided by the reader (the rate limit)
        self.queued = trio.Event()
        self.acked = trio.Event()


def send_error(error: RelayError) -> SendError:
    """A send's error as its ack carries it: REST's error object, with retry_after (seconds,
    rounded up to the millisecond) for rate limits and slowmode."""
    retry = None
    if isinstance(error, RateLimited):
        retry = math.ceil(error.retry_after_s * 1000) / 1000
    return SendError(
        code=error.code, message=error.message, fields=error.fields or None, retry_after=retry
    )


class _Sink:
    """Hands a session's frames to this connection's outbox; frames the gateway's own control
    payloads for the connection's encoding (text for JSON, binary for msgpack)."""

    __slots__ = ("binary", "conn", "send_frame")

    def __init__(self, conn: Connection, binary: bool) -> None:
        self.conn = conn
        self.binary = binary
        # Called once per delivered event: the connection's own method, no call in between.
        self.send_frame: Callable[[bytes], bool] = conn.send_nowait

    def frame(self, payload: bytes) -> bytes:
        return wsframe.binary_frame(payload) if self.binary else wsframe.text_frame(payload)

    def close(self, code: int, reason: str) -> None:
        self.conn.close_nowait(code, reason)

    def slow_consumer(self) -> None:
        self.conn.close_nowait(int(Close.SLOW_CONSUMER), "too slow to keep up; RESUME to continue")


class GatewayConnection:
    __slots__ = (
        "conn",
        "encoding",
        "grace_s",
        "heartbeat_deadline",
        "heartbeat_s",
        "last_send",
        "limiter",
        "rt",
        "send_slots",
        "sendable",
        "sends",
        "session",
        "sink",
    )

    def __init__(self, rt: Runtime, conn: Connection, encoding: str) -> None:
        self.rt = rt
        self.conn = conn
        self.encoding = encoding
        self.sink = _Sink(conn, binary=encoding == "msgpack")
        self.session: Session | None = None
        settings = rt.settings
        self.heartbeat_s = settings.heartbeat_interval_s
        self.grace_s = settings.heartbeat_grace_s
        # Waiting for the client's next frame ends here; each heartbeat moves it forward.
        self.heartbeat_deadline = trio.current_time() + self.heartbeat_s + self.grace_s
        self.limiter = Bucket(settings.gateway_rate, 60.0, trio.current_time())
        # Made at the first MESSAGE_SEND (most connections only listen): the nursery owning the
        # send tasks while the reader runs, and the in-flight bound.
        self.sends: trio.Nursery | None = None
        self.send_slots: trio.Semaphore | None = None
        self.last_send: _Send | None = None
        self.sendable: dict[str, tuple[float, VisibleChannel]] = {}  # channel id -> checked

    def control(self, op: Op, d: Any) -> bytes:
        return self.sink.frame(encode_control(op, d, self.encoding))

    async def run(self) -> None:
        await self.conn.send(
            self.control(Op.HELLO, {"heartbeat_interval": int(self.heartbeat_s * 1000)})
        )
        try:
            first_send = await self._read_loop()
            if first_send is not None:
                async with trio.open_nursery() as sends:
                    self.sends = sends
                    self.send_slots = trio.Semaphore(self.rt.settings.gateway_max_inflight_sends)
                    await self._handle(first_send)
                    await self._read_loop()
                    # The client left or closed: what it sent before may still be answered.
                    sends.cancel_scope.deadline = trio.current_time() + SEND_DRAIN_S
        except* _Closing as group:
            closing = _first_closing(group)
            await self.conn.close(int(closing.code), closing.reason)
        finally:
            if self.session is not None:
                self.session.detach(self.sink)
                with trio.CancelScope(shield=True):
                    await self.rt.hub.session_gone(self.session)

    async def _read_loop(self) -> MessageSend | None:
        """Handle frames until the client leaves (None); a first MESSAGE_SEND while there is no
        send nursery yet is returned instead, for `run` to open one."""
        while True:
            data = None  # nothing of the last frame is kept while waiting for the next
            with trio.move_on_at(self.heartbeat_deadline):
                try:
                    data = await self.conn.receive()
                except ConnectionClosed:
                    return None
            if data is None:
                raise _Closing(Close.SESSION_TIMED_OUT, "no heartbeat in time")
            frame = self._decode(data)
            if isinstance(frame, MessageSend) and self.sends is None:
                return frame
            await self._handle(frame)
            del frame

    def _decode(self, data: str | bytes) -> ClientFrame:
        try:
            frame = decode_client(data, self.encoding)
        except FrameError as e:
            raise _Closing(e.code, str(e)[:120]) from None
        if not isinstance(frame, MessageSend):  # sends have their own limit (_send_frame)
            self._count_frame()
        return frame

    def _count_frame(self) -> None:
        if not self.limiter.hit(trio.current_time()):
            raise _Closing(Close.RATE_LIMITED, "too many frames")

    def _ready(self) -> Session:
        if self.session is None:
            raise _Closing(Close.NOT_AUTHENTICATED, "IDENTIFY first")
        return self.session

    async def _handle(self, frame: ClientFrame) -> None:
        match frame:
            case Heartbeat():
                self.heartbeat_deadline = trio.current_time() + self.heartbeat_s + self.grace_s
                await self.conn.send(self.control(Op.HEARTBEAT_ACK, None))
            case Identify(d=data):
                self._require_fresh()
                intents = ALL_INTENTS if data.intents is None else data.intents
                await self._identify(self._authenticate(data.token), intents)
            case Resume(d=data):
                self._require_fresh()
                await self._resume(self._authenticate(data.token), data.session_id, data.seq)
            case PresenceUpdate(d=data):
                session = self._ready()
                session.status = data.status
                session.activity = data.activity
                await self.rt.hub.set_status(session)
            case MessageSend(d=data):
                await self._send_frame(self._ready(), data)

    # -- message sends (op 12) -------------------------------------------------------------------

    async def _send_frame(self, session: Session, data: MessageSendData) -> None:
        """Start one send's task, after waiting for a free in-flight slot (backpressure)."""
        error: RelayError | None = self.rt.hub.message_refused(session.user_id)
        if error is not None:
            self._count_frame()  # a client that ignores retry_after is a flood: 4008 eventually
        assert self.send_slots is not None
        await self.send_slots.acquire()
        send = _Send(data, error)
        previous, self.last_send = self.last_send, send
        assert self.sends is not None
        self.sends.start_soon(self._send, session.user_id, send, previous)

    async def _sendable_channel(self, user_id: int, channel_id: str) -> VisibleChannel:
        """REST's pre-check (`sendable_channel`); a positive answer is reused for
        SENDABLE_TTL_S. Only the fail-fast is skipped then: `messages.create` checks visibility
        and SEND_MESSAGES again in the transaction and refuses with the same codes."""
        now = trio.current_time()
        known = self.sendable.get(channel_id)
        if known is not None and now - known[0] < SENDABLE_TTL_S:
            return known[1]
        channel = await sendable_channel(self.rt, user_id, channel_id)
        if len(self.sendable) >= SENDABLE_CHANNELS:
            self.sendable.clear()
        self.sendable[channel_id] = (now, channel)
        return channel

    async def _send(self, user_id: int, send: _Send, previous: _Send | None) -> None:
        """Check, queue (after `previous`), commit and acknowledge (after `previous`) one send."""
        data = send.data
        error = send.error
        asked: Asked[Message] | None = None
        try:
            channel = None
            if error is None:
                try:  # concurrently with the sends before this one: it is only a read
                    channel = await self._sendable_channel(user_id, data.channel_id)
                except RelayError as e:
                    error = e
            if previous is not None:
                await previous.queued.wait()
            if channel is not None:
                try:
                    with trio.move_on_after(SEND_TIMEOUT_S):
                        asked = await queue_message(
                            self.rt, user_id, channel, data.content, data.nonce, data.reply_to
                        )
                    if asked is None:
                        error = channel_busy()
                except RelayError as e:
                    error = e
            send.queued.set()
            message = None
            if asked is not None:
                try:
                    with trio.move_on_after(SEND_TIMEOUT_S):
                        message = await message_posted(asked)
                    if message is None:
                        error = channel_busy()
                except RelayError as e:
                    error = e
                    self.sendable.pop(data.channel_id, None)  # fail fast again from now on
                except StoreClosed:
                    error = Unavailable("the server is shutting down", code="unavailable")
            if previous is not None:
                await previous.acked.wait()
            if message is not None:
                ack = SendAck(nonce=data.nonce, id=message.id, channel_id=message.channel_id)
            else:
                assert error is not None
                ack = SendAck(nonce=data.nonce, error=send_error(error))
            # If the client is gone, a retry with the same nonce gets the message's id.
            with contextlib.suppress(ConnectionClosed):
                await self.conn.send(self.sink.frame(encode_send_ack(ack, self.encoding)))
        finally:
            if asked is not None:
                asked.close()  # cancelled before the answer: the actor still commits it
            # Only reached early when cancelled, and then every later send is cancelled too.
            send.queued.set()
            send.acked.set()
            assert self.send_slots is not None
            self.send_slots.release()

    def _require_fresh(self) -> None:
        if self.session is not None:
            raise _Closing(Close.ALREADY_AUTHENTICATED, "this connection already has a session")

    def _authenticate(self, token: str) -> Principal:
        try:
            return self.rt.accounts.authenticate(f"Bearer {token}")
        except Unauthorized as e:
            raise _Closing(Close.AUTHENTICATION_FAILED, e.code) from None

    async def _identify(self, who: Principal, intents: int) -> None:
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
            intents=intents,
        )
        ready["session_id"] = session.id
        # From here to attach nothing awaits: READY is seq 1 and no event can slip in between.
        rt.hub.add_session(session, [int(s["id"]) for s in ready["servers"]])
        session.attach(self.sink)
        session.deliver(Event("READY", ready), replay=False)
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
            for frame in missed:
                await self.conn.send(frame)
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
