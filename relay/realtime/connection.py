"""One accepted WebSocket: a reader that delivers whole messages, and a bounded outbox of
pre-built frames written with as few writes as possible.

Outgoing frames are `bytes` built once by the caller (`relay.protocol.wsframe`), so one event
can be queued unchanged to many connections. Writing is a hybrid (DESIGN §1): a connection with
nothing in flight is written at once, a connection with a backlog gets one write for many
frames. Queued frames of a plain TCP connection are written by the listener's `Flusher` at the
next scheduler pass: one task that writes every connection's pending frames with one
non-blocking write each, so a fan-out to a thousand connections wakes one task, not a thousand.
A caller with nothing more to queue before it yields (the last event of a fan-out) can have
them written at once instead (`send_nowait(frame, write_now=True)`).
What a socket does not take at once (its buffer is full: a backlog) goes to the connection's own
writer task, started on demand, which waits for the socket and writes everything queued by then
in one `send_all`; it ends when the outbox is empty. TLS connections always use the writer
task. Incoming bytes go through `relay.protocol.wsread` (no extension is ever negotiated),
which reassembles messages up to `max_message_bytes` (over it: 1009) and refuses protocol
errors (RSV bits, bad opcodes, unmasked frames: 1002; invalid UTF-8: 1007); pings are answered
here.

Overflow policy (slow consumer): `send_nowait` never blocks. It returns False when the outbox
is full or the connection is closing, drops the frame and counts it; the caller decides what
that means, usually `close_nowait(code)` with its own slow-consumer code (SLOW_CONSUMER, 1008,
unless the endpoint has a better one). `send` waits for room instead: backpressure for an
endpoint that owns its lane (the echo endpoint). Pongs go through the outbox too; one that does
not fit is dropped and counted. Incoming, at most INBOX_MESSAGES wait for `receive`; then the
reader stops reading and TCP pushes back on the client.

Closing: `close_nowait(code, reason)` closes the outbox; the writer writes what was queued
before it, then the close frame, and the reader waits for the peer's close. All of that gets
`close_timeout_s` in total; after that the TCP connection is dropped, so a peer that stopped
reading cannot hold a closing connection open. When the reader ends the conversation (the
peer's close, answered with its code; a protocol error; a message over the limit) `receive`
raises ConnectionClosed after the messages already delivered, and the close frame goes out
when the endpoint has closed or returned, or after `close_timeout_s`: replies to messages that
came just before the close are not lost (RFC 6455 §5.5.1 allows finishing a send first).

Resource handling: `run` reads in the caller's task and owns the writer task (when there is
one) in its nursery, and the stream. It returns when the close handshake is done, when the
peer is gone, or when the close timeout runs out; then the stream is closed, `receive`
raises ConnectionClosed once the messages already delivered are read, and sends fail. If
`run` is cancelled from outside (shutdown) while the connection is open, it sends 1001 and
waits up to GOODBYE_S for the peer's close, shielded, before closing the stream.

Error handling: transport errors (reset, broken pipe, TLS errors) mean the peer is gone: `run`
returns, close code 1006. Protocol errors close with the code the frame reader gives. Nothing here
raises to the caller of `run` except bugs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import trio
from wsproto.frame_protocol import CloseReason

from relay.protocol import wsframe
from relay.protocol.wsread import Close, FrameReader, Ping

log = logging.getLogger("relay.realtime")

OUTBOX_FRAMES = 256
MAX_MESSAGE_BYTES = 64 * 1024
CLOSE_TIMEOUT_S = 2.0  # flush what is queued, send the close frame, get the peer's close
GOODBYE_S = 1.0  # on shutdown: send 1001 and wait this long for the peer's close
SLOW_CONSUMER = 1008  # default close code for a full outbox; endpoints may use their own
RECEIVE_BYTES = 64 * 1024
MAX_WRITE_BYTES = 1024 * 1024  # one send_all takes queued frames up to about this much
# Delivered messages not yet taken by receive() (at most 4 x MAX_MESSAGE_BYTES); then TCP pushes
# back. More than one lets a read that brought several messages hand them all over at once.
INBOX_MESSAGES = 4


class ConnectionClosed(Exception):
    """The connection is closing or closed; `code` and `reason` are those of the close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """Counters since the connection opened; `writes < frames_written` means coalescing."""

    frames_queued: int  # frames accepted into the outbox (data, pongs)
    frames_dropped: int  # frames send_nowait refused: outbox full or connection closing
    frames_written: int
    writes: int  # stream.send_all calls for those frames
    bytes_written: int
    messages_received: int
    outbox_used: int
    outbox_size: int


class Flusher:
    """Writes the queued frames of many connections in one pass of one task.

    A plain TCP connection that queues a frame while it has no writer task registers here
    (once until flushed); the flusher runs at the next scheduler pass, after the task that
    queued the frames yields, and writes each registered connection's outbox with one
    non-blocking `os.write`. A fan-out thus costs one task switch and one system call per
    connection, however many frames each got. Run `run` in the listener's nursery.
    """

    __slots__ = ("_dirty", "_task")

    def __init__(self) -> None:
        self._dirty: list[Connection] = []
        self._task: trio.lowlevel.Task | None = None  # parked, waiting for work

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._dirty:
                self._task = trio.lowlevel.current_task()

                def abort(_: object) -> trio.lowlevel.Abort:
                    self._task = None
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
            dirty, self._dirty = self._dirty, []
            for conn in dirty:
                conn._flush()
            await trio.lowlevel.cancel_shielded_checkpoint()


class Connection:
    """An open WebSocket after the handshake. The listener runs `run()` beside the endpoint."""

    __slots__ = (
        "_await_peer_close",
        "_bytes_written",
        "_close_deadline",
        "_close_frame",
        "_close_sent",
        "_close_started",
        "_dirty",
        "_done",
        "_ended",
        "_fd",
        "_flusher",
        "_frames_dropped",
        "_frames_queued",
        "_frames_written",
        "_head_frames",
        "_inbox",
        "_inbox_closed",
        "_messages_received",
        "_nursery",
        "_outbox_closed",
        "_outbox_frames",
        "_partial",
        "_pending_close",
        "_queue",
        "_read_full",
        "_reader",
        "_reader_parked",
        "_received",
        "_receiver",
        "_room",
        "_scope",
        "_stream",
        "_stream_failed",
        "_writer_running",
        "_writes",
        "_writing",
        "close_code",
        "close_reason",
        "close_timeout_s",
        "max_message_bytes",
        "user",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        received: bytes = b"",
        *,
        outbox_frames: int = OUTBOX_FRAMES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
        flusher: Flusher | None = None,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.close_timeout_s = close_timeout_s
        self._stream = stream
        self._reader = FrameReader(max_message_bytes)
        self._received = received  # what the client sent right after its handshake
        # Direct writes need the socket itself; TLS streams always go through the writer task.
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._flusher = flusher if self._fd >= 0 else None
        self._outbox_frames = outbox_frames
        # Frames not yet written, oldest first. A list, not a deque: an idle connection's empty
        # list is 56 bytes, a deque's first block 600; the queue is taken whole or nearly.
        self._queue: list[bytes] = []
        self._head_frames = 0  # >0: the queue's head is what is left of that many frames
        self._outbox_closed = False
        self._dirty = False  # registered with the flusher
        self._writer_running = False
        self._room: trio.Event | None = None  # `send` waits on it while the outbox is full
        self._nursery: trio.Nursery | None = None
        # Delivered messages not yet taken by receive(), and who waits on either side. Not a
        # memory channel: with its state, two ends and their waiters that is ~1.5 KB a socket.
        self._inbox: list[str | bytes] = []
        self._inbox_closed = False
        self._receiver: trio.lowlevel.Task | None = None  # parked in receive()
        self._reader_parked: trio.lowlevel.Task | None = None  # parked: the inbox is full
        self._read_full = False  # the last read filled its buffer: more is likely waiting
        self._scope: trio.CancelScope | None = None
        self._close_frame: bytes | None = None  # written after the outbox drains
        self._close_sent = False
        self._close_deadline = float("inf")
        self._await_peer_close = True  # False after a protocol error: the parser is dead
        self._writing = False  # a send_all is in progress (the stream is mid-frame)
        self._partial = False  # a direct write left part of a frame in the queue
        self._stream_failed = False
        self._ended = False
        self._done: trio.Event | None = None  # made by close() callers waiting for the end
        self._close_started: trio.Event | None = None  # made by the reader to wait for close_nowait
        self._pending_close: tuple[int, str] | None = None  # decided by the reader, not yet sent
        self.close_code: int | None = None  # the handshake's code: the peer's if it closed first
        self.close_reason = ""
        # The user id the endpoint found the peer is, for the log line (the session's own int:
        # no new object per connection).
        self.user: int | None = None
        # Statistics.
        self._frames_queued = 0
        self._frames_dropped = 0
        self._frames_written = 0
        self._writes = 0
        self._bytes_written = 0
        self._messages_received = 0

    # -- sending ---------------------------------------------------------------------------------

    def send_nowait(self, frame: bytes, write_now: bool = False) -> bool:
        """Queue one pre-built frame without waiting.

        `write_now`: the caller has nothing more for this connection before it yields (the
        last event of a fan-out), so a plain TCP connection writes its outbox at once instead
        of at the flusher's pass; the first receivers of a fan-out then need not wait for the
        whole delivery loop.

        Returns False, dropping and counting the frame, if the outbox is full (a slow consumer:
        the caller applies its policy, e.g. `close_nowait(SLOW_CONSUMER)`) or the connection is
        closing or closed.
        """
        if self._outbox_closed or len(self._queue) >= self._outbox_frames:
            self._frames_dropped += 1
            return False
        self._queue.append(frame)
        self._frames_queued += 1
        if write_now and self._flusher is not None and not self._writer_running:
            self._flush()  # if it was marked too, the flusher's turn finds nothing left
        elif not self._writer_running and not self._dirty:
            if self._flusher is not None:
                self._dirty = True
                self._flusher.mark(self)
            else:
                self._start_writer()
        return True

    async def wait_for_room(self) -> None:
        """Return once the outbox can take a frame, or is closed (a cancellation point)."""
        await trio.lowlevel.checkpoint()
        while not self._outbox_closed and len(self._queue) >= self._outbox_frames:
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()

    async def send(self, frame: bytes) -> None:
        """Queue one pre-built frame, waiting while the outbox is full.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        await self.wait_for_room()
        if not self.send_nowait(frame):
            self._frames_dropped -= 1  # not a drop: the caller is told
            raise self._closed_error()

    # -- receiving -------------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next complete message: `str` for text, `bytes` for binary. One task at a time.

        A cancellation point; it yields only when it has to wait (at most INBOX_MESSAGES are
        taken in a row without one, since the reader task refills the inbox).

        Raises:
            ConnectionClosed: the connection closed and every message delivered was read.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._inbox:
            if self._inbox_closed:
                raise self._closed_error()
            if self._receiver is not None:
                raise trio.BusyResourceError("another task is already receiving")
            self._receiver = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_receive)
        message = self._inbox.pop(0)
        if self._reader_parked is not None:
            task, self._reader_parked = self._reader_parked, None
            trio.lowlevel.reschedule(task)
        return message

    def _abort_receive(self, _: object) -> trio.lowlevel.Abort:
        self._receiver = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _abort_deliver(self, _: object) -> trio.lowlevel.Abort:
        self._reader_parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def _deliver(self, message: str | bytes) -> None:
        """The reader's half: wait while the inbox is full; after the close, drop."""
        while len(self._inbox) >= INBOX_MESSAGES and not self._inbox_closed:
            self._reader_parked = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_deliver)
        if self._inbox_closed:
            return  # after our close, messages that still arrive are dropped
        self._inbox.append(message)
        if self._receiver is not None:
            task, self._receiver = self._receiver, None
            trio.lowlevel.reschedule(task)

    def _close_inbox(self) -> None:
        """receive() returns what was delivered, then raises; a waiting reader drops its message."""
        self._inbox_closed = True
        for task in (self._receiver, self._reader_parked):
            if task is not None:
                trio.lowlevel.reschedule(task)
        self._receiver = self._reader_parked = None

    # -- closing ---------------------------------------------------------------------------------

    def close_nowait(self, code: int | None = None, reason: str = "") -> None:
        """Start the close handshake; idempotent, never blocks. The frames queued so far are
        written first (within `close_timeout_s`), then the close frame.

        `code=None` answers a close the reader already decided on (the peer's own code, or a
        protocol error's), and is 1000 otherwise.
        """
        if self._close_frame is not None or self._ended:
            return
        if code is None:
            code, reason = self._pending_close or (CloseReason.NORMAL_CLOSURE, reason)
        self._close_frame = _close_frame(code, reason)
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._outbox_closed = True  # the writer drains what is queued, then writes the close
        self._wake_senders()
        self._close_inbox()
        if self._close_started is not None:
            self._close_started.set()
        self._close_deadline = trio.current_time() + self.close_timeout_s
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, self._close_deadline)
        self._start_writer()

    async def close(self, code: int | None = None, reason: str = "") -> None:
        """Close (see `close_nowait`) and wait until the connection has ended."""
        self.close_nowait(code, reason)
        if not self._ended:
            if self._done is None:
                self._done = trio.Event()
            await self._done.wait()

    @property
    def closing(self) -> bool:
        """A close was started (by either side) or the connection has ended."""
        return self._close_frame is not None or self._ended

    def counters(self) -> tuple[int, int, int, int, int, int]:
        """Frames written, bytes written, frames dropped, messages received, frames queued and
        the outbox's size: `statistics()` without a Struct, for /metrics, which reads every
        open connection at each scrape."""
        return (
            self._frames_written,
            self._bytes_written,
            self._frames_dropped,
            self._messages_received,
            len(self._queue),
            self._outbox_frames,
        )

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(
            frames_queued=self._frames_queued,
            frames_dropped=self._frames_dropped,
            frames_written=self._frames_written,
            writes=self._writes,
            bytes_written=self._bytes_written,
            messages_received=self._messages_received,
            outbox_used=len(self._queue),
            outbox_size=self._outbox_frames,
        )

    # -- the tasks -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read (in this task) and write until the connection ends; then close the stream."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._scope = nursery.cancel_scope
                nursery.cancel_scope.deadline = self._close_deadline
                if self._queue or self._close_frame is not None:
                    self._start_writer()  # frames queued before run
                task_status.started()
                await self._read_loop()
        finally:
            self._scope = self._nursery = None
            self._fd = -1  # before the stream closes: its number may be reused at once
            if (
                self._close_frame is None
                and not self._stream_failed
                and not self._writing
                and not self._partial
            ):
                await self._goodbye()
            if self.close_code is None:
                self.close_code = CloseReason.ABNORMAL_CLOSURE
            self._outbox_closed = True  # frames still queued are dropped; later sends fail
            self._queue.clear()
            self._wake_senders()
            self._close_inbox()
            await trio.aclose_forcefully(self._stream)
            self._ended = True
            if self._done is not None:
                self._done.set()

    async def _read_loop(self) -> None:
        """Read until the peer closes, breaks the protocol or sends too much; then answer.

        The answer waits until the endpoint has dealt with the messages it was given (it
        closes or returns, see the listener) or `close_timeout_s`, whichever is first, so a
        reply to a message sent just before the peer's close still goes out. RFC 6455 §5.5.1
        lets an endpoint finish sending before it answers a close.
        """
        try:
            if not await self._read_messages():
                return  # we closed first and the peer answered: the handshake is complete
            self._close_inbox()  # the endpoint sees the end after what was delivered
            if self._close_frame is None:  # wait for the endpoint's close (or return)
                self._close_started = trio.Event()
                with trio.move_on_after(self.close_timeout_s):
                    await self._close_started.wait()
            self.close_nowait()
            if self._await_peer_close and not self._reader.stopped:
                await self._read_messages()  # discards until the peer's close (or EOF)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._peer_gone()

    async def _read_messages(self) -> bool:
        """Deliver messages and answer pings until a close. True: this side must answer it."""
        receive = self._reader.receive
        data, self._received = self._received, b""
        while True:
            for event in receive(data):
                if isinstance(event, str | bytes):
                    if self._close_frame is None:  # after our close, messages are dropped
                        self._messages_received += 1
                        await self._deliver(event)
                elif isinstance(event, Ping):
                    if self._close_frame is None:
                        self.send_nowait(wsframe.pong_frame(event.payload))
                elif isinstance(event, Close):
                    if self._close_frame is not None:
                        return False  # the peer answered our close
                    self._decide_close(event.code, event.reason)
                    return True
                elif event.fatal:  # a protocol error: nothing more can be read
                    log.debug("protocol error", extra={"code": event.code, "reason": event.reason})
                    self._await_peer_close = False
                    self._decide_close(event.code, event.reason)
                    return self._close_frame is None
                elif self._close_frame is None:  # too big: answer; read on for the peer's close
                    self._decide_close(event.code, event.reason)
                    return True
            data = await self._receive_some()
            if not data:
                raise trio.BrokenResourceError("the peer closed TCP without a close frame")

    async def _receive_some(self) -> bytes:
        """The next bytes from the peer (empty at EOF). On a plain socket: one yield (a wait
        for readability, or a checkpoint if the last read filled its buffer), then one
        non-blocking `os.read`. The stream's `receive_some` adds a failed read, a second
        scheduler pass and its wrappers to every read (~8% of the gateway's time per message
        sent over op 12, py-spy). Every read still follows a yield, so a flooding peer cannot
        keep the loop to itself. TLS goes through the stream."""
        fd = self._fd
        if fd < 0:
            return bytes(await self._stream.receive_some(RECEIVE_BYTES))
        assert isinstance(self._stream, trio.SocketStream)
        sock = self._stream.socket
        if self._read_full:
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.wait_readable(sock)
        while True:
            try:
                data = os.read(fd, RECEIVE_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as e:  # reset: what a stream reports as broken
                raise trio.BrokenResourceError("the connection was reset") from e
            self._read_full = len(data) == RECEIVE_BYTES
            return data

    def _decide_close(self, code: int, reason: str) -> None:
        """The reader's close: what receive() reports now and the code we answer with."""
        self._pending_close = (code, reason)
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def _peer_gone(self) -> None:
        self._stream_failed = True
        self._outbox_closed = True  # nothing more can be written: sends fail from now on
        self._queue.clear()
        self._wake_senders()
        if self.close_code is None:
            self.close_code = CloseReason.ABNORMAL_CLOSURE
        if self._scope is not None:
            self._scope.cancel()

    def _start_writer(self) -> None:
        if self._writer_running or self._nursery is None or self._stream_failed:
            return
        try:
            self._nursery.start_soon(self._write_loop)
        except RuntimeError:  # run's nursery is closing: run() ends and drops the queue
            return
        self._writer_running = True

    def _wake_senders(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def _take(self) -> tuple[bytes, int]:
        """Everything queued (up to about MAX_WRITE_BYTES) as one buffer, and its frame count."""
        queue = self._queue
        frames = len(queue) - 1 + (self._head_frames or 1)
        self._head_frames = 0
        taken = size = 0
        while taken < len(queue) and size < MAX_WRITE_BYTES:
            size += len(queue[taken])
            taken += 1
        data = queue[0] if taken == 1 else b"".join(queue[:taken])
        frames -= len(queue) - taken
        del queue[:taken]  # the same list stays: a new one per write is work for the GC
        return data, frames

    def _flush(self) -> None:
        """The flusher's turn: write what is queued without waiting; a backlog goes to the
        writer task."""
        self._dirty = False
        queue = self._queue
        if self._writer_running or not queue or self._fd < 0:
            return
        if len(queue) == 1 and not self._head_frames:  # the usual case: one frame
            data, frames = queue.pop(), 1
        else:
            data, frames = self._take()
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:  # the socket's buffer is full: a backlog, for the writer
            written = 0
        except OSError:  # reset, broken pipe: the peer is gone
            self._peer_gone()
            return
        if written:
            self._writes += 1
            self._bytes_written += written
        if written == len(data):
            self._frames_written += frames
            if self._queue:
                self._start_writer()  # more than one write's worth was queued
        else:
            self._queue.insert(0, data[written:])
            self._head_frames = frames
            self._partial = written > 0
            self._start_writer()
        if self._room is not None:
            self._wake_senders()

    async def _write_loop(self) -> None:
        """Write everything queued, one send_all per batch; after the close, the close frame.
        Ends when there is nothing left to write."""
        try:
            while True:
                if self._queue:
                    data, frames = self._take()
                    self._wake_senders()
                    await self._write(data)
                    self._frames_written += frames
                    self._partial = False
                elif self._close_frame is not None and not self._close_sent:
                    self._close_sent = True
                    if self._close_frame:
                        await self._write(self._close_frame)
                    if not self._await_peer_close and self._scope is not None:
                        self._scope.cancel()
                else:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._peer_gone()
        finally:
            self._writer_running = False

    async def _write(self, data: bytes) -> None:
        self._writing = True
        await self._stream.send_all(data)
        self._writing = False
        self._writes += 1
        self._bytes_written += len(data)

    async def _goodbye(self) -> None:
        """Cancelled while open (shutdown): send 1001 and wait briefly for the peer's close."""
        code, reason = self._pending_close or (CloseReason.GOING_AWAY, "server shutting down")
        with trio.move_on_after(GOODBYE_S, shield=True):
            try:
                await self._stream.send_all(_close_frame(code, reason))
                if self.close_code is None:
                    self.close_code, self.close_reason = code, reason
                reader = self._reader
                while self._await_peer_close and not reader.stopped:
                    data = await self._stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        return
                    # Messages after our close are dropped; the peer's close (or a protocol
                    # error) stops the reader and ends the wait.
                    reader.receive(bytes(data))  # bytes(bytes) is no copy
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code or CloseReason.ABNORMAL_CLOSURE, self.close_reason)


def _close_frame(code: int, reason: str) -> bytes:
    """Our close frame; a peer's close without a code (1005) is answered with none."""
    return wsframe.close_frame(None if code == CloseReason.NO_STATUS_RCVD else code, reason)
