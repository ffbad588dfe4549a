"""The relayd-compatible TCP listener: one `TcpPeer` (reader + writer) per connection.

The reader takes up to RECEIVE_BYTES per read, feeds the incremental parser, applies every
complete frame (hub.py: each transfer is queued for its receiver) and then flushes: each
receiver whose writer is idle gets what this read brought it written at once, in one `writev`,
by the reader itself (`write_queued`); a receiver whose writer is busy has its writer woken.
The writer takes everything queued in its connection's outbox and writes it with one `writev`.
So an idle receiver costs no task switch, and a busy one gets one write for many frames.
Nothing is ever sent except forwarded transfer frames; every close is silent (relayd's
behaviour), the reason is only counted and logged at debug level.

The socket calls are made directly on the file descriptor (`os.read`, `os.write`,
`os.writev`; the socket is non-blocking), waiting with `trio.lowlevel.wait_readable` /
`wait_writable` only when a call would block, and with one checkpoint per read or write, as
trio's own socket methods do: this is their loop without their per-call wrappers (a profile
at 64 KiB payloads put a quarter of the process's time in them and in the copies below).
Frames are forwarded as views of the chunk they arrived in (relayd.py) and written with
`writev`, so a payload byte is copied only by the kernel, into and out of the process (a frame
cut between two reads is joined once).

Resource handling: `serve_byte_relay` owns the listening sockets; trio.serve_listeners runs
one task per accepted connection. Each connection gets one nursery holding its writer, with
the reader in the connection's own task; when either ends, or `Peer.close` is called (a newer
login, a slow consumer), the nursery is cancelled and the socket closed. The socket is closed
only after `Peer.close`, which closes the outbox (and `write_queued` writes nothing for a
closed outbox), so no other connection's reader ever writes to a closed descriptor.
Cancelling `serve_byte_relay` closes the listeners and every connection.

Error handling: malformed input, broken rules, silence over `idle_s`, resets and EOF end only
their connection. A bug in a connection's tasks is logged (logger `relay.byterelay`, with
exc_info) and ends that connection; the listener goes on.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from relay.byterelay.hub import Peer, Why
from relay.protocol.relayd import RUN_BYTES, FrameTooLarge, Parser, RelaydError

if TYPE_CHECKING:
    from relay.byterelay.hub import ByteRelay
    from relay.protocol.relayd import Bytes

log = logging.getLogger("relay.byterelay")

RECEIVE_BYTES = 256 * 1024
WRITE_PIECES = 512  # the most buffers in one writev (Linux takes up to IOV_MAX, 1024)


async def serve_byte_relay(
    relay: ByteRelay,
    host: str | None,
    port: int,
    *,
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve relayd clients until cancelled; reports the bound (host, port)s once listening.

    Port 0 picks a free port.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    addresses = [_address(listener.socket.getsockname()) for listener in listeners]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, partial(_serve_connection, relay), listeners)
        task_status.started(addresses)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


def _address(sockname: Any) -> tuple[str, int]:
    return str(sockname[0]), int(sockname[1])


async def _serve_connection(relay: ByteRelay, stream: trio.SocketStream) -> None:
    """One accepted connection. Never raises (but Cancelled)."""
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        remote = _address(stream.socket.getpeername())
    except OSError:  # already reset by the client
        await trio.aclose_forcefully(stream)
        return
    if not relay.gate.admit(remote[0]):  # over a cap: closed silently, as every close here
        log.debug("relay connection refused: over a cap", extra={"remote": remote})
        await trio.aclose_forcefully(stream)
        return
    try:
        await TcpPeer(relay, stream, remote).run()
    except Exception:
        log.error("byte relay connection failed", exc_info=True, extra={"remote": remote})
    finally:
        relay.gate.leave(remote[0])


class TcpPeer(Peer):
    transport = "tcp"

    def __init__(
        self, relay: ByteRelay, stream: trio.SocketStream, remote: tuple[str, int] | None
    ) -> None:
        super().__init__(relay, remote)
        self.stream = stream
        self._fd = stream.socket.fileno()
        self._scope: trio.CancelScope | None = None

    async def run(self) -> None:
        """Read and write until the connection ends; then close the socket."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._write_loop)
                self.close(await self._read_loop())
        finally:
            self.close(Why.ENDED)  # does nothing if the connection already closed
            await trio.aclose_forcefully(self.stream)

    def _stop(self, why: Why) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def write_queued(self) -> None:
        """Write the queue at once while the writer is idle (no task switch); else wake it."""
        outbox = self.outbox
        if not outbox.queued_bytes:
            return
        if not outbox.writing:
            try:
                sent = _write(self._fd, outbox.peek(WRITE_PIECES))
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close(Why.GONE)
                return
            if sent:
                outbox.written(sent)
            if not outbox.queued_bytes:
                return
        outbox.wake()

    async def _read_loop(self) -> Why:
        relay = self.relay
        sock, fd = self.stream.socket, self._fd
        # Runs of transfers to the same receiver are forwarded as one piece (see relayd.py); a
        # run takes at most a quarter of an outbox, so a full one soon has room for the next.
        run_bytes = max(1, min(RUN_BYTES, relay.queue_bytes // 4))
        parser = Parser(relay.max_payload_bytes, coalesce=True, run_bytes=run_bytes)
        next_frame = parser.next_frame
        handle, flush = self.handle, self.flush
        read = os.read
        checkpoint, wait_readable = trio.lowlevel.checkpoint, trio.lowlevel.wait_readable
        with trio.CancelScope() as idle:
            try:
                while True:
                    try:
                        data: bytes | None = read(fd, RECEIVE_BYTES)
                    except BlockingIOError:
                        data = None
                    if data is not None:
                        if not data:
                            return Why.GONE
                        parser.feed(data)
                        while (frame := next_frame()) is not None:
                            stalled = handle(frame)
                            if stalled is not None:
                                flush()
                                await relay.wait_for_room(*stalled)
                        flush()
                        if len(data) == RECEIVE_BYTES:  # more is likely waiting: read on, after
                            await checkpoint()  # the other tasks had their turn
                            continue
                    # Drained: wait for more. The idle deadline covers this wait only, not a
                    # stalled forward.
                    idle.deadline = trio.current_time() + relay.idle_s
                    await wait_readable(sock)
                    idle.deadline = math.inf
            except FrameTooLarge as e:
                log.debug("relay frame too large", extra={"remote": self.remote, "reason": str(e)})
                return Why.TOO_LARGE
            except RelaydError as e:
                log.debug(
                    "relay protocol violation", extra={"remote": self.remote, "reason": str(e)}
                )
                return Why.VIOLATION
            except OSError:  # reset
                return Why.GONE
        return Why.IDLE

    async def _write_loop(self) -> None:
        """Write everything queued at once; release the bytes as the kernel takes them.

        The outbox learns of every byte written: a receiver that reads slowly frees room (and
        counts as progress for the stall timer) as it goes, not only once a whole batch is out.
        """
        outbox = self.outbox
        sock, fd = self.stream.socket, self._fd
        checkpoint = trio.lowlevel.checkpoint
        try:
            while True:
                pending = await outbox.take()
                while pending:
                    try:
                        sent = _write(fd, pending)
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
                        continue
                    outbox.release(sent)
                    pending = _unsent(pending, sent)
                    await checkpoint()
        except trio.EndOfChannel:
            return  # closed: the nursery is being cancelled
        except OSError:
            self.close(Why.GONE)


def _write(fd: int, pieces: list[Bytes]) -> int:
    """One non-blocking write of (the first WRITE_PIECES of) `pieces`; the bytes written.

    Raises:
        BlockingIOError: the socket takes nothing now.
        OSError: the connection is gone.
    """
    if len(pieces) == 1:
        return os.write(fd, pieces[0])
    return os.writev(fd, pieces[:WRITE_PIECES])


def _unsent(pending: list[Bytes], sent: int) -> list[Bytes]:
    """What is left of `pending` after its first `sent` bytes were written."""
    done = 0
    for piece in pending:
        if sent < len(piece):
            break
        sent -= len(piece)
        done += 1
    rest = pending[done:]
    if sent:
        rest[0] = memoryview(rest[0])[sent:]
    return rest
