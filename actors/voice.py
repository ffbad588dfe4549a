"""The voice channel actor: one per voice channel with someone connected. It owns the channel's
connected members (SSRC, transport key, mute/deafen/speak state, media lane) and forwards each
media packet: authenticate and decrypt with the sender's key, drop what must not be heard, and
encrypt for every other member who is not deafened with that member's key, into their lane.

A member's lane (`MediaLane`) is bounded and drops its oldest packet when full: late audio is
useless, and a receiver that stops reading never stalls the channel or the other receivers.
The connection that owns the member drains the lane (UDP or WebSocket, relay.voice).

Packets reach the actor with `tell` (never `send`): a full inbox drops the packet. The
transport already said who sent it (the connection, or the UDP source address bound to a
member); the RTP header's SSRC must be that member's (else dropped: spoofing), its counter new
(else dropped: replay), and it must authenticate with that member's key.

Error handling: a crash calls each member's `on_crash` (the connection closes with 4015 and the
client RESUMEs, which attaches it to the fresh instance: the state is rebuilt from the clients).
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import trio

from actors.base import Actor
from relay.protocol import rtp

if TYPE_CHECKING:
    from collections.abc import Callable

# Why a media packet was dropped (the `reason` label of relay_voice_packets_dropped_total,
# docs/metrics.md). The actor's: size, malformed, not_in_channel, spoof, auth, replay, rate,
# muted, feedback, lane_overflow, late; the service's (relay.voice): unbound, inbox, send, and
# late too (checked on reading the socket, and again after the actor's inbox).
DROP_REASONS = (
    "late",
    "size",
    "malformed",
    "not_in_channel",
    "spoof",
    "auth",
    "replay",
    "rate",
    "muted",
    "feedback",
    "lane_overflow",
    "unbound",
    "inbox",
    "send",
)


class VoiceStats:
    """The media path's counters for the whole process, in plain ints (one addition per packet;
    /metrics turns them into series at scrape time). Shared by every voice actor and lane, so
    they outlive an actor's idle stop or crash."""

    __slots__ = ("dropped", "forwarded", "forwarded_bytes", "received", "received_bytes")

    def __init__(self) -> None:
        self.received = 0  # packets that reached an actor
        self.received_bytes = 0
        self.forwarded = 0  # packets queued for a receiver (one per receiver)
        self.forwarded_bytes = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)


class MediaLane:
    """A receiver's bounded packet queue: drops the oldest when full; never blocks the writer."""

    __slots__ = ("_event", "direct", "dropped", "packets", "stats")

    def __init__(self, size: int, stats: VoiceStats | None = None) -> None:
        self.packets: deque[bytes] = deque(maxlen=size)
        self._event = trio.Event()
        self.dropped = 0
        self.stats = stats if stats is not None else VoiceStats()
        # Set for a UDP receiver: a send that never waits (a full socket buffer drops), so an
        # empty lane hands the packet straight on instead of waking the writer task.
        self.direct: Callable[[bytes], None] | None = None

    def push(self, packet: bytes) -> None:
        if self.direct is not None and not self.packets:
            self.direct(packet)
            return
        if len(self.packets) == self.packets.maxlen:
            self.dropped += 1
            self.stats.dropped["lane_overflow"] += 1
        self.packets.append(packet)
        self._event.set()

    async def take(self) -> list[bytes]:
        """Everything queued (waits for at least one packet)."""
        while not self.packets:
            self._event = trio.Event()
            await self._event.wait()
        taken = list(self.packets)
        self.packets.clear()
        return taken


class Member:
    """One connected member as the actor sees it. Built by the connection; changed only by the
    actor (through messages) once attached."""

    __slots__ = (
        "bucket_at",
        "bucket_bytes",
        "bucket_packets",
        "can_speak",
        "counter",
        "deaf",
        "key",
        "lane",
        "muted",
        "on_crash",
        "replay",
        "sources",
        "ssrc",
        "user_id",
        "wanted",
    )

    def __init__(
        self,
        user_id: int,
        ssrc: int,
        key: bytes,
        lane: MediaLane,
        on_crash: Callable[[], None],
        *,
        muted: bool,
        deaf: bool,
        can_speak: bool,
    ) -> None:
        self.user_id = user_id
        self.ssrc = ssrc
        self.key = key
        self.lane = lane
        self.on_crash = on_crash
        self.muted = muted  # self or server mute
        self.deaf = deaf  # self or server deafen
        self.can_speak = can_speak  # SPEAK in the channel
        self.replay = rtp.ReplayWindow()
        self.sources: dict[int, str] = {}  # video SSRC -> camera | screen | app
        self.wanted: frozenset[int] = frozenset()  # the video SSRCs this member receives
        self.counter = 0  # the server's own nonce counter towards this member
        self.bucket_at = 0.0  # the second the rate counters below are for
        self.bucket_packets = 0
        self.bucket_bytes = 0


class Attach(msgspec.Struct, frozen=True):
    member: Any  # a Member (not encoded: actor messages with live objects stay in-process)


class Detach(msgspec.Struct, frozen=True):
    user_id: int


class SetFlags(msgspec.Struct, frozen=True):
    user_id: int
    muted: bool
    deaf: bool
    can_speak: bool


class SetSources(msgspec.Struct, frozen=True):
    user_id: int
    sources: dict[int, str]  # SSRC -> type, allocated by the connection


class SelectSources(msgspec.Struct, frozen=True):
    user_id: int
    ssrcs: frozenset[int]


class Packet(msgspec.Struct, frozen=True):
    user_id: int  # the sender, as its transport proved it
    data: bytes
    arrived: float = 0.0  # wall-clock time the kernel received it (UDP); 0: not known


class Crash(msgspec.Struct, frozen=True):
    """For tests: the actor raises (supervision, clean reconnect)."""


VoiceMsg = Attach | Detach | SetFlags | SetSources | SelectSources | Packet | Crash


class Limits(msgspec.Struct, frozen=True):
    packet_bytes: int
    packets_per_s: int
    bytes_per_s: int
    max_delay_s: float = 0.06  # a packet that waited longer in the server is dropped (late)


class VoiceActor(Actor[VoiceMsg]):
    inbox_size: ClassVar[int] = 1024
    batch_max: ClassVar[int] = 64  # forward bursts before yielding: receivers' writers batch

    def __init__(
        self,
        key: str,
        limits: Limits,
        *,
        idle_timeout_s: float | None = None,
        stats: VoiceStats | None = None,
    ) -> None:
        super().__init__(key)
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self.members: dict[int, Member] = {}  # user id -> member
        self.stats = stats if stats is not None else VoiceStats()

    async def handle(self, msg: VoiceMsg) -> None:
        match msg:
            case Packet(user_id, data, arrived):
                self._forward(user_id, data, arrived)
            case Attach(member):
                assert isinstance(member, Member)
                self.members[member.user_id] = member
            case Detach(user_id):
                self.members.pop(user_id, None)
            case SetFlags(user_id, muted, deaf, can_speak):
                member = self.members.get(user_id)
                if member is not None:
                    member.muted, member.deaf, member.can_speak = muted, deaf, can_speak
            case SetSources(user_id, sources):
                member = self.members.get(user_id)
                if member is not None:
                    member.sources = sources
            case SelectSources(user_id, ssrcs):
                member = self.members.get(user_id)
                if member is not None:
                    member.wanted = ssrcs
            case Crash():
                raise RuntimeError("voice actor crash requested (tests)")

    def _forward(self, user_id: int, data: bytes, arrived: float) -> None:
        stats = self.stats
        stats.received += 1
        stats.received_bytes += len(data)
        dropped = stats.dropped
        if arrived and time.time() - arrived > self.limits.max_delay_s:
            # Behind a burst or a pause, what waited in the socket buffer and the inbox would
            # reach listeners too late to play: drop it rather than delay everything after it.
            dropped["late"] += 1
            return
        sender = self.members.get(user_id)
        if sender is None:
            dropped["not_in_channel"] += 1
            return
        if len(data) > self.limits.packet_bytes:
            dropped["size"] += 1
            return
        if rtp.is_rtcp(data):
            self._feedback(sender, data)
            return
        try:
            header = rtp.parse_header(data)
        except rtp.PacketError:
            dropped["malformed"] += 1
            return
        ssrc = header.ssrc
        video = ssrc != sender.ssrc
        if video and ssrc not in sender.sources:  # another member's SSRC, or none allocated
            dropped["spoof"] += 1
            return
        try:
            body = rtp.open_packet(data, header.aad_end, sender.key)
        except rtp.PacketError:
            dropped["auth"] += 1
            return
        if not sender.replay.accept(rtp.counter_of(data)):
            dropped["replay"] += 1
            return
        if not self._within_rate(sender, data):
            dropped["rate"] += 1
            return
        if not video and (sender.muted or not sender.can_speak):
            dropped["muted"] += 1
            return
        clear = data[: header.aad_end]
        for member in self.members.values():
            if member is sender or member.deaf or (video and ssrc not in member.wanted):
                continue
            member.counter += 1
            packet = rtp.seal(clear, body, member.key, member.counter)
            member.lane.push(packet)
            stats.forwarded += 1
            stats.forwarded_bytes += len(packet)

    def _feedback(self, asker: Member, data: bytes) -> None:
        """A keyframe request (PLI/FIR) for a source: to that source's sender only."""
        try:
            payload_type, fmt, sender_ssrc = rtp.parse_rtcp(data)
            if sender_ssrc != asker.ssrc or not rtp.is_keyframe_request(payload_type, fmt):
                raise rtp.PacketError("not this member's keyframe request")
            body = rtp.open_packet(data, rtp.RTCP_HEADER_BYTES, asker.key)
        except rtp.PacketError:
            self.stats.dropped["feedback"] += 1
            return
        if not asker.replay.accept(rtp.counter_of(data)):
            self.stats.dropped["replay"] += 1
            return
        if not self._within_rate(asker, data):
            self.stats.dropped["rate"] += 1
            return
        media = int.from_bytes(body[:4], "big")
        owner = next((m for m in self.members.values() if media in m.sources), None)
        if owner is None or owner is asker or media not in asker.wanted:
            self.stats.dropped["feedback"] += 1
            return
        owner.counter += 1
        clear = data[: rtp.RTCP_HEADER_BYTES]
        packet = rtp.seal(clear, body, owner.key, owner.counter)
        owner.lane.push(packet)
        self.stats.forwarded += 1
        self.stats.forwarded_bytes += len(packet)

    def _within_rate(self, sender: Member, data: bytes) -> bool:
        second = float(int(trio.current_time()))
        if sender.bucket_at != second:
            sender.bucket_at, sender.bucket_packets, sender.bucket_bytes = second, 0, 0
        sender.bucket_packets += 1
        sender.bucket_bytes += len(data)
        limits = self.limits
        return (
            sender.bucket_packets <= limits.packets_per_s
            and sender.bucket_bytes <= limits.bytes_per_s
        )

    def on_crash(self, exc: Exception) -> None:
        for member in self.members.values():
            member.on_crash()
