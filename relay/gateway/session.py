"""A gateway session: one identified login on the gateway, which outlives its connection for a
resume window.

Every event routed to a session that shares its intents (IDENTIFY's `intents`; others are
skipped, as if never sent) gets the session's next sequence number and goes into its replay
buffer (bounded by count and by age), then, if a connection is attached, into that
connection's outbox. When the outbox is full the connection is cut as a slow consumer; the
session stays, keeps buffering, and a RESUME replays what the client missed. A session whose
buffer dropped events the client has not seen can no longer be resumed.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Protocol

import trio

from relay.protocol.gateway import ALL_INTENTS, ALWAYS_INTENT

if TYPE_CHECKING:
    from relay.protocol.gateway import Event


class Sink(Protocol):
    """Where an attached connection takes frames: False means its outbox is full."""

    def send_frame(self, frame: bytes, write_now: bool, /) -> bool: ...

    def slow_consumer(self) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class Session:
    __slots__ = (
        "_replay",
        "_replay_age_s",
        "_replay_limit",
        "_replay_size",
        "activity",
        "auth_session_id",
        "detached_at",
        "encoding",
        "id",
        "intents",
        "seq",
        "sink",
        "status",
        "user_id",
    )

    def __init__(
        self,
        user_id: int,
        auth_session_id: int,
        encoding: str,
        *,
        replay_size: int,
        replay_age_s: float,
        intents: int = ALL_INTENTS,
    ) -> None:
        self.id = secrets.token_urlsafe(16)
        self.user_id = user_id
        self.auth_session_id = auth_session_id  # the login whose token identified it
        self.encoding = encoding
        # IDENTIFY's intents, plus the bit of the events every session gets (READY, RESUMED).
        self.intents = intents | ALWAYS_INTENT
        self.seq = 0
        self.status = "online"
        self.activity: str | None = None
        self.sink: Sink | None = None
        self.detached_at: float | None = None
        # The events of the latest seqs, oldest first: every event after READY (the only one
        # not kept, and the first) is kept, so the last has seq `seq` and the others count
        # down from it. Only the events themselves, each shared by every session it went to:
        # a RESUME builds the session's frames again (a frame per session per event was ~400
        # bytes: 400 MB for 1000 sessions' full buffers), and no tuple per delivery (a
        # (seq, time, event) was 88 bytes and an object for the cyclic GC to walk). A list,
        # not a deque: an idle session's deque block alone was 600 bytes.
        self._replay: list[Event] = []
        self._replay_size = replay_size
        # Trimmed back to replay_size only once it is an eighth over: cutting the oldest event
        # on every delivery moved the whole list each time (a full 1000-event buffer: 8 KB
        # per session per event, 0.4 of the ~2.5 µs each session's delivery took).
        self._replay_limit = replay_size + replay_size // 8
        self._replay_age_s = replay_age_s

    def deliver(
        self,
        event: Event,
        now: float | None = None,
        write_now: bool = False,
        *,
        replay: bool = True,
    ) -> bytes | None:
        """Number the event, keep it for replay, and pass it to the connection (never blocks).
        An event outside the session's intents is skipped: no seq, nothing kept. Returns the
        session's frame of it (None: skipped).

        `now` (trio.current_time()) may be given by a caller delivering one event to many
        sessions; `write_now` by one that delivers nothing more before it yields (see
        `Connection.send_nowait`). `replay=False` for READY: only a client that has READY
        knows the session id, so none resumes from before it, and an idle session need not
        keep it.
        """
        if not event.intent & self.intents:
            return None
        self.seq += 1
        frame = event.frame(self.seq, self.encoding)
        if now is None:
            now = trio.current_time()
        if replay:
            if now < event.at:  # its first delivery: the time its replay age counts from
                event.at = now
            kept = self._replay
            kept.append(event)
            age = self._replay_age_s
            if len(kept) > self._replay_limit or now - kept[0].at > age:
                cut = max(0, len(kept) - self._replay_size)
                while cut < len(kept) and now - kept[cut].at > age:
                    cut += 1
                del kept[:cut]
        else:  # READY: missed_since counts the kept events' seqs back from `seq`
            assert self.seq == 1, "only a session's first event may go unkept"
        if self.sink is not None and not self.sink.send_frame(frame, write_now):
            sink, self.sink = self.sink, None
            self.detached_at = now
            sink.slow_consumer()
        return frame

    def attach(self, sink: Sink) -> None:
        self.sink = sink
        self.detached_at = None

    def detach(self, sink: Sink) -> None:
        if self.sink is sink:
            self.sink = None
            self.detached_at = trio.current_time()

    def missed_since(self, seq: int) -> list[bytes] | None:
        """Every frame after `seq`, in order, or None if some of them are gone (or seq is
        from the future)."""
        if seq > self.seq:
            return None
        if seq == self.seq:
            return []
        oldest = self.seq - len(self._replay) + 1  # the seq of _replay[0]
        if seq + 1 < oldest:
            return None
        missed = self._replay[seq + 1 - oldest :]
        return [event.frame(s, self.encoding) for s, event in enumerate(missed, seq + 1)]


HELD_FRAMES = 262_144  # frames waiting for Redis at most, all sessions (then: slow consumer)
HELD_HIGH_WATER = 16_384  # over it, channel deliveries wait (HeldFrames.room)


class ReplayWriter(Protocol):
    """Where cluster mode writes sessions' replay buffers (relay.cluster.replay.ReplayLog)."""

    def append(self, session_id: str, seq: int, frame: bytes, /) -> None: ...

    async def flushed(self) -> None: ...


class HeldFrames:
    """Cluster mode: a session's frames reach its connection only once its replay buffer in
    Redis has them (`ReplayWriter.flushed`), so a node killed between the two never leaves a
    client holding an event that a RESUME on another node would lack. One task hands them
    over, a batch per round trip to Redis.

    Overflow policy: past `high_water` waiting frames, channel deliveries wait (`room`, the
    hub's `pace`), which pushes back on the channel actors (and so on senders) and on the
    broker's deliveries (whose bounded queue then resyncs, docs/cluster.md); at most `limit`
    frames wait (other events do not wait), and a session whose frame does not fit is cut as a
    slow consumer (4010) and keeps buffering for a RESUME.
    """

    def __init__(
        self, log: ReplayWriter, limit: int = HELD_FRAMES, high_water: int = HELD_HIGH_WATER
    ) -> None:
        self.log = log
        self.limit = limit
        self.high_water = high_water
        self._held: list[tuple[Session, Sink, bytes]] = []
        self._wake = trio.Event()
        self._released = trio.Event()  # set after each batch handed over, then replaced
        self._in_flight = 0  # frames of the batch waiting for Redis

    async def room(self) -> None:
        """Wait while more than `high_water` frames wait for Redis."""
        while len(self._held) + self._in_flight > self.high_water:
            await self._released.wait()

    def hold(self, session: Session, sink: Sink, frame: bytes) -> bool:
        """Queue a frame for `sink` (False: too many wait)."""
        if len(self._held) >= self.limit:
            return False
        self._held.append((session, sink, frame))
        self._wake.set()
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._held = self._held, []
            self._in_flight = len(batch)
            await self.log.flushed()
            self._in_flight = 0
            now = trio.current_time()
            for session, sink, frame in batch:
                # A session that moved to another connection since got these by its RESUME.
                if session.sink is sink and not sink.send_frame(frame, False):
                    session.sink, session.detached_at = None, now
                    sink.slow_consumer()
            released, self._released = self._released, trio.Event()
            released.set()


class ClusterSession(Session):
    """A session whose replay buffer is also written to Redis (cluster mode, HeldFrames): its
    frames go to the replay writer and reach the connection once written."""

    __slots__ = ("held",)

    def __init__(
        self,
        user_id: int,
        auth_session_id: int,
        encoding: str,
        *,
        replay_size: int,
        replay_age_s: float,
        intents: int = ALL_INTENTS,
        held: HeldFrames,
    ) -> None:
        super().__init__(
            user_id,
            auth_session_id,
            encoding,
            replay_size=replay_size,
            replay_age_s=replay_age_s,
            intents=intents,
        )
        self.held = held

    def deliver(
        self,
        event: Event,
        now: float | None = None,
        write_now: bool = False,
        *,
        replay: bool = True,
    ) -> bytes | None:
        # Numbered and kept in memory by Session (with no sink to pass it to), then handed on
        # here.
        sink, self.sink = self.sink, None
        try:
            frame = super().deliver(event, now, write_now, replay=replay)
        finally:
            self.sink = sink
        if frame is None:
            return None
        if not replay:  # READY: no client resumes from before it, nothing to wait for
            if sink is not None and not sink.send_frame(frame, write_now):
                self._cut(sink)
            return frame
        self.held.log.append(self.id, self.seq, frame)
        if sink is not None and not self.held.hold(self, sink, frame):
            self._cut(sink)
        return frame

    def _cut(self, sink: Sink) -> None:
        if self.sink is sink:
            self.sink, self.detached_at = None, trio.current_time()
            sink.slow_consumer()
