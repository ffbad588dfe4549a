"""The byte relay over WebSocket: `/v1/relay` on the realtime listener.

Each binary message carries exactly one relayd frame, in both directions, and client ids share
one namespace with the TCP listener, so a browser and a TCP client can exchange data. The rules
and the slow-receiver policy are the TCP ones (hub.py); where TCP closes silently, a WebSocket
gets a close code:

| code | when |
|---|---|
| 1003 | a text message |
| 1008 | a malformed frame, a transfer before login, a wrong `from`, a login with another id |
| 1009 | a payload over the cap (or a message longer than the largest possible frame) |
| 4000 | replaced: a newer login with the same client id |
| 4009 | idle: nothing received for `relay_idle_s` (closed up to 1 s later; pings do not count) |
| 4010 | slow consumer: the outbox was full and made no progress for `relay_stall_s` |

Resource handling: the listener runs `RelayEndpoint` beside the Connection's own reader and
writer; the endpoint runs this client's relay reader (in its task) and relay writer (in one
nursery). The relay writer wraps each queued frame in a binary WebSocket frame and hands them
to the Connection in batches of up to WS_BATCH_BYTES (or one larger frame). The Connection's
outbox holds one batch (`outbox_frames=1`), so a WebSocket receiver holds at most
`relay_queue_bytes` in its relay outbox plus two batches in the Connection (one queued, one
being written).

Error handling: as TCP; ConnectionClosed ends the client's tasks.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import trio

from relay.byterelay.hub import Peer, Why
from relay.protocol import wsframe
from relay.protocol.relayd import (
    MAX_HEADER_BYTES,
    FrameTooLarge,
    RelaydError,
    decode,
    split_run,
)
from relay.realtime.connection import ConnectionClosed

if TYPE_CHECKING:
    from relay.byterelay.hub import ByteRelay
    from relay.realtime.connection import Connection
    from relay.realtime.listener import Request

log = logging.getLogger("relay.byterelay")

# Frames handed to the Connection at once. The relay outbox counts a batch until the Connection
# takes it, so this is also the step in which a slow WebSocket receiver shows progress.
WS_BATCH_BYTES = 64 * 1024
IDLE_SLACK_S = 1.0  # the idle close may come this much after relay_idle_s (at most idle_s / 8)
CLOSE_CODES: dict[Why, tuple[int, str]] = {
    Why.TEXT: (1003, "binary relay frames only"),
    Why.VIOLATION: (1008, "protocol violation"),
    Why.TOO_LARGE: (1009, "payload over the cap"),
    Why.REPLACED: (4000, "replaced by a newer login"),
    Why.IDLE: (4009, "idle timeout"),
    Why.SLOW: (4010, "slow consumer"),
}


class RelayEndpoint:
    """The realtime-listener endpoint for `/v1/relay`.

    `connection_options` tell the listener how to build this endpoint's Connections: messages
    up to the largest relay frame, and an outbox of one batch (the relay outbox is the bound).
    """

    def __init__(self, relay: ByteRelay) -> None:
        self.relay = relay
        self.connection_options: dict[str, Any] = {
            "max_message_bytes": MAX_HEADER_BYTES + relay.max_payload_bytes,
            "outbox_frames": 1,
        }

    async def __call__(self, conn: Connection, request: Request) -> None:
        await WsPeer(self.relay, conn, request.remote).run()


class WsPeer(Peer):
    transport = "ws"

    def __init__(self, relay: ByteRelay, conn: Connection, remote: tuple[str, int] | None) -> None:
        super().__init__(relay, remote)
        self.conn = conn
        self._scope: trio.CancelScope | None = None

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._write_loop)
                self.close(await self._read_loop())
        finally:
            self.close(Why.ENDED)

    def _stop(self, why: Why) -> None:
        if why in CLOSE_CODES:
            code, reason = CLOSE_CODES[why]
            self.conn.close_nowait(code, reason)
        elif why is Why.GONE:
            self.conn.close_nowait()  # answers the client's close, or 1000
        if self._scope is not None:
            self._scope.cancel()

    async def _read_loop(self) -> Why:
        relay, conn = self.relay, self.conn
        idle_s, current_time = relay.idle_s, trio.current_time
        # One idle scope for the whole loop: a scope per message cost ~12% of a small frame's
        # time. Its deadline is pushed only once it is nearer than idle_s, by idle_s + slack, so
        # at most once per `slack`: silence closes after idle_s to idle_s + slack.
        slack = min(IDLE_SLACK_S, idle_s / 8)
        try:
            with trio.CancelScope(deadline=current_time() + idle_s + slack) as idle:
                while True:
                    message = await conn.receive()
                    if (now := current_time()) + idle_s > idle.deadline:
                        idle.deadline = now + idle_s + slack
                    if isinstance(message, str):
                        return Why.TEXT
                    frame = decode(message, relay.max_payload_bytes)
                    stalled = self.handle(frame)
                    self.flush()
                    if stalled is not None:  # a stalled forward is not silence
                        deadline, idle.deadline = idle.deadline, math.inf
                        await relay.wait_for_room(*stalled)
                        idle.deadline = max(deadline, current_time() + idle_s)
            return Why.IDLE
        except FrameTooLarge as e:
            log.debug("relay frame too large", extra={"remote": self.remote, "reason": str(e)})
            return Why.TOO_LARGE
        except RelaydError as e:
            log.debug("relay protocol violation", extra={"remote": self.remote, "reason": str(e)})
            return Why.VIOLATION
        except ConnectionClosed as e:
            return Why.TOO_LARGE if e.code == 1009 else Why.GONE

    async def _write_loop(self) -> None:
        outbox, conn = self.outbox, self.conn
        try:
            while True:
                items = await outbox.take(WS_BATCH_BYTES)
                size = sum(map(len, items))
                # An item may be a run of frames from a TCP sender: one message per frame.
                frames = [bytes(f) for item in items for f in split_run(item)]
                if len(frames) == 1:
                    data = wsframe.binary_frame(frames[0])
                else:
                    data = b"".join([wsframe.binary_frame(frame) for frame in frames])
                await conn.send(data)
                outbox.release(size)
        except trio.EndOfChannel:
            return
        except ConnectionClosed:
            self.close(Why.GONE)
