"""A tiny HTTP/1.1 origin server on raw trio sockets, for fetcher and preview tests.

Raw sockets so a test can misbehave on purpose (an endless body, a slow drip, a lying
Content-Length) in ways a real framework would not allow. Each route is an async function
given the request and a trio stream; it writes whatever bytes it likes. Optional TLS (trustme).
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Route = Callable[["Request", trio.abc.Stream], Awaitable[None]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Origin:
    routes: dict[str, Route]
    port: int = 0
    seen: list[Request] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def response(
    status: int, body: bytes = b"", content_type: str = "text/html", **headers: str
) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}"]
    if "Content_Length" not in headers:
        head.append(f"Content-Length: {len(body)}")
    head += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def static(
    status: int, body: bytes = b"", content_type: str = "text/html", **headers: str
) -> Route:
    async def route(request: Request, stream: trio.abc.Stream) -> None:
        await stream.send_all(response(status, body, content_type, **headers))

    return route


async def _handle(origin: Origin, stream: trio.abc.Stream) -> None:
    with trio.move_on_after(30):
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            body += await stream.receive_some(65536)
        request = Request(method, path, headers, body)
        origin.seen.append(request)
        route = origin.routes.get(path.partition("?")[0])
        try:
            if route is None:
                await stream.send_all(response(404, b"no"))
            else:
                await route(request, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


async def serve_origin(
    origin: Origin,
    ssl_context: ssl.SSLContext | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    origin.port = listeners[0].socket.getsockname()[1]
    if ssl_context is not None:
        listeners = [trio.SSLListener(lst, ssl_context) for lst in listeners]  # type: ignore[misc]

    async def handler(stream: trio.abc.Stream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            await _handle(origin, stream)

    task_status.started()
    await trio.serve_listeners(handler, listeners)
