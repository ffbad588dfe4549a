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

Message sends (op 12) are pipelined. The reader checks each one as the REST route does (with
the chat layer's `sendable_channel`, which keeps positive answers, since the write checks
again) and queues it with the channel's actor, in the order read, so history order is
send order; then it reads on, so one connection is not limited to one message per commit. The
actor's publisher hands each answer straight back (`Fanout.post_with`: no task switch),
and acks (op 13) go out in send order from a first-in first-out queue of the sends in flight. A
send whose commit has not come after `send_timeout_s` is answered channel_busy (checked every
ACK_CHECK_S). At most `gateway_max_inflight_sends` sends are in flight; then the reader waits
for an ack to go out, and TCP pushes back on the client. Sends have their own per-user rate
limit, shared with REST posts (`Chat.message_refused`), answered with a `rate_limited` ack; they
do not count against `gateway_rate` unless refused by it, so a client that ignores
`retry_after` is still closed (4008) like any flood.

Resource handling: the reader loop runs in the endpoint's task and waits for each frame until
the heartbeat deadline (then 4009); a nursery opened at the first send holds the task that
times sends out; when the reader fails, it is cancelled. When the client goes away or closes,
sends already read get SEND_DRAIN_S to finish (and acknowledge, while the socket still takes
frames); an ack that does not fit in the outbox cuts the connection as a slow consumer (4010).
A send cancelled before it was queued is not stored; one queued is committed by its channel's
actor whatever happens to the connection, so a retry with the same nonce (on any connection)
gets its id. The session is detached (not ended) on the way out. A session whose connection's
outbox is full cuts that connection (4010) from `deliver`, which never waits: the room goes on,
the session keeps buffering for a RESUME.

Error handling: protocol violations close the socket with the gateway close codes of
`relay.protocol.gateway.Close`; transport failures just end the connection. A send's own
errors (REST's error codes) are answered in its ack and never close the socket.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from actors.errors import AskTimeout
from relay.chat import messages as chat_messages
from relay.chat import voice as chat_voice
from relay.chat.events import ReadyEvent, ResumedEvent, VoiceServerUpdate, VoiceStateRefused
from relay.chat.objects import Resumed, VoiceRefusal
from relay.chat.ready import ready
from relay.errors import RateLimited, RelayError, Unauthorized, Unavailable
from relay.gateway.hub import wire
from relay.gateway.session import ClusterSession, Session
from relay.protocol import wsframe
from relay.protocol.gateway import (
    ALL_INTENTS,
    ClientFrame,
    Close,
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
    VoiceStateData,
    VoiceStateUpdate,
    decode_client,
    encode_control,
    encode_send_ack,
)
from relay.ratelimit import Bucket
from relay.realtime.connection import ConnectionClosed
from relay.storage import audience
from relay.storage.sqlite.db import StoreClosed

if TYPE_CHECKING:
    from collections.abc import Callable

    import outcome

    from actors import Reply
    from relay.accounts import Principal
    from relay.realtime.connection import Connection
    from relay.realtime.listener import Request
    from relay.runtime import Runtime
    from relay.storage.messages import Posted

log = logging.getLogger("relay.gateway")
ENCODINGS = ("json", "msgpack")
TRY_AGAIN_LATER = 1013  # cluster mode: the client address has max_connections_per_ip everywhere
SEND_DRAIN_S = 2.0  # after the client left or closed: sends in flight may finish this long
ACK_CHECK_S = 1.0  # how often sends in flight are checked against send_timeout_s


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


class _Queued:
    """One MESSAGE_SEND in flight, in its place in the ack order: queued with its channel's
    actor (`reply`) until `ack` is decided."""

    __slots__ = ("ack", "data", "deadline", "reply")

    def __init__(self, data: MessageSendData, deadline: float) -> None:
        self.data = data
        self.deadline = deadline  # then channel_busy
        self.reply: Reply[Posted] | None = None
        self.ack: SendAck | None = None


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
        self.send_frame: Callable[[bytes, bool], bool] = conn.send_nowait

    def frame(self, payload: bytes) -> bytes:
        return wsframe.binary_frame(payload) if self.binary else wsframe.text_frame(payload)

    def close(self, code: int, reason: str) -> None:
        self.conn.close_nowait(code, reason)

    def slow_consumer(self) -> None:
        self.conn.close_nowait(int(Close.SLOW_CONSUMER), "too slow to keep up; RESUME to continue")


class GatewayConnection:
    __slots__ = (
        "acks",
        "chat",
        "conn",
        "drained",
        "encoding",
        "grace_s",
        "heartbeat_deadline",
        "heartbeat_s",
        "hub",
        "limiter",
        "rt",
        "send_slots",
        "session",
        "sink",
        "user_place",
        "watch",
    )

    def __init__(self, rt: Runtime, conn: Connection, encoding: str) -> None:
        self.rt = rt
        # Taken now: a connection's cleanup at shutdown runs after the runtime let them go.
        self.hub = rt.hub
        self.chat = rt.chat
        self.conn = conn
        self.encoding = encoding
        self.sink = _Sink(conn, binary=encoding == "msgpack")
        self.session: Session | None = None
        settings = rt.settings
        self.heartbeat_s = settings.heartbeat_interval_s
        self.grace_s = settings.heartbeat_grace_s
        # Reading the client's frames ends here (4009); each heartbeat moves it forward.
        self.heartbeat_deadline = trio.current_time() + self.heartbeat_s + self.grace_s
        self.watch: trio.CancelScope | None = None  # the read loop's scope with that deadline
        self.limiter = Bucket(settings.gateway_rate, 60.0, trio.current_time())
        # Made at the first MESSAGE_SEND (most connections only listen): the sends in flight in
        # send order, and their bound.
        self.acks: deque[_Queued] | None = None
        self.send_slots: trio.Semaphore | None = None
        self.drained: trio.Event | None = None  # set when `acks` empties, while draining
        # Cluster mode: the user whose connected-session place this connection holds in Redis.
        self.user_place: int | None = None

    def control(self, op: Op, d: Any) -> bytes:
        return self.sink.frame(encode_control(op, d, self.encoding))

    async def run(self) -> None:
        await self.conn.send(
            self.control(Op.HELLO, {"heartbeat_interval": int(self.heartbeat_s * 1000)})
        )
        try:
            first_send = await self._read_loop()
            if first_send is not None:
                self.send_slots = trio.Semaphore(self.rt.settings.gateway_max_inflight_sends)
                self.acks = deque()
                async with trio.open_nursery() as sends:
                    sends.start_soon(self._time_out_sends)
                    await self._handle(first_send)
                    await self._read_loop()
                    # The client left or closed: what it sent before may still be answered.
                    if self.acks:
                        self.drained = trio.Event()
                        with trio.move_on_after(SEND_DRAIN_S):
                            await self.drained.wait()
                    sends.cancel_scope.cancel()
        except* _Closing as group:
            closing = _first_closing(group)
            await self.conn.close(int(closing.code), closing.reason)
        finally:
            for item in self.acks or ():  # their answers have nowhere to go now
                if item.reply is not None:
                    item.reply.cancel()
            if self.session is not None:
                self.session.detach(self.sink)
                with trio.CancelScope(shield=True):
                    await self.hub.session_gone(self.session)
            if self.user_place is not None and self.rt.shared_caps is not None:
                await self.rt.shared_caps.release("user", str(self.user_place))

    async def _read_loop(self) -> MessageSend | None:
        """Handle frames until the client leaves (None); a first MESSAGE_SEND while sends are
        not set up yet is returned instead, for `run` to set them up."""
        # One scope for the whole loop, its deadline moved by each heartbeat: a scope per frame
        # cost more than the rest of reading one.
        with trio.CancelScope(deadline=self.heartbeat_deadline) as self.watch:
            while True:
                try:
                    data = await self.conn.receive()
                except ConnectionClosed:
                    return None
                frame = self._decode(data)
                del data  # nothing of the last frame is kept while waiting for the next
                if isinstance(frame, MessageSend) and self.acks is None:
                    return frame
                await self._handle(frame)
                del frame
        if self.session is None:
            raise _Closing(Close.NOT_AUTHENTICATED, "no IDENTIFY or RESUME in time")
        raise _Closing(Close.SESSION_TIMED_OUT, "no heartbeat in time")

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
                # Before IDENTIFY or RESUME a heartbeat is answered but moves nothing: a
                # connection that never logs in ends at the first deadline (4003), so
                # strangers cannot hold connections open with heartbeats alone.
                if self.session is not None:
                    self.heartbeat_deadline = trio.current_time() + self.heartbeat_s + self.grace_s
                    if self.watch is not None:
                        self.watch.deadline = self.heartbeat_deadline
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
                await self.hub.set_status(session)
            case MessageSend(d=data):
                await self._send_frame(self._ready(), data)
            case VoiceStateUpdate(d=data):
                await self._voice_state(self._ready(), data)

    async def _voice_state(self, session: Session, data: VoiceStateData) -> None:
        """Op 4: VOICE_SERVER_UPDATE for a join or move, VOICE_STATE_REFUSED for a refusal,
        both to this session only."""
        try:
            server = await chat_voice.update_state(
                self.chat,
                session.user_id,
                session.id,
                data.server_id,
                data.channel_id,
                self_mute=data.self_mute,
                self_deaf=data.self_deaf,
            )
        except RelayError as e:
            refusal = VoiceRefusal(
                server_id=data.server_id, channel_id=data.channel_id, code=e.code, message=e.message
            )
            session.deliver(wire(VoiceStateRefused(d=refusal)))
            return
        if server is not None:
            session.deliver(wire(VoiceServerUpdate(d=server)))

    # -- message sends (op 12) -------------------------------------------------------------------

    async def _send_frame(self, session: Session, data: MessageSendData) -> None:
        """Check one send and queue it with its channel's actor, after waiting for a free
        in-flight slot (backpressure); its ack goes out once it and every send before it are
        answered."""
        user_id = session.user_id
        error: RelayError | None = await self.chat.message_refused(user_id)
        if error is not None:
            self._count_frame()  # a client that ignores retry_after is a flood: 4008 eventually
        slots, acks = self.send_slots, self.acks
        assert slots is not None
        assert acks is not None
        try:
            slots.acquire_nowait()  # no checkpoint: the reader's receive had one
        except trio.WouldBlock:
            await slots.acquire()
        item = _Queued(data, trio.current_time() + self.rt.settings.send_timeout_s)
        try:
            if error is None:
                try:
                    channel = await chat_messages.sendable_channel(
                        self.chat, user_id, data.channel_id
                    )
                    new = chat_messages.new_message(
                        user_id,
                        channel,
                        data.content,
                        data.nonce,
                        data.reply_to,
                        chat_messages.upload_ids([ref.id for ref in data.attachments]),
                        allowed=data.allowed_mentions,
                        online=self.chat.fanout.online,
                        flags=data.flags,
                    )
                    item.reply = await chat_messages.queue_post_with(
                        self.chat, new, partial(self._answered, item), item.deadline
                    )
                except RelayError as e:
                    error = e
                except AskTimeout:
                    error = chat_messages.channel_busy()
            if error is not None:
                item.ack = SendAck(nonce=data.nonce, error=self._refused(error))
        except BaseException:  # cancelled on the way; if it was queued, it still commits
            slots.release()
            raise
        acks.append(item)
        self._send_acks()

    def _answered(self, item: _Queued, result: outcome.Outcome[Posted]) -> None:
        """A send's answer, in the channel's publisher task: must not raise."""
        data = item.data
        assert self.session is not None  # sends are read only once there is a session
        user_id, sendable = self.session.user_id, self.chat.sendable
        try:
            message = chat_messages.posted_of(result).message
            ack = SendAck(nonce=data.nonce, id=str(message.id), channel_id=str(message.channel_id))
            sendable.committed(user_id, data.channel_id, trio.current_time())
        except RelayError as e:
            sendable.refused(user_id, data.channel_id)  # fail fast again from now on
            ack = SendAck(nonce=data.nonce, error=self._refused(e))
        except StoreClosed:
            closing = Unavailable("the server is shutting down", code="unavailable")
            ack = SendAck(nonce=data.nonce, error=send_error(closing))
        except Exception:  # a bug in the write: the poster hears of it, the channel goes on
            log.error("message send failed", exc_info=True)
            failed = RelayError("the message could not be stored")
            ack = SendAck(nonce=data.nonce, error=send_error(failed))
        item.ack = ack
        self._send_acks()

    def _refused(self, error: RelayError) -> SendError:
        """A refused send's error for its ack; a rate limit's refusal is counted (/metrics)."""
        if isinstance(error, RateLimited):
            self.rt.metrics.rate_limited(error.limit_name)
        return send_error(error)

    def _send_acks(self) -> None:
        """Send the acks that are decided, in send order, up to the first that is not."""
        acks, slots = self.acks, self.send_slots
        assert acks is not None
        assert slots is not None
        while acks and acks[0].ack is not None:
            ack = acks.popleft().ack
            assert ack is not None
            if not self.conn.send_nowait(self.sink.frame(encode_send_ack(ack, self.encoding))):
                self.sink.slow_consumer()  # or already closing: a retry finds it by nonce
            slots.release()
        if not acks and self.drained is not None:
            self.drained.set()

    async def _time_out_sends(self) -> None:
        """Answer channel_busy to sends not committed within `send_timeout_s` (they may still
        be stored: a retry with the same nonce finds them)."""
        acks = self.acks
        assert acks is not None
        while True:
            await trio.sleep(ACK_CHECK_S)
            now = trio.current_time()
            late = [item for item in acks if item.ack is None and item.deadline <= now]
            for item in late:
                if item.reply is not None:
                    item.reply.cancel()
                busy = chat_messages.channel_busy()
                item.ack = SendAck(nonce=item.data.nonce, error=send_error(busy))
            if late:
                self._send_acks()

    def _require_fresh(self) -> None:
        if self.session is not None:
            raise _Closing(Close.ALREADY_AUTHENTICATED, "this connection already has a session")

    def _authenticate(self, token: str) -> Principal:
        try:
            # A bot identifies with "Bot <token>", as it authenticates on REST.
            bot = token[:4].lower() == "bot "
            return self.rt.accounts.authenticate(token if bot else f"Bearer {token}")
        except Unauthorized as e:
            raise _Closing(Close.AUTHENTICATION_FAILED, e.code) from None

    async def _identify(self, who: Principal, intents: int) -> None:
        rt = self.rt
        user_id = who.user_id
        settings = rt.settings
        cluster = rt.cluster_sessions
        session = self._new_session(user_id, who.session_id, self.encoding, intents)
        await self._take_user_place(user_id, replacing=False)
        # Cluster mode: the session's lease, so that only this node writes its replay buffer.
        resumable = cluster is not None and await cluster.started(session.id)
        try:
            payload = await ready(rt.chat, user_id, session.id, rt.hub.statuses.get)
            if payload is None:
                raise _Closing(Close.AUTHENTICATION_FAILED, "unknown user")
            # From here to attach nothing awaits: READY is seq 1 and no event can slip in.
            if not rt.hub.make_room_for_session(user_id, settings.max_sessions_per_user):
                limit = settings.max_sessions_per_user
                raise _Closing(
                    Close.TOO_MANY_SESSIONS, f"at most {limit} connected sessions per user"
                )
        except BaseException:
            if resumable:
                assert cluster is not None
                cluster.ended(session.id)
            raise
        rt.hub.add_session(session, [int(s.id) for s in payload.servers])
        session.attach(self.sink)
        session.deliver(wire(ReadyEvent(d=payload)), replay=False)
        if resumable:
            assert cluster is not None
            cluster.opened(session)
        self.session = session
        self.conn.user = user_id
        await rt.hub.set_status(session)

    def _new_session(
        self, user_id: int, auth_session_id: int, encoding: str, intents: int
    ) -> Session:
        settings, held = self.rt.settings, self.rt.held_frames
        if held is None:
            return Session(
                user_id,
                auth_session_id,
                encoding,
                replay_size=settings.replay_size,
                replay_age_s=settings.replay_age_s,
                intents=intents,
            )
        return ClusterSession(
            user_id,
            auth_session_id,
            encoding,
            replay_size=settings.replay_size,
            replay_age_s=settings.replay_age_s,
            intents=intents,
            held=held,
        )

    async def _take_user_place(self, user_id: int, *, replacing: bool) -> None:
        """Cluster mode: a place among the user's connected sessions on every node
        (`max_sessions_per_user`); 4011 if they are all taken."""
        caps = self.rt.shared_caps
        if caps is None or self.user_place is not None:
            return
        limit = self.rt.settings.max_sessions_per_user
        if not await caps.acquire("user", str(user_id), limit + replacing):
            raise _Closing(
                Close.TOO_MANY_SESSIONS, f"at most {limit} connected sessions per user, all nodes"
            )
        self.user_place = user_id

    async def _resume(self, who: Principal, session_id: str, seq: int) -> None:
        hub = self.hub
        session = hub.sessions.get(session_id)
        if session is None and self.rt.cluster_sessions is not None:
            await self._resume_elsewhere(who, session_id, seq)
            return
        if session is None or session.user_id != who.user_id:
            await self.conn.send(self.control(Op.INVALID_SESSION, False))
            return
        if seq > session.seq:
            raise _Closing(Close.INVALID_SEQ, f"seq {seq} was never sent (last is {session.seq})")
        # Replacing a connection that still holds its place: one more, until that one ends.
        await self._take_user_place(who.user_id, replacing=session.sink is not None)
        if session.sink is not None:  # still attached elsewhere: that connection is replaced
            old = session.sink
            session.detach(old)
            old.slow_consumer()
        sent = await self._replay(session, seq)
        if sent is None:
            hub.end_session(session)
            await self.conn.send(self.control(Op.INVALID_SESSION, False))
            return
        self._resumed(session, who, sent - seq)
        await hub.set_status(session)

    async def _replay(self, session: Session, sent: int) -> int | None:
        """Send every frame after `sent` the session has, with backpressure, until none is
        left; the last seq sent, or None if some are gone."""
        held = self.rt.held_frames
        while True:  # events arriving meanwhile are caught next turn
            missed = session.missed_since(sent)
            if missed is None:
                return None
            if not missed:
                # RESUMED (below, without waiting) needs room too: the replay's last frames may
                # still fill the outbox, and a full one would cut this client off as slow.
                await self.conn.wait_for_room()
                if session.seq == sent:
                    return sent
                continue  # events arrived meanwhile: replay them first
            if held is not None:  # cluster mode: none that Redis might still lack
                await held.log.flushed()
            for frame in missed:
                await self.conn.send(frame)
            sent += len(missed)

    def _resumed(self, session: Session, who: Principal, replayed: int) -> None:
        session.auth_session_id = who.session_id
        session.attach(self.sink)
        session.deliver(wire(ResumedEvent(d=Resumed(replayed=replayed))))
        self.session = session
        self.conn.user = session.user_id

    async def _resume_elsewhere(self, who: Principal, session_id: str, seq: int) -> None:
        """Cluster mode: a session this node does not have, taken over from the node that
        served it (dead, or shut down) with the frames its replay buffer in Redis holds after
        `seq`; INVALID_SESSION if that is not possible (relay.cluster.sessions)."""
        rt, hub = self.rt, self.hub
        cluster = rt.cluster_sessions
        assert cluster is not None
        resumed = await cluster.take_over(session_id, seq)
        if resumed is not None and (
            resumed.state.user_id != who.user_id or resumed.state.encoding != self.encoding
        ):
            cluster.given_back(session_id)  # not this client's to take: left as it was
            resumed = None
        if resumed is None:
            await self.conn.send(self.control(Op.INVALID_SESSION, False))
            return
        state = resumed.state
        try:
            await self._take_user_place(who.user_id, replacing=False)
            server_ids = await rt.chat.store.read(audience.server_ids_of, state.user_id)
            # What its topics carried after its frames (published while no node served it).
            catch_up = await cluster.missed(state, server_ids)
        except BaseException:
            cluster.given_back(session_id)
            raise
        if catch_up is None:  # a log trimmed past it, another epoch...: not exactly resumable
            cluster.given_back(session_id)
            await self.conn.send(self.control(Op.INVALID_SESSION, False))
            return
        session = self._new_session(state.user_id, who.session_id, state.encoding, 0)
        session.id, session.seq, session.intents = session_id, state.seq, state.intents
        # No await from `missed` to `opened`: the logs' events this node has processed are
        # numbered first (after state.seq), then every live one; all are written after the
        # frames from Redis, and wait in memory (detached) while those go out.
        hub.add_session(session, server_ids)
        cluster.opened(session)
        catch_up(session)
        session.detached_at = trio.current_time()
        for frame in resumed.frames:
            await self.conn.send(frame)
        sent = await self._replay(session, state.seq)
        if sent is None:  # trimmed in memory meanwhile (a flood): as on one node
            hub.end_session(session)
            await self.conn.send(self.control(Op.INVALID_SESSION, False))
            return
        self._resumed(session, who, sent - seq)
        await hub.set_status(session)


async def gateway_endpoint(rt: Runtime, conn: Connection, request: Request) -> None:
    encoding = request.query.get("encoding", "json")
    if encoding not in ENCODINGS:
        await conn.close(int(Close.INVALID_ENCODING), "encoding must be json or msgpack")
        return
    caps, ip = rt.shared_caps, request.client
    if caps is None or not ip:
        await GatewayConnection(rt, conn, encoding).run()
        return
    # Cluster mode: the client address's gateway connections on every node count together.
    if not await caps.acquire("ip", ip, rt.settings.max_connections_per_ip):
        await conn.close(TRY_AGAIN_LATER, "too many connections from this address, all nodes")
        return
    try:
        await GatewayConnection(rt, conn, encoding).run()
    finally:
        await caps.release("ip", ip)
