"""The QuartTrio application: REST blueprints, the error shape, request logging and metrics,
and the lifespan.

`create_app(settings)` builds an app whose lifespan starts the services (store, accounts, actors)
in the app's nursery and stops them on shutdown, so `relay serve` and plain
`hypercorn relay.app:app --worker-class trio` run exactly the same process.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from quart import Request, Response, g, request
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from relay.errors import ConfigError, ListenError, RateLimited, RelayError, first_of
from relay.forwarded import TrustedProxies
from relay.logs import configure_logging
from relay.metrics import Metrics
from relay.ratelimit import RateLimiter
from relay.rest.applications import applications_blueprint
from relay.rest.auth import auth_blueprint, users_blueprint
from relay.rest.docs import docs_blueprint
from relay.rest.emojis import emojis_blueprint
from relay.rest.files import PacedBody, files_blueprint, upload_request_class
from relay.rest.health import health_blueprint
from relay.rest.http import client_ip, error_response
from relay.rest.messages import messages_blueprint
from relay.rest.metrics import metrics_blueprint
from relay.rest.moderation import moderation_blueprint
from relay.rest.push import push_blueprint
from relay.rest.roles import roles_blueprint
from relay.rest.rooms import rooms_blueprint
from relay.rest.search import search_blueprint
from relay.rest.servers import servers_blueprint
from relay.rest.threads import threads_blueprint
from relay.rest.voice import voice_blueprint
from relay.rest.web import gateway_blueprint, web_blueprint
from relay.rest.webhooks import webhooks_blueprint
from relay.runtime import Runtime
from relay.services import run_services
from relay.telemetry import collect_runtime

if TYPE_CHECKING:
    from types import TracebackType

    from hypercorn.typing import (
        ASGIReceiveCallable,
        ASGIReceiveEvent,
        ASGISendCallable,
        ASGISendEvent,
        HTTPScope,
    )

    from relay.config import Settings

log = logging.getLogger("relay.http")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_HTTP_CODES = {
    400: "bad_request",
    404: "unknown_route",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class HTTPConnection(TrioASGIHTTPConnection):
    """quart-trio's handling of one HTTP request, made to end cleanly in hypercorn's trio worker.

    hypercorn ends the request inside the response's last `send`: it hands the app
    http.disconnect (hypercorn/protocol/http_stream.py:127-132), then closes the connection or
    readies it for the next request and restarts its keep-alive timer (protocol/h11.py:271-289,
    `_maybe_recycle`). quart-trio cancels the request's nursery, that `send` included, as soon as
    the disconnect arrives (quart_trio/asgi.py:36-40), so everything after the first checkpoint
    was skipped: a connection whose body was still unread stayed open and its next request was
    never answered, and a kept-alive one never timed out. That last `send` is shielded.

    hypercorn closes a connection whose request body was not read whole (h11.py:287-289), so a
    response sent before the app has all of the body says `Connection: close`; otherwise a
    client may send its next request into the closing connection.
    """

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        body_read = not _has_body(self.scope)

        async def receive_noting_end() -> ASGIReceiveEvent:
            nonlocal body_read
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_read = True
            return message

        async def send_ending_cleanly(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start" and not body_read:
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await super().__call__(receive_noting_end, send_ending_cleanly)

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: ASGIReceiveCallable
    ) -> None:
        """Hand the body on no faster than the route reads it (relay.rest.files.PacedBody)."""
        body = request.body
        if isinstance(body, PacedBody):

            async def paced() -> ASGIReceiveEvent:
                await body.wait_for_room()
                return await receive()

            await super().handle_messages(nursery, request, paced)
        else:
            await super().handle_messages(nursery, request, receive)


def _has_body(scope: HTTPScope) -> bool:
    for name, value in scope["headers"]:
        if name.lower() == b"transfer-encoding" or (
            name.lower() == b"content-length" and value.strip() != b"0"
        ):
            return True
    return False


class RelayApp(QuartTrio):
    """QuartTrio, without a traceback for a listener that cannot bind: its one line names the
    setting, and whoever runs the app reports it (`relay serve` ends with it, hypercorn with its
    lifespan failure)."""

    def log_exception(
        self,
        exception_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None],
    ) -> None:
        if not isinstance(exception_info[1], (ListenError, ConfigError)):
            super().log_exception(exception_info)


def create_app(settings: Settings) -> QuartTrio:
    metrics = Metrics()
    rt = Runtime(settings, metrics)
    metrics.add_source(partial(collect_runtime, rt))
    app = RelayApp("relay", static_folder=None)  # no static files: no /static route
    app.asgi_http_class = HTTPConnection
    app.request_class = upload_request_class(settings)  # upload routes: bodies stream to disk
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = settings.body_timeout_s  # 408 after it (quart-trio's default: 60)
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = settings.shutdown_grace_s
    app.extensions["relay"] = rt
    for blueprint in (
        health_blueprint(rt),
        auth_blueprint(rt),
        users_blueprint(rt),
        messages_blueprint(rt),
        files_blueprint(rt),
        emojis_blueprint(rt),
        servers_blueprint(rt),
        threads_blueprint(rt),
        roles_blueprint(rt),
        moderation_blueprint(rt),
        search_blueprint(rt),
        rooms_blueprint(rt),
        voice_blueprint(rt),
        applications_blueprint(rt),
        webhooks_blueprint(rt),
        push_blueprint(rt),
        docs_blueprint(),
        gateway_blueprint(rt),
        web_blueprint(rt),
    ):
        app.register_blueprint(blueprint)
    if settings.metrics_token is not None:  # else /metrics is on metrics_port only, or nowhere
        app.register_blueprint(metrics_blueprint(metrics, settings.metrics_token))

    services = trio.CancelScope()

    @app.before_serving
    async def start_services() -> None:
        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with services:
                await run_services(rt, task_status=task_status)

        try:
            await app.nursery.start(run)
        except ExceptionGroup as group:  # from the services' nurseries
            # A port in use, or a setting only start-up can check (a worker id held elsewhere).
            cannot_start, _ = group.split((ListenError, ConfigError))
            if cannot_start is None:
                raise
            raise first_of(cannot_start) from None  # its text is the start-up failure's reason

    @app.after_serving
    async def stop_services() -> None:
        services.cancel()

    @app.errorhandler(RelayError)
    async def relay_error(error: RelayError) -> Response:
        if isinstance(error, RateLimited):
            metrics.rate_limited(error.limit_name)
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        relay = RelayError(error.description or error.name, code=_HTTP_CODES.get(status, "error"))
        relay.status = status
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            relay.headers["Allow"] = ", ".join(sorted(error.valid_methods))  # RFC 9110 15.5.6
        return error_response(relay)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.error("unhandled error", exc_info=error)
        return error_response(RelayError("internal server error"))

    # Every request, whatever its route: the routes' own limits (logins, messages) come after.
    requests = RateLimiter(settings.http_per_ip, 1.0)
    proxies = TrustedProxies(settings.trusted_proxies)

    @app.before_request
    async def start_request() -> None:
        g.started = time.perf_counter()
        peer = request.remote_addr or "unknown"
        g.request_id = proxies.request_id(peer, request.headers.get("X-Request-Id"))
        # Behind a trusted proxy the client is who X-Forwarded-For names: from here on
        # remote_addr (client_ip) is that address, for this limit and every later one.
        request.remote_addr = proxies.client(peer, request.headers.getlist("X-Forwarded-For"))
        decision = requests.hit(client_ip(), trio.current_time())
        if not decision.allowed:
            raise RateLimited.refusing(
                "too many requests from this address", decision, "http_per_ip"
            )

    @app.after_request
    async def log_request(response: Response) -> Response:
        """One line per request, and its id in X-Request-Id: quote it and the line is found."""
        started = getattr(g, "started", None)
        rule = request.url_rule
        duration_ms = None
        if started is not None:
            seconds = time.perf_counter() - started
            duration_ms = round(seconds * 1000, 2)
            # By the route's rule, never the path (ids in paths would make a series each), and
            # by known methods only: a client could send any word.
            route = rule.rule if rule is not None else "unmatched"
            method = request.method if request.method in _METHODS else "other"
            metrics.http_request(route, method, response.status_code, seconds)
        request_id = g.get("request_id")
        if request_id is not None:
            response.headers["X-Request-Id"] = request_id
        user_id = g.get("user_id")
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "route": rule.rule if rule is not None else None,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "user": str(user_id) if user_id is not None else None,  # ids are text in JSON
                "ip": client_ip(),
                "request_id": request_id,
            },
        )
        return response

    return app


class EnvApp:
    """The ASGI app for plain hypercorn: built from RELAY_* env vars on its first call (the
    lifespan startup), so importing this module reads nothing and configures nothing."""

    def __init__(self) -> None:
        self._app: QuartTrio | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from relay.config import load_settings

            settings = load_settings(os.environ)
            configure_logging(settings.log_format, settings.log_level)
            self._app = create_app(settings)
        await self._app(scope, receive, send)


app = EnvApp()
