"""The root of the task tree: hypercorn serving the app until SIGINT/SIGTERM.

Resource handling: hypercorn owns the listening sockets and the app's lifespan; the lifespan
owns the services (relay/services.py). On a shutdown signal hypercorn stops accepting, lets
requests in flight finish (up to shutdown_grace_s), then runs the lifespan shutdown, which
cancels the services and closes the database. `run` returns only after all of that.
"""

from __future__ import annotations

import logging
import signal
from functools import partial
from typing import TYPE_CHECKING

import hypercorn.trio
import trio
from hypercorn.config import Config

from relay.app import create_app

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from quart_trio import QuartTrio

    from relay.config import Settings

log = logging.getLogger("relay.server")


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.http_port}"]
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
    serve = partial(
        hypercorn.trio.serve,
        app,
        hypercorn_config(settings),
        shutdown_trigger=shutdown_trigger or wait_for_signal,
    )
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve)
        log.info("listening", extra={"http": " ".join(binds)})
        task_status.started(binds)
    log.info("stopped")
