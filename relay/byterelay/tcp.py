"""The relayd-compatible TCP listener: one `TcpPeer` (reader + writer) per connection.

The reader takes up to RECEIVE_BYTES per read, feeds the incremental parser and applies every
complete frame (hub.py). The writer takes everything queued in the connection's outbox and
writes it with one `send_all`: an idle connection is written at once, a busy one gets one
write for many frames. Nothing is ever sent except forwarded transfer frames; every close is
silent (relayd's behaviour), the reason is only counted and logged at debug level.

Resource handling: `serve_byte_relay` owns the listening sockets; trio.serve_listeners runs
one task per accepted connection. Each connection gets one nursery holding its writer, with
the reader in the connection's own task; when either ends, or `Peer.close` is called (a newer
login, a slow consumer), the nursery is cancelled and the socket closed. Cancelling
`serve_byte_relay` closes the listeners and every connection.

Error handling: malformed input, broken rules, silence over `idle_s`, resets and EOF end only
their connection. A bug in a connection's tasks is logged (logger `relay.byterelay`, with
exc_info) and ends that connection; the listener goes on.
"""

from __future__ import annotations

import logging
import math
import socket
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from relay.byterelay.hub import Peer, Why
from relay.protocol.relayd import FrameTooLarge, Parser, RelaydError

if TYPE_CHECKING:
    from relay.byterelay.hub import ByteRelay

log = logging.getLogger("relay.byterelay")

RECEIVE_BYTES = 256 * 1024


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
    try:
        await TcpPeer(relay, stream, remote).run()
    except Exception:
        log.error("byte relay connection failed", exc_info=True, extra={"remote": remote})


class TcpPeer(Peer):
    transport = "tcp"

    def __init__(
        self, relay: ByteRelay, stream: trio.SocketStream, remote: tuple[str, int] | None
    ) -> None:
        super().__init__(relay, remote)
        self.stream = stream
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

    async def _read_loop(self) -> Why:
        relay = self.relay
        receive_some = self.stream.receive_some
        # Runs of transfers to the same receiver are forwarded as one piece (see relayd.py).
        parser = Parser(relay.max_payload_bytes, coalesce=True)
        next_frame = parser.next_frame
        handle = self.handle
        with trio.CancelScope() as idle:
            try:
                while True:
                    # The idle deadline covers waiting for bytes only, not a stalled forward.
                    idle.deadline = trio.current_time() + relay.idle_s
                    data = await receive_some(RECEIVE_BYTES)
                    idle.deadline = math.inf
                    if not data:
                        return Why.GONE
                    parser.feed(data)
                    while (frame := next_frame()) is not None:
                        stalled = handle(frame)
                        if stalled is not None:
                            await relay.wait_for_room(*stalled)
            except FrameTooLarge as e:
                log.debug("relay frame too large", extra={"remote": self.remote, "reason": str(e)})
                return Why.TOO_LARGE
            except RelaydError as e:
                log.debug(
                    "relay protocol violation", extra={"remote": self.remote, "reason": str(e)}
                )
                return Why.VIOLATION
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return Why.GONE
        return Why.IDLE

    async def _write_loop(self) -> None:
        """Write everything queued at once; release the bytes as the kernel takes them.

        This is SocketStream.send_all's loop, done here so that the outbox learns of every
        byte written: a receiver that reads slowly frees room (and counts as progress for the
        stall timer) as it goes, not only once a whole batch is out.
        """
        outbox = self.outbox
        send = self.stream.socket.send
        try:
            while True:
                frames = await outbox.take()
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                with memoryview(data) as view:
                    written = 0
                    while written < len(view):
                        sent = await send(view[written:])
                        written += sent
                        outbox.release(sent)
        except trio.EndOfChannel:
            return  # closed: the nursery is being cancelled
        except (OSError, trio.ClosedResourceError):
            self.close(Why.GONE)
