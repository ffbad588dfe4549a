"""Gateway sessions' replay buffers in Redis Streams, so a client whose node died can RESUME on
any other node and get exactly what it missed, or INVALID_SESSION when that is not possible.

Per session, two keys, both expiring `window_s` after their last write (refreshed while the
session is open here):
- `<prefix>replay:<session id>`: a stream of the session's frames, each under the stream id
  `0-<seq>` (its seq is its address), trimmed with `XADD ... MAXLEN ~ size`;
- `<prefix>session:<session id>`: the session's `SessionState` (msgpack), whose `seq` is the
  last seq written to the stream.

`ReplayLog.append` never blocks and never waits for Redis: it queues the frame; the writer task
sends everything queued in one script call per batch (every session's frames and state).
`flushed()` waits until everything appended so far is in Redis: a gateway that awaits it before
writing a batch of frames to its sockets never lets a client see an event that a RESUME
elsewhere would miss (a kill -9 cannot leave the two out of step). `resume(session_id, seq)`
gives the state and every frame after `seq` only if the stream holds each of them, contiguously
up to the state's seq; otherwise None (trimmed, expired, ended, dropped on overflow, or a seq
from the future): INVALID_SESSION.

A session is written by one node at a time: the node that takes it over on a RESUME calls
`open` with the state it read, and continues from its seq; the node it left has ended it or
died (the gateway holds a lease `session:<id>` for that, relay.cluster.lease).

Without a broker nothing here runs: the single process keeps its replay buffers in memory
(relay.gateway.session) and pays nothing for this.

Resource handling: `run()` owns the writer; the queue of appends is bounded (`max_pending`
frames). When it is full, the session whose append did not fit is *dropped* here: its keys are
deleted at the next write and nothing more of it is written, so it can no longer be resumed on
another node (it still can on its own, from memory); never a stream with a hole in it.

Error handling: a Redis error in a write drops every session of that batch the same way (a
frame that may not have been written leaves a possible gap) and is logged.
"""

from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

import msgspec
import trio

from relay.cluster.topiclog import Mark

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import coredis

log = logging.getLogger("relay.cluster")

BATCH = 2048  # appends per write (one script call)

# One write: ARGV[1] the streams' size, ARGV[2] the keys' ttl (ms), ARGV[3] the key prefix,
# ARGV[4] the batch packed per session (`_pack`): its id, its state, then each (seq, frame). One
# binary argument rather than a few per frame: per argument, coredis costs the node more than
# Redis's whole work on it. Keys are named inside (one Redis, as the broker's pub/sub needs).
_WRITE = """
local size, ttl, prefix, blob = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local pos, sessions = 1, 0
while pos <= #blob do
  local id_len, state_len, n = struct.unpack('<I2I4I4', blob, pos)
  pos = pos + 10
  local id = string.sub(blob, pos, pos + id_len - 1)
  local state = string.sub(blob, pos + id_len, pos + id_len + state_len - 1)
  pos = pos + id_len + state_len
  local stream = prefix .. 'replay:' .. id
  for _ = 1, n do
    local seq, frame_len = struct.unpack('<I4I4', blob, pos)
    local frame = string.sub(blob, pos + 8, pos + 7 + frame_len)
    pos = pos + 8 + frame_len
    redis.call('XADD', stream, 'MAXLEN', '~', size, '0-' .. seq, 'f', frame)
  end
  redis.call('SET', prefix .. 'session:' .. id, state, 'PX', ttl)
  redis.call('PEXPIRE', stream, ttl)
  sessions = sessions + 1
end
return sessions
"""
_SESSION_HEAD = struct.Struct("<HII")  # id length, state length, frame count
_FRAME_HEAD = struct.Struct("<II")  # seq, frame length
REDIS_TIMEOUT_S = 2.0  # a write that takes longer fails (its sessions are dropped)


class SessionState(msgspec.Struct, kw_only=True):
    """What another node needs to take a session over (and the last seq written)."""

    session_id: str
    user_id: int
    auth_session_id: int
    encoding: str
    intents: int
    seq: int  # the last seq whose frame is in the stream (READY, seq 1, is never kept)
    node: str  # the node that wrote it last
    # Per logged topic of the session (relay.cluster.topiclog): its frames up to `seq` hold
    # every event of the topic up to the mark's offset, and those of the mark's `ahead`.
    marks: dict[str, Mark] = {}


class Resumed(msgspec.Struct, frozen=True):
    state: SessionState
    frames: list[bytes]  # the frames after the client's seq, in order


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(SessionState)


class ReplayLog:
    """This node's writer of replay buffers, and the reader for a RESUME (module doc)."""

    def __init__(
        self,
        redis: coredis.Redis[bytes],
        node: str,
        *,
        size: int,
        window_s: float,
        prefix: str = "relay:",
        max_pending: int = 65536,
    ) -> None:
        self.redis = redis
        self.node = node
        self.size = size
        self.window_ms = round(window_s * 1000)
        self.prefix = prefix
        self.max_pending = max_pending
        self._states: dict[str, SessionState] = {}  # open on this node
        self._pending: list[tuple[str, int, bytes]] = []
        self._gone: set[str] = set()  # ended or dropped: keys to delete at the next write
        self._appended = 0  # appends accepted so far
        self._written = 0  # of which in Redis (or dropped)
        self._wake = trio.Event()
        self._progress = trio.Event()  # set after each write, then replaced
        self.dropped = 0  # sessions dropped for overflow or a failed write
        self._write_script = redis.register_script(_WRITE)
        # The marks of a session's logged topics now (relay.cluster.topiclog), taken when a
        # round of writes is packed: its frames queued by then hold everything up to them.
        self.marks_of: Callable[[str], dict[str, Mark]] | None = None

    def stream_key(self, session_id: str) -> str:
        return f"{self.prefix}replay:{session_id}"

    def state_key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def open(self, state: SessionState) -> None:
        """A session starts (IDENTIFY) or is taken over (a RESUME here) on this node: its
        later appends continue from `state.seq`."""
        self._gone.discard(state.session_id)
        self._states[state.session_id] = msgspec.structs.replace(state, node=self.node)
        self._pending.append((state.session_id, state.seq, b""))  # writes the state itself
        self._appended += 1
        self._wake.set()

    def append(self, session_id: str, seq: int, frame: bytes) -> None:
        """Queue the session's frame of `seq` (seqs strictly increasing). Never blocks."""
        state = self._states.get(session_id)
        if state is None:
            return  # not open here, or dropped: it is resumable on its own node only
        if len(self._pending) >= self.max_pending:
            self._drop([session_id])
            return
        self._pending.append((session_id, seq, frame))
        self._appended += 1
        self._wake.set()

    def touch(self, session_id: str) -> None:
        """Write the session's state again (its marks changed), without a frame."""
        if session_id in self._states:
            self._pending.append((session_id, -1, b""))
            self._appended += 1
            self._wake.set()

    def end(self, session_id: str) -> None:
        """The session is over (logout, its resume window passed): delete its keys."""
        if self._states.pop(session_id, None) is not None:
            self._gone.add(session_id)
            # A no-op entry, so that `flushed()` also waits for the keys' deletion (the
            # deletion goes out with the batch it is in, or an earlier one).
            self._pending.append(("", 0, b""))
            self._appended += 1
            self._wake.set()

    def leave(self, session_id: str) -> None:
        """Stop writing the session and keep its keys (another node takes it over, or this
        one stops): a RESUME elsewhere finds what was written so far."""
        self._states.pop(session_id, None)

    def _drop(self, session_ids: Iterable[str]) -> None:
        for session_id in session_ids:
            if self._states.pop(session_id, None) is not None:
                self.dropped += 1
                self._gone.add(session_id)
                log.warning("session no longer resumable elsewhere", extra={"session": session_id})
        self._wake.set()

    async def flushed(self) -> None:
        """Wait until every frame appended (and session ended) so far is in Redis, or its
        session dropped."""
        target = self._appended
        while self._written < target:
            await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        refresh_every = self.window_ms / 3000
        next_refresh = trio.current_time() + refresh_every
        while True:
            with trio.move_on_at(next_refresh):
                await self._wake.wait()
            self._wake = trio.Event()
            if trio.current_time() >= next_refresh:
                await self._refresh()
                next_refresh = trio.current_time() + refresh_every
            while self._pending or self._gone:
                # A round: everything queued so far, its sessions' states (and marks) taken
                # now, written in calls of whole sessions (a state never names frames that a
                # later call would write).
                batch, self._pending = self._pending, []
                gone, self._gone = self._gone, set()
                frames, states = self._snapshot(batch)
                written = True
                chunks = self._chunks(frames)
                for i, chunk in enumerate(chunks):
                    if not await self._write(chunk, frames, states, gone):
                        written = False
                        self._drop([s for rest in chunks[i + 1 :] for s in rest])
                        break
                    gone = set()
                if not frames and gone:
                    written = await self._write([], frames, states, gone)
                self._written += len(batch)
                progress, self._progress = self._progress, trio.Event()
                progress.set()
                if not written:
                    # Keys still to delete wait for the next write or refresh: no busy loop
                    # against a Redis that is down.
                    self._gone |= gone
                    break

    def _snapshot(
        self, batch: list[tuple[str, int, bytes]]
    ) -> tuple[dict[str, list[tuple[int, bytes]]], dict[str, bytes]]:
        """Per session of the batch (still open here): its frames, and its state as of them,
        encoded now with its marks."""
        frames: dict[str, list[tuple[int, bytes]]] = {}
        for session_id, seq, frame in batch:
            state = self._states.get(session_id)
            if state is None:
                continue  # dropped or ended after it was queued
            mine = frames.setdefault(session_id, [])
            if frame:
                mine.append((seq, frame))
                state.seq = seq
            elif seq >= 0:  # `open`: the seq it continues from
                state.seq = seq
        states: dict[str, bytes] = {}
        for session_id in frames:
            state = self._states[session_id]
            if self.marks_of is not None:
                state.marks = self.marks_of(session_id)
            states[session_id] = _state_encoder.encode(state)
        return frames, states

    @staticmethod
    def _chunks(frames: dict[str, list[tuple[int, bytes]]]) -> list[list[str]]:
        """The sessions in groups of about BATCH frames, a session's frames in one group."""
        chunks: list[list[str]] = [[]]
        size = 0
        for session_id, mine in frames.items():
            if size and size + len(mine) > BATCH:
                chunks.append([])
                size = 0
            chunks[-1].append(session_id)
            size += len(mine) + 1
        return [c for c in chunks if c]

    async def _write(
        self,
        chunk: list[str],
        frames: dict[str, list[tuple[int, bytes]]],
        states: dict[str, bytes],
        gone: set[str],
    ) -> bool:
        """One pipeline; False if it failed (the chunk's sessions are dropped)."""
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                await self._send(chunk, frames, states, gone)
        except Exception:
            log.error("replay buffers not written", exc_info=True)
            self._drop(chunk)
            return False
        return True

    async def _send(
        self,
        chunk: list[str],
        frames: dict[str, list[tuple[int, bytes]]],
        states: dict[str, bytes],
        gone: set[str],
    ) -> None:
        """The chunk's frames, its sessions' states, the deletions: one round trip, and one
        script call for all the frames (a command per frame cost the node ~50-100 µs each in
        coredis: 10k deliveries/s saturated it)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if gone:
                pipe.delete([k for s in gone for k in (self.stream_key(s), self.state_key(s))])
            if chunk:
                blob = self._pack(chunk, frames, states)
                args: list[str | int | bytes] = [self.size, self.window_ms, self.prefix, blob]
                self._write_script(keys=[], args=args, client=pipe)

    @staticmethod
    def _pack(
        chunk: list[str], frames: dict[str, list[tuple[int, bytes]]], states: dict[str, bytes]
    ) -> bytes:
        """The chunk as `_WRITE` reads it: per session, its head, id, state and frames."""
        parts: list[bytes] = []
        session_head, frame_head = _SESSION_HEAD.pack, _FRAME_HEAD.pack
        for session_id in chunk:
            encoded, mine = states[session_id], frames[session_id]
            name = session_id.encode()
            parts += (session_head(len(name), len(encoded), len(mine)), name, encoded)
            for frame_seq, frame in mine:
                parts += (frame_head(frame_seq, len(frame)), frame)
        return b"".join(parts)

    async def _refresh(self) -> None:
        """Keep the keys of open sessions alive (an idle session writes nothing)."""
        if not self._states:
            return
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                await self._send_refresh()
        except Exception:  # the next refresh tries again; the window is three times longer
            log.warning("replay buffers not refreshed", exc_info=True)

    async def _send_refresh(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_id in self._states:
                pipe.pexpire(self.state_key(session_id), self.window_ms)
                pipe.pexpire(self.stream_key(session_id), self.window_ms)

    async def resume(self, session_id: str, seq: int) -> Resumed | None:
        """The session's state and its frames after `seq`, or None if some are gone.

        Raises trio.TooSlowError (no answer in REDIS_TIMEOUT_S) or a Redis error: the
        gateway answers INVALID_SESSION for those too."""
        with trio.fail_after(REDIS_TIMEOUT_S):
            async with self.redis.pipeline(transaction=False) as pipe:
                got_state = pipe.get(self.state_key(session_id))
                got_entries = pipe.xrange(self.stream_key(session_id), f"(0-{seq}", "+")
            data, entries = await got_state, await got_entries
        if data is None:
            return None
        state = _state_decoder.decode(data)
        if seq > state.seq or seq < 0:
            return None
        frames: list[bytes] = []
        expected = seq + 1
        for entry in entries:
            identifier = entry.identifier
            if isinstance(identifier, bytes):
                identifier = identifier.decode()
            stored = entry.field_values.get(b"f")
            if int(identifier.rpartition("-")[2]) != expected or not isinstance(stored, bytes):
                return None  # trimmed past the client's seq
            frames.append(stored)
            expected += 1
        if expected != state.seq + 1:
            return None
        return Resumed(state, frames)
