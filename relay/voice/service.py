"""The voice service: the voice channel actors, the one UDP socket, and the identified voice
sessions (one per member in voice), tied to the chat layer's voice states.

A `VoiceSession` is made by a voice connection's IDENTIFY (with the token of a
VOICE_SERVER_UPDATE) and holds the member's SSRC, transport key, media lane and UDP address.
It outlives its WebSocket for `voice_resume_grace_s`, so a client can RESUME (also after its
channel's actor crashed); then the voice state ends. A voice state that ends or moves (leave,
move, kick, a moderator's disconnect, the gateway session ending) ends its voice session: the
connection closes with 4014.

UDP: a packet from an address bound to a session goes to that session's actor; an IP discovery
request for the SSRC of a session not yet bound is answered with a response of the same size
(no amplification) and remembered; SELECT_PROTOCOL then binds the address the client names, if
a discovery came from it. Everything else is dropped without an answer.

Resource handling: `run()` owns the actor registry, the UDP receive loop and the reaper of
voice sessions whose resume grace passed.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING, Protocol

import trio

from actors import ActorStopped, Overloaded, Registry
from actors.voice import (
    Attach,
    Detach,
    Limits,
    MediaLane,
    Member,
    Packet,
    SelectSources,
    SetFlags,
    SetSources,
    VoiceActor,
    VoiceStats,
)
from relay.errors import NotFound
from relay.permissions import P
from relay.protocol import rtp
from relay.protocol.voice import VoiceClose

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from actors.base import Actor
    from actors.voice import VoiceMsg
    from relay.chat.context import Chat
    from relay.chat.voice import Voice, VoiceStates
    from relay.config import Settings

log = logging.getLogger("relay.voice")
REAP_EVERY_S = 1.0
MAX_DISCOVERED = 4  # discovery source addresses remembered per session
RECV_BATCH = 256  # datagrams read per turn of the UDP receiver
SEND_BUFFER_BYTES = 4 * 1024 * 1024
# SO_TIMESTAMPNS (Linux; Python's socket module lacks the name): the kernel stamps each datagram
# with its arrival time, so the voice actor can drop what waited too long (voice_max_delay_ms).
SO_TIMESTAMPNS = 35 if sys.platform == "linux" else None
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)


class VoiceSession:
    """One member's identified voice connection state (see the module doc)."""

    __slots__ = (
        "actor",
        "channel_id",
        "closer",
        "detached_at",
        "discovered",
        "e2ee",
        "e2ee_key",
        "key",
        "lane",
        "member",
        "notify",
        "protocol",
        "server_id",
        "session_id",
        "sources",
        "ssrc",
        "token",
        "udp_addr",
        "user_id",
        "wanted",
    )

    def __init__(
        self, state: Voice, token: str, ssrc: int, lane_size: int, stats: VoiceStats
    ) -> None:
        self.user_id = state.user_id
        self.server_id = state.server_id
        self.channel_id = state.channel_id
        self.session_id = state.session_id
        self.token = token  # resumes this voice session (it identified once)
        self.ssrc = ssrc
        self.key = secrets.token_bytes(rtp.KEY_BYTES)
        self.lane = MediaLane(lane_size, stats)
        self.protocol: str | None = None  # "udp" | "websocket" once selected
        self.udp_addr: tuple[str, int] | None = None
        self.discovered: list[tuple[str, int]] = []
        self.actor: Actor[VoiceMsg] | None = None
        self.member: Member | None = None
        # Closes the attached WebSocket with a voice close code (None: none attached).
        self.closer: Callable[[int, str], None] | None = None
        self.notify: Callable[[bytes], object] | None = None  # queues a control frame to it
        self.detached_at: float | None = None
        self.sources: dict[int, str] = {}  # video SSRC -> camera | screen | app
        self.e2ee = False  # its payloads are end-to-end encrypted (SELECT_PROTOCOL)
        self.e2ee_key: dict[str, str | None] | None = None  # its op 20, as relayed
        self.wanted: frozenset[int] = frozenset()  # the video SSRCs it receives


def flags_of(state: Voice) -> tuple[bool, bool, bool]:
    """(muted, deaf, can speak) as the actor applies them."""
    speak = bool(state.permissions & (int(P.SPEAK) | int(P.ADMINISTRATOR)))
    return state.self_mute or state.mute, state.self_deaf or state.deaf, speak


class VoiceView(Protocol):
    """The voice states the service serves, and the way back to whoever holds them: this
    process's `VoiceStates` (`LocalView`), or in cluster mode also those of members whose gateway
    session is on another node (relay.cluster.voice)."""

    on_change: list[Callable[[Voice | None, Voice | None], None]]

    @property
    def by_user(self) -> Mapping[int, Voice]: ...

    async def redeem(
        self, token: str, user_id: int, server_id: int, session_id: str
    ) -> Voice | None: ...

    async def own(self, channel_id: int) -> bool:
        """This process serves the channel (holds, or has just taken, its lease)."""

    def leave(self, state: Voice) -> None: ...

    def set_media(self, state: Voice, *, self_video: bool, self_stream: bool) -> None: ...


class LocalView:
    """One process: the voice states are this process's own."""

    def __init__(self, states: VoiceStates) -> None:
        self.states = states
        self.on_change = states.on_change

    @property
    def by_user(self) -> Mapping[int, Voice]:
        return self.states.by_user

    async def redeem(
        self, token: str, user_id: int, server_id: int, session_id: str
    ) -> Voice | None:
        return self.states.redeem(token, user_id, server_id, session_id)

    async def own(self, channel_id: int) -> bool:
        return True

    def leave(self, state: Voice) -> None:
        self.states.leave(state.user_id)

    def set_media(self, state: Voice, *, self_video: bool, self_stream: bool) -> None:
        self.states.update(state, self_video=self_video, self_stream=self_stream)


class VoiceService:
    def __init__(
        self,
        settings: Settings,
        states: VoiceStates,
        chat: Chat,
        view: VoiceView | None = None,
    ) -> None:
        self.settings = settings
        self.states = states  # this process's (permission rechecks act on them)
        self.view: VoiceView = view or LocalView(states)  # those its voice sessions serve
        self.chat = chat
        # Servers whose permissions changed, for `_recheck_forever`: a set (repeats fold) and
        # an event that wakes it; bounded by the number of servers.
        self._changed: set[int] = set()
        self._wake = trio.Event()
        self.limits = Limits(
            settings.voice_max_packet_bytes,
            settings.voice_max_packets_per_s,
            settings.voice_max_bytes_per_s,
            settings.voice_max_delay_ms / 1000,
        )
        self.actors: Registry[VoiceMsg] = Registry(self._new_actor)
        self.sessions: dict[int, VoiceSession] = {}  # user id -> session
        self.by_ssrc: dict[int, VoiceSession] = {}
        self.by_addr: dict[tuple[str, int], VoiceSession] = {}
        self.ssrcs_taken: set[int] = set()  # audio and video SSRCs of every session
        self.sock: socket.socket | None = None
        self.udp_port = 0
        self.public_address = settings.voice_public_address or settings.host
        self.stats = VoiceStats()  # the media path's counters, read by /metrics
        self.view.on_change.append(self._state_changed)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the UDP socket, start the actors' registry; `started` with the UDP port."""
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            # What cannot be read within voice_max_delay_ms would be dropped as late after
            # costing a read: a receive buffer of about that much lets the kernel drop it for
            # free. Sends go out in bursts of a channel's receivers (capped at wmem_max).
            buffer = self.settings.voice_udp_receive_buffer_bytes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            if SO_TIMESTAMPNS is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((self.settings.host, self.settings.voice_udp_port))
            self.sock = sock
            self.udp_port = sock.getsockname()[1]
            async with trio.open_nursery() as nursery:
                await nursery.start(self.actors.run)
                nursery.start_soon(self._receive_udp, sock)
                nursery.start_soon(self._reap_forever)
                nursery.start_soon(self._recheck_forever)
                task_status.started(self.udp_port)

    def close(self) -> None:
        self.actors.close_all()

    def _new_actor(self, key: str) -> VoiceActor:
        return VoiceActor(
            key, self.limits, idle_timeout_s=self.settings.actor_idle_s, stats=self.stats
        )

    # -- sessions --------------------------------------------------------------------------------

    def identify(self, state: Voice, token: str) -> VoiceSession:
        old = self.sessions.get(state.user_id)
        if old is not None:
            self.end(old, int(VoiceClose.DISCONNECTED), "identified again elsewhere")
        ssrc = self.new_ssrc()
        session = VoiceSession(state, token, ssrc, self.settings.voice_lane_packets, self.stats)
        self.sessions[state.user_id] = session
        self.by_ssrc[ssrc] = session
        return session

    def new_ssrc(self) -> int:
        ssrc = 0
        while ssrc == 0 or ssrc in self.ssrcs_taken:
            ssrc = secrets.randbits(32)
        self.ssrcs_taken.add(ssrc)
        return ssrc

    def set_sources(self, session: VoiceSession, types: list[str]) -> None:
        """Replace the session's video sources with new ones of these types (fresh SSRCs)."""
        self.ssrcs_taken.difference_update(session.sources)
        session.sources = {self.new_ssrc(): kind for kind in types}
        self._tell(session, SetSources(session.user_id, dict(session.sources)))

    def select_sources(self, session: VoiceSession, ssrcs: frozenset[int]) -> None:
        session.wanted = ssrcs
        self._tell(session, SelectSources(session.user_id, ssrcs))

    def channel_count(self, channel_id: int) -> int:
        return sum(1 for s in self.sessions.values() if s.channel_id == channel_id)

    async def attach(
        self,
        session: VoiceSession,
        closer: Callable[[int, str], None],
        notify: Callable[[bytes], object],
    ) -> None:
        """Put the session's member into its channel's actor (a fresh one after a crash)."""
        state = self.view.by_user.get(session.user_id)
        if state is None or state.channel_id != session.channel_id:
            raise ActorStopped("voice state gone")
        muted, deaf, speak = flags_of(state)

        def crashed() -> None:
            if session.closer is not None:
                session.closer(int(VoiceClose.VOICE_SERVER_CRASHED), "voice server restarted")

        member = Member(
            session.user_id,
            session.ssrc,
            session.key,
            session.lane,
            crashed,
            muted=muted,
            deaf=deaf,
            can_speak=speak,
        )
        actor = await self.actors.get(f"voice:{session.channel_id}")
        actor.tell(Attach(member))
        actor.tell(SetSources(session.user_id, dict(session.sources)))  # rebuilt after a crash
        actor.tell(SelectSources(session.user_id, session.wanted))
        session.actor, session.member = actor, member
        session.closer, session.notify = closer, notify
        session.detached_at = None

    def detach(self, session: VoiceSession) -> None:
        """The WebSocket went away: media stops; RESUME within the grace, or the state ends."""
        session.closer = session.notify = None
        session.detached_at = trio.current_time()
        self._tell(session, Detach(session.user_id))

    def end(self, session: VoiceSession, code: int, reason: str) -> None:
        if self.sessions.get(session.user_id) is not session:
            return
        del self.sessions[session.user_id]
        self.by_ssrc.pop(session.ssrc, None)
        self.ssrcs_taken.discard(session.ssrc)
        self.ssrcs_taken.difference_update(session.sources)
        if session.udp_addr is not None:
            self.by_addr.pop(session.udp_addr, None)
        self._tell(session, Detach(session.user_id))
        if session.closer is not None:
            session.closer(code, reason)
            session.closer = session.notify = None

    def evict(self, channel_id: int, code: int, reason: str) -> None:
        """End every voice session of the channel here (cluster mode: its lease was lost)."""
        for session in [s for s in self.sessions.values() if s.channel_id == channel_id]:
            self.end(session, code, reason)

    def _tell(self, session: VoiceSession, msg: VoiceMsg) -> None:
        if session.actor is None:
            return
        # A stopped actor has no members; an overloaded one drops this message.
        with contextlib.suppress(ActorStopped, Overloaded):
            session.actor.tell(msg)

    def _state_changed(self, before: Voice | None, after: Voice | None) -> None:
        user_id = (after or before).user_id  # type: ignore[union-attr]
        session = self.sessions.get(user_id)
        if session is None:
            return
        if after is None or after.channel_id != session.channel_id:
            self.end(session, int(VoiceClose.DISCONNECTED), "left, moved or disconnected")
            return
        muted, deaf, speak = flags_of(after)
        self._tell(session, SetFlags(user_id, muted, deaf, speak))

    def packet(self, session: VoiceSession, data: bytes, arrived: float = 0.0) -> None:
        """A media packet from the session's own transport; `arrived`: when the kernel got it
        (wall clock), 0 if not known."""
        actor = session.actor
        if actor is None or session.closer is None:
            return
        try:
            actor.tell(Packet(session.user_id, data, arrived))
        except (ActorStopped, Overloaded):
            self.stats.dropped["inbox"] += 1

    def bind_udp(self, session: VoiceSession, address: str | None, port: int | None) -> bool:
        """SELECT_PROTOCOL udp: bind the address the client names, if it did IP discovery from
        it."""
        if address is None or port is None:
            return False
        wanted = (address, port)
        if wanted not in session.discovered:
            return False
        bound = self.by_addr.get(wanted)
        if bound is not None and bound is not session:
            return False
        if session.udp_addr is not None:
            self.by_addr.pop(session.udp_addr, None)
        session.udp_addr = wanted
        self.by_addr[wanted] = session
        return True

    def send_udp(self, session: VoiceSession, packets: list[bytes]) -> None:
        """Send without waiting: a full socket buffer drops the packet (late audio is useless),
        and no task switch per packet."""
        sock, addr = self.sock, session.udp_addr
        if sock is None or addr is None:
            return
        for packet in packets:
            try:
                sock.sendto(packet, addr)
            except OSError:  # BlockingIOError included
                self.stats.dropped["send"] += 1

    def send_udp_one(self, session: VoiceSession, packet: bytes) -> None:
        """`send_udp` for one packet: a UDP receiver's lane hands packets here directly."""
        sock, addr = self.sock, session.udp_addr
        if sock is None or addr is None:
            return
        try:
            sock.sendto(packet, addr)
        except OSError:  # BlockingIOError included
            self.stats.dropped["send"] += 1

    async def _receive_udp(self, sock: socket.socket) -> None:
        """Read every datagram that is waiting (up to RECV_BATCH) between two yields: one task
        switch per batch rather than per packet."""
        max_bytes = self.settings.voice_max_packet_bytes
        stamped = SO_TIMESTAMPNS is not None
        arrived = 0.0
        max_delay_s = self.limits.max_delay_s
        while True:
            await trio.lowlevel.wait_readable(sock)
            too_old = time.time() - max_delay_s  # a batch is read in well under a millisecond
            for _ in range(RECV_BATCH):
                try:
                    if stamped:
                        data, ancillary, _, addr = sock.recvmsg(max_bytes + 1, _ANCILLARY_BYTES)
                        arrived = _arrival(ancillary)
                    else:
                        data, addr = sock.recvfrom(max_bytes + 1)
                except BlockingIOError:
                    break  # drained: wait_readable is the turn the others get
                except OSError:  # e.g. ICMP port unreachable from an earlier send
                    continue
                addr = (addr[0], addr[1])
                session = self.by_addr.get(addr)
                if session is not None:
                    if arrived and arrived < too_old:  # dropped here, where it costs least
                        self.stats.dropped["late"] += 1
                    else:
                        self.packet(session, data, arrived)
                elif rtp.is_discovery(data):
                    self._discovery(sock, data, addr)
                else:
                    self.stats.dropped["unbound"] += 1
            else:  # a full batch: let the actors forward it before reading more
                await trio.lowlevel.checkpoint()

    def _discovery(self, sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        try:
            kind, ssrc, _, _ = rtp.parse_discovery(data)
        except rtp.PacketError:
            return
        session = self.by_ssrc.get(ssrc)
        if kind != rtp.DISCOVERY_REQUEST or session is None or session.udp_addr is not None:
            self.stats.dropped["unbound"] += 1
            return
        if addr not in session.discovered:
            session.discovered = [*session.discovered[-(MAX_DISCOVERED - 1) :], addr]
        try:
            sock.sendto(rtp.discovery_response(ssrc, addr[0], addr[1]), addr)
        except OSError:
            self.stats.dropped["send"] += 1

    def permissions_changed(self, server_id: int) -> None:
        """A permission change in a server (hub hook, synchronous): check its voice states."""
        if any(v.server_id == server_id for v in self.states.by_user.values()):
            self._changed.add(server_id)
            self._wake.set()

    async def _recheck_forever(self) -> None:
        """Take each changed server's voice states' permissions again: SPEAK applies at once,
        and a member who lost CONNECT (or the channel) leaves voice."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            servers, self._changed = self._changed, set()
            for server_id in servers:
                for state in self.states.of_server(server_id):
                    try:
                        channel = await self.chat.store.read(
                            self.chat.q.voice.voice_channel, state.channel_id, state.user_id
                        )
                        allowed = bool(channel.permissions & int(P.CONNECT))
                    except NotFound:
                        allowed = False
                    current = self.states.by_user.get(state.user_id)
                    if current is None or current.channel_id != state.channel_id:
                        continue  # it changed while we read
                    if not allowed:
                        self.states.leave(state.user_id)
                    else:
                        self.states.update(current, permissions=channel.permissions)

    async def _reap_forever(self) -> None:
        grace = self.settings.voice_resume_grace_s
        while True:
            await trio.sleep(REAP_EVERY_S)
            self.states.prune_grants()
            deadline = trio.current_time() - grace
            for session in [
                s
                for s in self.sessions.values()
                if s.detached_at is not None and s.detached_at < deadline
            ]:
                self.end(session, int(VoiceClose.DISCONNECTED), "resume grace over")
                state = self.view.by_user.get(session.user_id)
                if state is not None and state.channel_id == session.channel_id:
                    self.view.leave(state)


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive time of a datagram (SO_TIMESTAMPNS), 0 if it gave none."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = _TIMESPEC.unpack(value)
            return float(seconds + nanoseconds * 1e-9)
    return 0.0
