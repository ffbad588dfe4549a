"""The voice connection endpoint (`/v1/voice` on the realtime listener, docs/voice.md): HELLO,
IDENTIFY or RESUME, SELECT_PROTOCOL, then heartbeats, speaking state and, with the `websocket`
protocol, media as binary messages.

Resource handling: the reader loop runs in the endpoint's task, inside a nursery that holds the
media writer (started by SELECT_PROTOCOL or RESUME), which drains the session's media lane to
the WebSocket or the UDP socket; when the reader ends, the writer is cancelled and the voice
session is detached (it may RESUME within `voice_resume_grace_s`).

Error handling: protocol violations close with the voice close codes (relay.protocol.voice);
bad media is dropped by the actor, never answered.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from actors import ActorStopped
from relay.chat.args import snowflake
from relay.errors import RelayError
from relay.permissions import P
from relay.protocol import rtp, wsframe
from relay.protocol.voice import (
    E2eeKey,
    E2eeSealed,
    Heartbeat,
    Identify,
    Resume,
    SelectProtocol,
    SelectSources,
    Sources,
    Speaking,
    VoiceClientFrame,
    VoiceClose,
    VoiceFrameError,
    VoiceOp,
    decode_voice,
    encode_voice,
)
from relay.ratelimit import Bucket
from relay.realtime.connection import ConnectionClosed

if TYPE_CHECKING:
    from relay.chat.voice import VoiceStates
    from relay.config import Settings
    from relay.realtime.connection import Connection
    from relay.realtime.listener import Request
    from relay.voice.service import VoiceService, VoiceSession


class _Closing(Exception):
    def __init__(self, code: VoiceClose, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


ADMINISTRATOR = int(P.ADMINISTRATOR)
VIDEO = int(P.VIDEO)
STREAM = int(P.STREAM)


def sources_out(session: VoiceSession) -> list[dict[str, Any]]:
    return [{"ssrc": ssrc, "type": kind} for ssrc, kind in session.sources.items()]


def control(op: VoiceOp, d: Any) -> bytes:
    return wsframe.text_frame(encode_voice(op, d))


class VoiceConnection:
    def __init__(
        self, settings: Settings, service: VoiceService, states: VoiceStates, conn: Connection
    ) -> None:
        self.settings = settings
        self.service = service
        self.states = states
        self.conn = conn
        self.session: VoiceSession | None = None
        self.heartbeat_s = settings.heartbeat_interval_s
        self.grace_s = settings.heartbeat_grace_s
        self.watch: trio.CancelScope | None = None
        self.limiter = Bucket(settings.voice_control_rate, 60.0, trio.current_time())
        self.nursery: trio.Nursery | None = None
        self.writing = False

    async def run(self) -> None:
        hello = {"heartbeat_interval": int(self.heartbeat_s * 1000), "v": 1}
        await self.conn.send(control(VoiceOp.HELLO, hello))
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self._read_loop()
                nursery.cancel_scope.cancel()
        except* _Closing as group:
            first: BaseException = group
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            assert isinstance(first, _Closing)
            await self.conn.close(int(first.code), first.reason)
        finally:
            session = self.session
            if session is not None and session.closer == self._close:
                self.service.detach(session)
                self._notify_others(
                    session, VoiceOp.CLIENT_DISCONNECT, {"user_id": str(session.user_id)}
                )

    def _close(self, code: int, reason: str) -> None:
        self.conn.close_nowait(code, reason)

    async def _read_loop(self) -> None:
        deadline = trio.current_time() + self.heartbeat_s + self.grace_s
        with trio.CancelScope(deadline=deadline) as self.watch:
            while True:
                try:
                    data = await self.conn.receive()
                except ConnectionClosed:
                    return
                if isinstance(data, bytes):
                    self._media(data)
                    continue
                if not self.limiter.hit(trio.current_time()):
                    raise _Closing(VoiceClose.RATE_LIMITED, "too many frames")
                try:
                    frame = decode_voice(data)
                except VoiceFrameError as e:
                    raise _Closing(e.code, str(e)[:120]) from None
                await self._handle(frame)
        if self.session is None:
            raise _Closing(VoiceClose.NOT_AUTHENTICATED, "no IDENTIFY or RESUME in time")
        raise _Closing(VoiceClose.SESSION_TIMEOUT, "no heartbeat in time")

    def _media(self, data: bytes) -> None:
        session = self.session
        if session is None:
            raise _Closing(VoiceClose.NOT_AUTHENTICATED, "IDENTIFY first")
        if session.protocol == "websocket":
            self.service.packet(session, data)

    def _ready(self) -> VoiceSession:
        if self.session is None:
            raise _Closing(VoiceClose.NOT_AUTHENTICATED, "IDENTIFY first")
        return self.session

    async def _handle(self, frame: VoiceClientFrame) -> None:
        match frame:
            case Heartbeat(d=nonce):
                if self.session is not None and self.watch is not None:
                    self.watch.deadline = trio.current_time() + self.heartbeat_s + self.grace_s
                await self.conn.send(control(VoiceOp.HEARTBEAT_ACK, nonce))
            case Identify(d=data):
                if self.session is not None:
                    raise _Closing(VoiceClose.ALREADY_AUTHENTICATED, "already identified")
                await self._identify(data.server_id, data.user_id, data.session_id, data.token)
            case Resume(d=data):
                if self.session is not None:
                    raise _Closing(VoiceClose.ALREADY_AUTHENTICATED, "already identified")
                await self._resume(data.server_id, data.session_id, data.token)
            case SelectProtocol(d=data):
                session = self._ready()
                state = self.service.view.by_user.get(session.user_id)
                if state is not None and state.e2ee_required and not data.data.e2ee:
                    raise _Closing(VoiceClose.E2EE_REQUIRED, "this channel requires e2ee")
                session.e2ee = data.data.e2ee
                if data.data.mode != rtp.MODE:
                    raise _Closing(VoiceClose.UNKNOWN_ENCRYPTION_MODE, f"mode must be {rtp.MODE}")
                if data.protocol == "udp" and not self.service.bind_udp(
                    session, data.data.address, data.data.port
                ):
                    raise _Closing(
                        VoiceClose.UNKNOWN_PROTOCOL, "udp needs the address IP discovery gave"
                    )
                session.protocol = data.protocol
                self._start_writer()
                description = {
                    "mode": rtp.MODE,
                    "secret_key": list(session.key),
                    "protocol": data.protocol,
                }
                await self.conn.send(control(VoiceOp.SESSION_DESCRIPTION, description))
            case Sources(d=data):
                await self._sources(self._ready(), [s.type for s in data.sources])
            case SelectSources(d=data):
                self.service.select_sources(self._ready(), frozenset(data.ssrcs))
            case E2eeKey(d=data):
                session = self._ready()
                key = {
                    "user_id": str(session.user_id),
                    "public_key": data.public_key,
                    "signature": data.signature,
                }
                session.e2ee_key = key
                self._notify_others(session, VoiceOp.E2EE_KEY, key)
                for other in self._channel_sessions(session):  # the newcomer learns the others'
                    if other.e2ee_key is not None:
                        self.conn.send_nowait(control(VoiceOp.E2EE_KEY, other.e2ee_key))
            case E2eeSealed(d=data):
                session = self._ready()
                for other in self._channel_sessions(session):
                    sealed = data.keys.get(str(other.user_id))
                    if sealed is not None and other.notify is not None:
                        relayed = {
                            "user_id": str(session.user_id),
                            "epoch": data.epoch,
                            "sealed": sealed,
                        }
                        other.notify(control(VoiceOp.E2EE_SEALED, relayed))
            case Speaking(d=data):
                session = self._ready()
                speaking = {"user_id": str(session.user_id), "ssrc": session.ssrc}
                speaking["speaking"] = data.speaking
                self._notify_others(session, VoiceOp.SPEAKING, speaking)

    async def _sources(self, session: VoiceSession, types: list[str]) -> None:
        """Op 12: a camera needs VIDEO, a screen or app STREAM; everyone in the channel hears
        the new SSRCs, and the voice state's self_video and self_stream follow."""
        state = self.service.view.by_user.get(session.user_id)
        if state is None:
            raise _Closing(VoiceClose.DISCONNECTED, "voice state gone")
        have = state.permissions
        if not have & ADMINISTRATOR:
            if "camera" in types and not have & VIDEO:
                raise _Closing(VoiceClose.SOURCE_NOT_PERMITTED, "a camera needs VIDEO")
            if {"screen", "app"} & set(types) and not have & STREAM:
                raise _Closing(VoiceClose.SOURCE_NOT_PERMITTED, "a screen or app needs STREAM")
        self.service.set_sources(session, types)
        announced = {"user_id": str(session.user_id), "sources": sources_out(session)}
        await self.conn.send(control(VoiceOp.SOURCES, announced))
        self._notify_others(session, VoiceOp.SOURCES, announced)
        self.service.view.set_media(
            state, self_video="camera" in types, self_stream=bool({"screen", "app"} & set(types))
        )

    def _ids(self, server_id: str, user_id: str | None = None) -> tuple[int, int | None]:
        try:
            sid = snowflake(server_id, "server")
            uid = None if user_id is None else snowflake(user_id, "user")
        except RelayError:
            raise _Closing(VoiceClose.AUTHENTICATION_FAILED, "bad ids") from None
        return sid, uid

    async def _identify(self, server_id: str, user_id: str, session_id: str, token: str) -> None:
        sid, uid = self._ids(server_id, user_id)
        assert uid is not None
        state = await self.service.view.redeem(token, uid, sid, session_id)
        if state is None:
            raise _Closing(VoiceClose.AUTHENTICATION_FAILED, "unknown, used or expired token")
        if not await self.service.view.own(state.channel_id):
            raise _Closing(VoiceClose.VOICE_SERVER_MOVED, "the channel is served elsewhere")
        if self.service.channel_count(state.channel_id) >= (
            self.settings.voice_max_members_per_channel
        ):
            raise _Closing(VoiceClose.CHANNEL_FULL, "voice channel full")
        session = self.service.identify(state, token)
        await self._attach(session)
        ready = {
            "ssrc": session.ssrc,
            "ip": self.service.public_address,
            "port": self.service.udp_port,
            "modes": [rtp.MODE],
            "e2ee_required": state.e2ee_required,
            "heartbeat_interval": int(self.heartbeat_s * 1000),
        }
        await self.conn.send(control(VoiceOp.READY, ready))
        self._announce(session)

    async def _resume(self, server_id: str, session_id: str, token: str) -> None:
        sid, _ = self._ids(server_id)
        found = next(
            (
                s
                for s in self.service.sessions.values()
                if s.token == token and s.session_id == session_id and s.server_id == sid
            ),
            None,
        )
        if found is None:
            raise _Closing(VoiceClose.SESSION_NO_LONGER_VALID, "no such voice session")
        if found.closer is not None:  # attached elsewhere: that connection is replaced
            found.closer(int(VoiceClose.DISCONNECTED), "resumed elsewhere")
        await self._attach(found)
        await self.conn.send(control(VoiceOp.RESUMED, None))
        if found.protocol is not None:
            self._start_writer()
        self._announce(found)

    async def _attach(self, session: VoiceSession) -> None:
        try:
            await self.service.attach(session, self._close, self.conn.send_nowait)
        except ActorStopped:
            self.service.end(session, int(VoiceClose.DISCONNECTED), "voice state gone")
            raise _Closing(VoiceClose.DISCONNECTED, "voice state gone") from None
        self.session = session
        if self.watch is not None:
            self.watch.deadline = trio.current_time() + self.heartbeat_s + self.grace_s

    def _announce(self, session: VoiceSession) -> None:
        """CLIENT_CONNECT: the others to the newcomer, the newcomer to the others."""
        others = [
            {
                "user_id": str(s.user_id),
                "ssrc": s.ssrc,
                "sources": sources_out(s),
                "e2ee": s.e2ee,
            }
            for s in self.service.sessions.values()
            if s.channel_id == session.channel_id and s is not session and s.closer is not None
        ]
        self.conn.send_nowait(control(VoiceOp.CLIENT_CONNECT, {"clients": others}))
        me = {
            "clients": [
                {
                    "user_id": str(session.user_id),
                    "ssrc": session.ssrc,
                    "sources": sources_out(session),
                }
            ]
        }
        self._notify_others(session, VoiceOp.CLIENT_CONNECT, me)

    def _channel_sessions(self, session: VoiceSession) -> list[VoiceSession]:
        return [
            s
            for s in self.service.sessions.values()
            if s.channel_id == session.channel_id and s is not session
        ]

    def _notify_others(self, session: VoiceSession, op: VoiceOp, d: Any) -> None:
        frame = control(op, d)
        for other in self.service.sessions.values():
            if other.channel_id == session.channel_id and other is not session and other.notify:
                other.notify(frame)

    def _start_writer(self) -> None:
        if not self.writing and self.nursery is not None and self.session is not None:
            self.writing = True
            self.nursery.start_soon(self._write_media, self.session)

    async def _write_media(self, session: VoiceSession) -> None:
        lane = session.lane
        if session.protocol != "websocket":
            lane.direct = partial(self.service.send_udp_one, session)
        try:
            while True:
                packets = await lane.take()
                if session.protocol == "websocket":
                    for packet in packets:
                        await self.conn.send(wsframe.binary_frame(packet))
                else:
                    self.service.send_udp(session, packets)
        finally:
            lane.direct = None


async def voice_endpoint(
    settings: Settings,
    service: VoiceService,
    states: VoiceStates,
    conn: Connection,
    request: Request,
) -> None:
    await VoiceConnection(settings, service, states, conn).run()


def endpoint_for(settings: Settings, service: VoiceService, states: VoiceStates) -> Any:
    return partial(voice_endpoint, settings, service, states)
