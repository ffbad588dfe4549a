"""The web client: its static files at `/` (and `/invite/CODE`), and `GET /v1/api/gateway`,
where a browser learns the gateway's address.

The files (relay/web/static, package data) are read once, when the app is built: only those
are served, so no request path ever reaches the file system. Every page carries a strict
Content-Security-Policy: scripts and styles from this origin only, connections to this origin
and to the gateway's.
"""

from __future__ import annotations

import hashlib
import mimetypes
from importlib.resources import files
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

import msgspec
from quart import Blueprint, Response, request

from relay.errors import NotFound
from relay.rest.apidoc import doc, not_api
from relay.rest.http import json_response

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from relay.runtime import Runtime

GATEWAY_PATH = "/v1/gateway"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}


class Gateway(msgspec.Struct, frozen=True, kw_only=True):
    url: str  # the gateway's WebSocket URL, e.g. ws://127.0.0.1:8081/v1/gateway


class StaticFile(NamedTuple):
    body: bytes
    content_type: str
    etag: str


def load_static(root: Traversable) -> dict[str, StaticFile]:
    """Every file under `root`, by its path relative to it ("js/main.js")."""
    found: dict[str, StaticFile] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, f"{name}/")
            elif child.is_file() and not child.name.startswith("."):
                body = child.read_bytes()
                suffix = "." + child.name.rpartition(".")[2]
                kind = _TYPES.get(suffix) or mimetypes.guess_type(child.name)[0]
                etag = hashlib.sha256(body).hexdigest()[:20]
                found[name] = StaticFile(body, kind or "application/octet-stream", etag)

    walk(root, "")
    return found


def gateway_url(rt: Runtime, host_header: str | None) -> str:
    """`public_url` as ws(s), else the host the browser used with the realtime listener's port
    (the listener's own address may be 0.0.0.0, which no browser can reach)."""
    settings = rt.settings
    if settings.public_url is not None:
        parts = urlsplit(settings.public_url)
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{GATEWAY_PATH}"
    listening = urlsplit(rt.realtime_urls[0]) if rt.realtime_urls else None
    scheme = listening.scheme if listening else ("wss" if settings.tls_cert else "ws")
    port = listening.port if listening and listening.port else settings.realtime_port
    host = urlsplit(f"//{host_header}").hostname if host_header else None
    if not host:
        host = listening.hostname if listening and listening.hostname else settings.host
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return f"{scheme}://{host}:{port}{GATEWAY_PATH}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(gateway: str) -> str:
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src 'self' {_origin(gateway)}; manifest-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


def gateway_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("gateway_info", __name__, url_prefix="/v1/api")

    @bp.get("/gateway")
    @doc("Where the gateway is: its WebSocket URL", response=Gateway, auth="none")
    async def get_gateway() -> Response:
        """The gateway's URL for a client of this server: from `public_url` behind a proxy,
        else this request's host on the realtime listener's port."""
        return json_response(Gateway(url=gateway_url(rt, request.headers.get("Host"))))

    return bp


def web_blueprint(rt: Runtime) -> Blueprint:
    """The client's pages. Not in the OpenAPI document: they are HTML, not API."""
    bp = Blueprint("webclient", __name__)
    static = load_static(files("relay").joinpath("web", "static"))

    def serve(name: str) -> Response:
        found = static.get(name)
        if found is None:
            raise NotFound("no such file", code="unknown_route")
        if request.if_none_match.contains(found.etag):
            response = Response(b"", status=304)
        else:
            response = Response(found.body, content_type=found.content_type)
        response.set_etag(found.etag)
        # Revalidated on every load (a 304 is cheap): an upgrade is never half seen.
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = content_security_policy(
            gateway_url(rt, request.headers.get("Host"))
        )
        return response

    @bp.get("/")
    @not_api
    async def index() -> Response:
        return serve("index.html")

    @bp.get("/invite/<code>")
    @not_api
    async def invite(code: str) -> Response:
        return serve("index.html")  # the client reads the code from its own location

    @bp.get("/sw.js")
    @not_api
    async def service_worker() -> Response:
        # At the root, so its scope is the whole client (a worker's scope is at most its
        # own directory): it shows Web Push notifications (docs/push.md).
        return serve("sw.js")

    @bp.get("/web/<path:name>")
    @not_api
    async def asset(name: str) -> Response:
        return serve(name)

    return bp
