"""An async Relay client (Trio; httpx for REST, trio-websocket for the gateway) for tests,
scripts and benchmarks.

Typed helpers raise ApiError for any non-2xx answer; `request` returns the raw response, for
callers that want to look at errors themselves.
"""

from __future__ import annotations

import base64
import random
import ssl
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import httpx
import msgspec
import trio
import trio_websocket

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from nacl.signing import SigningKey

KEY_LOGIN_PREFIX = b"relay-login-v1:"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: dict[str, str]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        raise ApiError(
            response.status_code, error["code"], error["message"], error.get("fields", {})
        )
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http_error", response.text[:200], {}) from None


class RelayClient:
    """One user's view of a Relay server. Remembers the tokens of its last login."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.user: dict[str, Any] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self, method: str, path: str, *, json: Any = None, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        """Send a request, with the current access token unless `token` is given ("" for none)."""
        headers = dict(kw.pop("headers", {}))
        bearer = self.access_token if token is None else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        response = await self.http.request(method, path, json=json, headers=headers, **kw)
        if response.status_code == 307 and "location" in response.headers:
            # Cluster mode: an app room lives on another process (docs/cluster.md#app-rooms).
            # Followed once, with the token (httpx drops it on a redirect to another origin).
            location = response.headers["location"]
            response = await self.http.request(method, location, json=json, headers=headers, **kw)
        return response

    async def call(self, method: str, path: str, json: Any = None) -> Any:
        response = await self.request(method, path, json=json)
        _raise_for(response)
        return response.json() if response.content else None

    # -- accounts ------------------------------------------------------------------------------

    async def register(
        self,
        username: str,
        password: str | None = None,
        *,
        public_key: bytes | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"username": username}
        if password is not None:
            body["password"] = password
        if public_key is not None:
            body["public_key"] = base64.b64encode(public_key).decode()
        if display_name is not None:
            body["display_name"] = display_name
        result: dict[str, Any] = await self.call("POST", "/v1/api/auth/register", body)
        return result

    def _remember(self, result: dict[str, Any]) -> dict[str, Any]:
        self.access_token = result["access_token"]
        self.refresh_token = result["refresh_token"]
        self.user = result.get("user", self.user)
        return result

    async def login(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        return self._remember(await self.call("POST", "/v1/api/auth/login", body))

    async def challenge(self, username: str) -> bytes:
        result = await self.call("POST", "/v1/api/auth/challenge", {"username": username})
        return base64.b64decode(result["challenge"])

    async def login_with_key(self, username: str, key: SigningKey) -> dict[str, Any]:
        challenge = await self.challenge(username)
        signature = key.sign(KEY_LOGIN_PREFIX + challenge).signature
        body = {
            "username": username,
            "challenge": base64.b64encode(challenge).decode(),
            "signature": base64.b64encode(signature).decode(),
        }
        return self._remember(await self.call("POST", "/v1/api/auth/login/key", body))

    async def refresh(self) -> dict[str, Any]:
        body = {"refresh_token": self.refresh_token}
        return self._remember(await self.call("POST", "/v1/api/auth/refresh", body))

    async def logout(self) -> None:
        await self.call("POST", "/v1/api/auth/logout")
        self.access_token = self.refresh_token = None

    async def me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/v1/api/users/@me")
        return result


class GatewayClosed(Exception):
    """The server closed the gateway connection; `code` is its close code."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"gateway closed: {code} {reason}")
        self.code = code
        self.reason = reason


class Gateway:
    """A gateway connection (trio-websocket): HELLO, IDENTIFY or RESUME, then events.

    `receive()` returns every frame and `dispatch()` the next DISPATCH. `open_gateway` sends
    HEARTBEAT on the interval HELLO gives (`heartbeat=False` leaves it to the caller, who then
    calls `heartbeat()`: tests that time heartbeats themselves)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.hello: dict[str, Any] = {}
        self.session_id: str | None = None
        self.seq = 0
        self._heartbeats = trio.CancelScope()

    async def send(self, op: int, d: Any) -> None:
        envelope = {"op": op, "d": d}
        if self.encoding == "msgpack":
            await self.ws.send_message(msgspec.msgpack.encode(envelope))
        else:
            await self.ws.send_message(msgspec.json.encode(envelope).decode())

    async def receive(self) -> dict[str, Any]:
        """The next frame of any op; raises GatewayClosed when the server closes."""
        try:
            data = await self.ws.get_message()
        except trio_websocket.ConnectionClosed as e:
            code, text = (e.reason.code, e.reason.reason) if e.reason else (None, None)
            raise GatewayClosed(code, text) from None
        frame: dict[str, Any] = (
            msgspec.msgpack.decode(data) if isinstance(data, bytes) else msgspec.json.decode(data)
        )
        if frame.get("op") == 0 and frame.get("s") is not None:
            self.seq = frame["s"]
        return frame

    async def dispatch(self, t: str | None = None) -> dict[str, Any]:
        """The next DISPATCH (of type `t`, skipping others), as the whole envelope."""
        while True:
            frame = await self.receive()
            if frame["op"] == 0 and (t is None or frame["t"] == t):
                return frame

    async def identify(self, token: str, intents: int | None = None) -> dict[str, Any]:
        """IDENTIFY (with `intents`, if given) and wait for READY; returns READY's `d`."""
        d: dict[str, Any] = {"token": token}
        if intents is not None:
            d["intents"] = intents
        await self.send(2, d)
        ready = await self.dispatch("READY")
        self.session_id = ready["d"]["session_id"]
        result: dict[str, Any] = ready["d"]
        return result

    async def resume(self, token: str, session_id: str, seq: int) -> None:
        await self.send(6, {"token": token, "session_id": session_id, "seq": seq})
        self.session_id = session_id

    async def heartbeat(self) -> None:
        await self.send(1, self.seq)

    async def send_heartbeats(self) -> None:
        """HEARTBEAT with the last seq seen, until the connection closes or
        `stop_heartbeats()`. Each comes after 75-90% of HELLO's interval: early enough for the
        server's deadline (the interval plus a grace) whatever the network's delay, and spread
        out so that clients which connected together do not beat together."""
        interval_s = self.hello["heartbeat_interval"] / 1000
        with self._heartbeats:
            while True:
                await trio.sleep(interval_s * random.uniform(0.75, 0.9))
                try:
                    await self.heartbeat()
                except trio_websocket.ConnectionClosed:
                    return  # whoever reads the connection learns why

    def stop_heartbeats(self) -> None:
        self._heartbeats.cancel()


@asynccontextmanager
async def open_websocket(
    url: str, *, ssl_context: ssl.SSLContext | None = None, max_message_size: int = 16 * 2**20
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A trio-websocket connection to `url` (ws:// or wss://, with path and query).

    The TCP stream is opened and closed here: trio-websocket 0.12 leaves its socket open when
    the server closes first."""
    async with _open_websocket(url, ssl_context, max_message_size) as (ws, _):
        yield ws


@asynccontextmanager
async def _open_websocket(
    url: str, ssl_context: ssl.SSLContext | None, max_message_size: int
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, trio.Nursery]]:
    """`open_websocket`, with the nursery that runs the connection's reader, for tasks that
    must end with the connection (the gateway's heartbeats)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "wss" else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    tcp = await trio.open_tcp_stream(host, port)
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
    if parts.scheme == "wss":
        stream = trio.SSLStream(
            tcp, ssl_context or ssl.create_default_context(), server_hostname=host
        )
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, host, resource, max_message_size=max_message_size
        )
        try:
            yield ws, nursery
        finally:
            await ws.aclose()


@asynccontextmanager
async def open_gateway(
    ws_url: str,
    *,
    encoding: str = "json",
    ssl_context: ssl.SSLContext | None = None,
    heartbeat: bool = True,
) -> AsyncIterator[Gateway]:
    """Connect to /v1/gateway, read HELLO and, unless `heartbeat` is false, send HEARTBEAT on
    HELLO's interval while the connection is open (without them the server closes it with 4009
    after the interval plus its grace)."""
    url = f"{ws_url.rstrip('/')}/v1/gateway?encoding={encoding}"
    async with _open_websocket(url, ssl_context, 16 * 2**20) as (ws, nursery):
        gateway = Gateway(ws, encoding)
        hello = await gateway.receive()
        gateway.hello = hello["d"]
        if heartbeat:
            nursery.start_soon(gateway.send_heartbeats)
        try:
            yield gateway
        finally:
            gateway.stop_heartbeats()
