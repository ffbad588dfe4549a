"""The root of the task tree: hypercorn serving the app until SIGINT/SIGTERM.

Resource handling: `serve_http` owns the REST listening sockets, a task per admitted connection
(hypercorn's TCPServer) and the app's lifespan; the lifespan owns the services
(relay/services.py). On a shutdown signal it stops accepting, lets requests in flight finish (up
to shutdown_grace_s), then runs the lifespan shutdown, which cancels the services and closes the
database. `run` returns only after all of that.

Error handling: the REST port is bound first, so a port in use raises ListenError before anything
else starts; a failed start-up of the services raises StartupFailed with the app's one-line
reason (a ListenError's text for the realtime and byte-relay ports). `relay serve` prints either
as its last line.

Connections are capped in all and per client address (`Gate`, as on the other listeners): one
over a cap gets 503 (over TLS: nothing) and is closed before its request is read. A trusted
proxy's connections count in the total only: each may carry requests of many clients, whose
own address (X-Forwarded-For, see relay/forwarded.py) the per-IP request limits use instead.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from functools import partial
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import LifespanFailureError, wrap_app

from relay.app import create_app
from relay.forwarded import TrustedProxies
from relay.realtime.gate import Gate
from relay.services import listening

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable

    from hypercorn.typing import AppWrapper, ASGISendEvent, LifespanState
    from quart_trio import QuartTrio

    from relay.config import Settings
    from relay.runtime import Runtime

log = logging.getLogger("relay.server")
_BUSY_BODY = b'{"error":{"code":"too_many_connections","message":"too many connections"}}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.accesslog = None  # the app logs one structured line per request
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.shutdown_grace_s
    config.certfile = settings.tls_cert
    config.keyfile = settings.tls_key
    return config


async def wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("shutting down", extra={"signal": signal.Signals(signum).name})
            return


async def run(
    settings: Settings,
    *,
    app: QuartTrio | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown_trigger` returns (default: SIGINT or SIGTERM).

    Reports the bound URLs (e.g. ["http://127.0.0.1:41234"]) through task_status once the
    services are up and the sockets listen; port 0 picks a free port. `app` (from
    `create_app(settings)`) may be passed in by tests that need its Runtime.
    """
    app = app or create_app(settings)
    serve = partial(serve_http, app, settings, shutdown_trigger=shutdown_trigger or wait_for_signal)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve)
        log.info("listening", extra={"http": " ".join(binds)})
        task_status.started(binds)
    log.info("stopped")


async def serve_http(
    app: QuartTrio,
    settings: Settings,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """hypercorn's trio worker (hypercorn/trio/run.py:30-121, one worker, no QUIC) with a `Gate`
    in front of its per-connection TCPServer, which hypercorn has neither a setting nor a hook for
    (pgjones/hypercorn#81), and trio's listen backlog (the kernel's limit) instead of its 100."""
    config = hypercorn_config(settings)
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = _Lifespan(asgi, config, lifespan_state)
    context = WorkerContext(None)
    tls = config.create_ssl_context()
    gate = Gate(settings.max_connections, settings.max_connections_per_ip)
    proxies = TrustedProxies(settings.trusted_proxies)
    runtime: Runtime = app.extensions["relay"]
    runtime.gates["http"] = gate  # read by /metrics
    # Bound before the services start: a port in use stops start-up before anything else opens
    # (connections that arrive meanwhile wait in the backlog).
    with listening("http_port", settings.host, settings.http_port):
        listeners = await trio.open_tcp_listeners(settings.http_port, host=settings.host)
    scheme = "https" if tls is not None else "http"
    binds = [f"{scheme}://{_address(listener.socket)}" for listener in listeners]
    runtime.http_urls = binds  # before the services start: a cluster node publishes its own
    try:
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            state = ConnectionState(lifespan_state.copy())
            handler = partial(_connection, asgi, config, context, state, gate, proxies, tls)
            async with trio.open_nursery() as connections:
                try:
                    async with trio.open_nursery() as accepting:
                        accepting.start_soon(
                            partial(
                                trio.serve_listeners,
                                handler,
                                listeners,
                                handler_nursery=connections,
                            )
                        )
                        task_status.started(binds)
                        await shutdown_trigger()
                        accepting.cancel_scope.cancel()
                finally:
                    await context.terminated.set()  # idle connections close at once
                    deadline = trio.current_time() + config.graceful_timeout
                    connections.cancel_scope.deadline = deadline
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:  # serving closes them, but start-up may have failed first
            await trio.aclose_forcefully(listener)


class StartupFailed(LifespanFailureError):
    """The app's start-up failed; `reason` is its one-line account (e.g. a ListenError's)."""

    def __init__(self, reason: str) -> None:
        super().__init__("startup", reason)
        self.reason = reason


class _Lifespan(Lifespan):
    """hypercorn's lifespan, keeping the reason the app gave for a failed start-up (hypercorn
    folds it into its error's text) so that `relay serve` can end with it, and never letting
    `wait_for_startup` return after a failure: hypercorn's returns as the failure is being
    raised in the lifespan task, and serving began (and logged "listening") before that task's
    error cancelled it."""

    failed = False

    async def asgi_send(self, message: ASGISendEvent) -> None:
        if message["type"] == "lifespan.startup.failed":
            self.failed = True
            raise StartupFailed(message.get("message", ""))
        await super().asgi_send(message)

    async def wait_for_startup(self) -> None:
        await super().wait_for_startup()
        if self.failed:
            await trio.sleep_forever()  # until the lifespan task's StartupFailed cancels this


class _TCPServer(TCPServer):
    """hypercorn's connection handler, ending when the client has gone: its keep-alive timer
    kept the connection (its task, socket and gate slot) for up to keep_alive_timeout after the
    client closed it (hypercorn/trio/tcp_server.py:60-76 waits for that timer's task)."""

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()  # nothing more can arrive


def _address(sock: trio.socket.SocketType) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _connection(
    app: AppWrapper,
    config: Config,
    context: WorkerContext,
    state: ConnectionState,
    gate: Gate,
    proxies: TrustedProxies,
    tls: ssl.SSLContext | None,
    stream: trio.SocketStream,
) -> None:
    """One accepted connection: refused over a cap, else served by hypercorn."""
    try:
        peer = str(stream.socket.getpeername()[0])
    except OSError:  # already reset by the client
        await trio.aclose_forcefully(stream)
        return
    ip = None if proxies.trusts(peer) else peer  # a proxy's connections: in the total only
    if not gate.admit(ip):
        log.debug("connection refused: over a cap", extra={"ip": peer})
        if tls is None:  # over TLS the client would only see a broken handshake
            with (
                trio.move_on_after(1.0),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await stream.send_all(_BUSY)
        await trio.aclose_forcefully(stream)
        return
    try:
        transport: trio.SocketStream | trio.SSLStream[trio.SocketStream] = stream
        if tls is not None:  # what trio.SSLListener would do; TCPServer runs the handshake
            transport = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
        # Typed as taking an SSLStream, it takes either (as from hypercorn's listeners).
        await _TCPServer(app, config, context, state, transport)  # type: ignore[arg-type]
    finally:
        gate.leave(ip)
