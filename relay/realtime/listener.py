"""The realtime listener: every WebSocket endpoint on one Trio-native TCP (or TLS) listener.

WebSockets do not go through hypercorn (DESIGN §1): this listener reads the HTTP upgrade request
with h11, lets wsproto check and answer it (no extension is ever accepted, so a client offering
permessage-deflate gets an uncompressed connection), picks the endpoint by path and runs it with
a `Connection`. Unknown paths get 404, requests that are not WebSocket upgrades 400 or 426, and
a handshake that does not finish within `handshake_timeout_s` (TLS included) loses its TCP
connection.

Connections are capped in all and per client address (`Gate`): one over a cap gets 503 (over
TLS: nothing) and is closed before its request is read. A connection from a trusted proxy
(`TrustedProxies`) counts in the total at once and against its client's cap once the request
says who that is (X-Forwarded-For), so clients behind one proxy do not share one address's cap;
one over that cap gets 503 instead of the upgrade.

Each connection that was upgraded ends with one log line (logger `relay.realtime`, "connection
closed"): path, close code and reason, the user the endpoint identified (`Connection.user`),
duration, client address and a request id (the trusted proxy's X-Request-Id, or a new one),
which the 101 response carries as X-Request-Id.

Each endpoint's connections are counted in `ListenerStats` (for /metrics): once when one opens
and once when it ends (its close code, and its frame counters added to the endpoint's), never
per frame; the open ones are kept in a set so a scrape can read their outboxes.

Resource handling: `serve_realtime` owns the listening sockets and the connections' `Flusher`
task; trio.serve_listeners runs one task per accepted connection in its own nursery. That task
reads (`Connection.run`) and owns a nursery holding the endpoint (and the connection's writer
task while it has a backlog). When the endpoint returns, the connection is
closed with 1000; when the connection ends first, the endpoint gets ENDPOINT_GRACE_S to notice
(its `receive` raises ConnectionClosed) and is then cancelled. Cancelling `serve_realtime`
closes the listeners and every connection (each says 1001, see connection.py).

Error handling: an endpoint's exception is logged (logger `relay.realtime`, with exc_info) and
its connection closed with 1011; ConnectionClosed escaping an endpoint is a normal end. Nothing
a client does, and no endpoint bug, stops the listener.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from bisect import bisect_left
from dataclasses import dataclass
from functools import partial
from itertools import accumulate
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias
from urllib.parse import parse_qsl, urlsplit

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection
from wsproto.events import Request as WsRequest
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError

from relay.forwarded import TrustedProxies
from relay.realtime.connection import (
    CLOSE_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    OUTBOX_FRAMES,
    Connection,
    ConnectionClosed,
    Flusher,
)
from relay.realtime.gate import Gate

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable, Mapping, Sequence

log = logging.getLogger("relay.realtime")

HANDSHAKE_TIMEOUT_S = 10.0
MAX_REQUEST_HEAD_BYTES = 16 * 1024
ENDPOINT_GRACE_S = 1.0  # an endpoint may finish on its own this long after its connection ended
MAX_CONNECTIONS = 100_000  # without a gate of the caller's
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Request:
    """The upgrade request an endpoint was chosen for."""

    path: str
    query: Mapping[str, str]  # the first value of each query parameter
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    remote: tuple[str, int] | None  # the TCP peer's address and port (a proxy's, if proxied)
    subprotocols: tuple[str, ...] = ()  # offered by the client; none is accepted yet
    client: str = ""  # the client's address: the peer's, or what a trusted proxy says it is
    request_id: str = ""


Endpoint: TypeAlias = "Callable[[Connection, Request], Awaitable[None]]"


@dataclass(frozen=True, slots=True)
class EndpointSample:
    """An endpoint's counters at one moment (`EndpointStats.sample`)."""

    frames_sent: int  # by every connection so far, the open ones included
    bytes_sent: int
    frames_dropped: int
    messages_received: int
    queued: int  # frames in the open connections' outboxes
    fill_buckets: list[int]  # open connections with an outbox fill <= each bound (cumulative)
    fill_sum: float  # the sum of their fills


class EndpointStats:
    """One endpoint's connections: open now, opened so far, ends by close code, and the frame
    counters of those that ended (`sample` adds the open ones')."""

    __slots__ = (
        "bytes_sent",
        "closes",
        "frames_dropped",
        "frames_sent",
        "messages_received",
        "open",
        "opened",
    )

    def __init__(self) -> None:
        self.open: set[Connection] = set()
        self.opened = 0
        self.closes: dict[int, int] = {}  # close code -> connections that ended with it
        self.frames_sent = 0
        self.bytes_sent = 0
        self.frames_dropped = 0
        self.messages_received = 0

    def ended(self, conn: Connection) -> None:
        self.open.discard(conn)
        code = conn.close_code or CloseReason.ABNORMAL_CLOSURE
        self.closes[code] = self.closes.get(code, 0) + 1
        frames, sent, dropped, received, _, _ = conn.counters()
        self.frames_sent += frames
        self.bytes_sent += sent
        self.frames_dropped += dropped
        self.messages_received += received

    def sample(self, fill_bounds: Sequence[float]) -> EndpointSample:
        """The counters now, and how full the open connections' outboxes are, counted into
        `fill_bounds` (ascending; fill = queued frames / outbox size). One pass, no object per
        connection: a scrape reads every open connection."""
        frames, sent, dropped, received = (
            self.frames_sent,
            self.bytes_sent,
            self.frames_dropped,
            self.messages_received,
        )
        queued = 0
        fill_sum = 0.0
        per_bucket = [0] * (len(fill_bounds) + 1)  # the last: over every bound
        for conn in self.open:
            conn_frames, conn_sent, conn_dropped, conn_received, used, size = conn.counters()
            frames += conn_frames
            sent += conn_sent
            dropped += conn_dropped
            received += conn_received
            queued += used
            fill = used / size
            fill_sum += fill
            per_bucket[bisect_left(fill_bounds, fill)] += 1
        return EndpointSample(
            frames, sent, dropped, received, queued, list(accumulate(per_bucket[:-1])), fill_sum
        )


class ListenerStats:
    """The realtime listener's connections by endpoint path, and the handshakes that failed."""

    __slots__ = ("endpoints", "handshakes_failed")

    def __init__(self) -> None:
        self.endpoints: dict[str, EndpointStats] = {}
        self.handshakes_failed = 0  # admitted, but closed before reaching an endpoint


async def serve_realtime(
    endpoints: Mapping[str, Endpoint],
    host: str | None,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    outbox_frames: int = OUTBOX_FRAMES,
    close_timeout_s: float = CLOSE_TIMEOUT_S,
    gate: Gate | None = None,
    proxies: TrustedProxies | None = None,
    stats: ListenerStats | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve `endpoints` (path -> endpoint) until cancelled; count connections in `stats`.

    Reports the bound URLs (e.g. ["ws://127.0.0.1:41234"], "wss://" with `ssl_context`)
    through task_status once listening; port 0 picks a free port.
    """
    stats = stats or ListenerStats()
    for path in endpoints:
        stats.endpoints.setdefault(path, EndpointStats())
    listeners = await trio.open_tcp_listeners(port, host=host)
    scheme = "wss" if ssl_context is not None else "ws"
    urls = [
        f"{scheme}://{_format_address(listener.socket.getsockname())}" for listener in listeners
    ]
    flusher = Flusher()  # writes every connection's queued frames, see connection.py
    handler = partial(
        _handle,
        gate=gate or Gate(MAX_CONNECTIONS, MAX_CONNECTIONS),
        proxies=proxies or TrustedProxies(),
        stats=stats,
        endpoints=dict(endpoints),
        ssl_context=ssl_context,
        handshake_timeout_s=handshake_timeout_s,
        options={
            "outbox_frames": outbox_frames,
            "max_message_bytes": max_message_bytes,
            "close_timeout_s": close_timeout_s,
            "flusher": flusher,
        },
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        await nursery.start(trio.serve_listeners, handler, listeners)
        log.debug("realtime listener ready", extra={"urls": " ".join(urls)})
        task_status.started(urls)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


def _format_address(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _handle(
    stream: trio.SocketStream,
    *,
    gate: Gate,
    proxies: TrustedProxies,
    stats: ListenerStats,
    endpoints: dict[str, Endpoint],
    ssl_context: ssl.SSLContext | None,
    handshake_timeout_s: float,
    options: dict[str, Any],
) -> None:
    """One TCP connection: handshake, then the endpoint. Never raises (but Cancelled)."""
    started = trio.current_time()
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        peer = stream.socket.getpeername()
        remote = (str(peer[0]), int(peer[1]))
    except OSError:  # already reset by the client
        await trio.aclose_forcefully(stream)
        return
    # The address counted against the per-address cap; a proxy's connection is counted in the
    # total only until its request names the client.
    counted: str | None = None if proxies.trusts(remote[0]) else remote[0]

    def claim(client: str) -> bool:
        nonlocal counted
        if counted is not None:
            return True
        if not gate.claim(client):
            return False
        counted = client
        return True

    if not gate.admit(counted):
        log.debug("connection refused: over a cap", extra={"remote": remote})
        if ssl_context is None:  # over TLS the client would only see a broken handshake
            with (
                trio.move_on_after(1.0),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await stream.send_all(_BUSY)
        await trio.aclose_forcefully(stream)
        return
    # One coroutine per connection, not a helper's too: each frame is kept for the connection's
    # whole life (a second one was ~0.3 KB more per idle gateway session).
    transport: trio.abc.Stream = stream
    conn: Connection | None = None
    request: Request | None = None
    endpoint_stats: EndpointStats | None = None
    try:
        if ssl_context is not None:
            transport = trio.SSLStream(stream, ssl_context, server_side=True, https_compatible=True)
        accepted = None
        with trio.move_on_after(handshake_timeout_s) as timeout:
            accepted = await _handshake(transport, endpoints, remote, proxies, claim)
        if timeout.cancelled_caught:
            log.debug("handshake timed out", extra={"remote": remote})
        if accepted is None:
            await trio.aclose_forcefully(transport)
            return
        received, request, endpoint = accepted
        # An endpoint may override the listener's Connection options (the byte relay needs
        # larger messages and a smaller outbox) with a `connection_options` mapping.
        conn = Connection(
            transport, received, **{**options, **getattr(endpoint, "connection_options", {})}
        )
        del accepted, received, claim  # this frame lives as long as the connection
        endpoint_stats = stats.endpoints[request.path]
        endpoint_stats.opened += 1
        endpoint_stats.open.add(conn)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run_endpoint, endpoint, conn, request)
            await conn.run()
            nursery.cancel_scope.deadline = trio.current_time() + ENDPOINT_GRACE_S
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await trio.aclose_forcefully(transport)  # the client went away during the handshake
    except Exception:
        log.error("realtime connection failed", exc_info=True, extra={"remote": remote})
        await trio.aclose_forcefully(transport)
    finally:
        gate.leave(counted)
        if endpoint_stats is not None and conn is not None:
            endpoint_stats.ended(conn)
        else:
            stats.handshakes_failed += 1
        if conn is not None and request is not None:  # however it ended, shutdown included
            _log_end(conn, request, started)


def _log_end(conn: Connection, request: Request, started: float) -> None:
    """The connection's one line, once it and its endpoint have ended."""
    extra: dict[str, Any] = {
        "path": request.path,
        "code": conn.close_code,
        "user": None if conn.user is None else str(conn.user),  # ids are text in JSON
        "duration_ms": round((trio.current_time() - started) * 1000, 2),
        "ip": request.client,
        "request_id": request.request_id,
    }
    if conn.close_reason:
        extra["reason"] = conn.close_reason
    log.info("connection closed", extra=extra)


async def _handshake(
    stream: trio.abc.Stream,
    endpoints: dict[str, Endpoint],
    remote: tuple[str, int],
    proxies: TrustedProxies,
    claim: Callable[[str], bool],
) -> tuple[bytes, Request, Endpoint] | None:
    """Read the upgrade request and answer it: 101 (returned, with the bytes that came after
    the request: the client's first frames, if it did not wait), or an HTTP error (None).
    `claim(client)` counts the connection against its client's cap; False: 503."""
    http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES)
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as e:
            await _send_http_error(stream, http, e.error_status_hint)
            return None
        if isinstance(event, h11.Request):
            break
        if event is not h11.NEED_DATA:  # ConnectionClosed: the client left before asking
            return None
        data = bytes(await stream.receive_some(MAX_REQUEST_HEAD_BYTES))
        # A request starts with a method name (after optional blank lines). Anything else
        # (a TLS hello, WebSocket frames, binary junk) is refused now, not at the timeout.
        start = (http.trailing_data[0] + data).lstrip(b"\r\n")[:1]
        if start and not start.isalpha():
            await _send_http_error(stream, http, 400)
            return None
        http.receive_data(data)

    target = urlsplit(event.target.decode("ascii", "replace"))
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("ascii", "replace")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    ws = WSConnection(ConnectionType.SERVER)
    if event.method != b"GET":  # wsproto assumes GET (initiate_upgrade_connection)
        await stream.send_all(
            ws.send(RejectConnection(status_code=405, headers=[(b"Allow", b"GET")]))
        )
        return None
    if event.http_version != b"1.1":  # RFC 6455 §4.1; wsproto would take HTTP/1.0
        await stream.send_all(ws.send(RejectConnection(status_code=400)))
        return None
    try:
        ws.initiate_upgrade_connection(list(event.headers), event.target)
        upgrade = next(ws.events())
    except h11.LocalProtocolError as e:  # wsproto re-encodes the request; h11 refused it
        await stream.send_all(ws.send(RejectConnection(status_code=400)))
        log.debug("unusable upgrade request", extra={"remote": remote, "reason": str(e)})
        return None
    except RemoteProtocolError as e:
        reject: RejectConnection | None
        if "upgrade" not in headers:  # plain HTTP: say how to talk to this port
            reject = RejectConnection(
                status_code=426, headers=[(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
            )
        else:
            reject = e.event_hint if isinstance(e.event_hint, RejectConnection) else None
        await stream.send_all(ws.send(reject or RejectConnection(status_code=400)))
        log.debug("not a WebSocket upgrade", extra={"remote": remote, "reason": str(e)})
        return None
    endpoint = endpoints.get(target.path)
    if endpoint is None:
        await stream.send_all(ws.send(RejectConnection(status_code=404)))
        return None
    forwarded = headers.get("x-forwarded-for")
    client = proxies.client(remote[0], () if forwarded is None else (forwarded,))
    if not claim(client):
        log.debug("connection refused: over a cap", extra={"remote": remote, "client": client})
        await stream.send_all(ws.send(RejectConnection(status_code=503)))
        return None
    request_id = proxies.request_id(remote[0], headers.get("x-request-id"))
    query: dict[str, str] = {}
    for param, param_value in parse_qsl(target.query, keep_blank_values=True):
        query.setdefault(param, param_value)
    request = Request(
        path=target.path,
        query=query,
        headers=headers,
        remote=remote,
        subprotocols=tuple(upgrade.subprotocols) if isinstance(upgrade, WsRequest) else (),
        client=client,
        request_id=request_id,
    )
    # No extensions: permessage-deflate offers are declined by omission.
    accept = AcceptConnection(extra_headers=[(b"x-request-id", request_id.encode())])
    await stream.send_all(ws.send(accept))
    trailing, _ = http.trailing_data
    return bytes(trailing), request, endpoint


async def _send_http_error(stream: trio.abc.Stream, http: h11.Connection, status: int) -> None:
    """Best effort: a bare error response before closing on a malformed request."""
    response = h11.Response(
        status_code=status, headers=[(b"content-length", b"0"), (b"connection", b"close")]
    )
    try:
        await stream.send_all(http.send(response) or b"")
    except h11.LocalProtocolError:
        return


async def _run_endpoint(endpoint: Endpoint, conn: Connection, request: Request) -> None:
    try:
        await endpoint(conn, request)
    except Exception as e:
        if _is_connection_closed(e):
            conn.close_nowait()
            return
        log.error(
            "realtime endpoint failed",
            exc_info=True,
            extra={"path": request.path, "remote": request.remote},
        )
        conn.close_nowait(CloseReason.INTERNAL_ERROR, "internal error")
    else:
        conn.close_nowait()  # 1000, or the peer's code if it closed first


def _is_connection_closed(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(ConnectionClosed)
        return rest is None
    return isinstance(exc, ConnectionClosed)
