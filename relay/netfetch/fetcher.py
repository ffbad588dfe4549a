"""`fetch`: one outgoing HTTP request to a URL that someone else chose, made safe against SSRF.

Link previews, embed images and Web Push deliveries all reach URLs that users supply; this is
the one way Relay does that. The rules (docs/embeds.md, "The fetcher's safety rules"):

- http and https only, to ports 80 and 443 unless `FetchPolicy.ports` says otherwise;
- a name is resolved once (`FetchPolicy.resolver`, injectable) and EVERY address it resolves to
  must be public (relay.netfetch.addresses); one refused address refuses the request, so a name
  cannot smuggle an internal address in beside a public one;
- the connection goes to the checked address (`PinnedBackend`): the HTTP library never looks
  the name up again, so DNS rebinding between check and connect gets nowhere; the Host header,
  TLS SNI and the certificate check still use the name;
- redirects (GET and HEAD only) are followed by hand, at most `Limits.max_redirects`, each
  target checked again from the top;
- bodies are capped while streaming (decoded bytes, so a gzip bomb stops at the cap too), and a
  Content-Length over the cap is refused before reading; one deadline covers the whole fetch
  (resolution, connects, redirects, body), so a slow drip ends there;
- content types are checked against what the caller accepts; no cookies are kept or sent (the
  transport is used without a client, so there is no cookie jar); a fixed User-Agent.

Resource handling: each call opens its own small connection pool and closes it before
returning, so nothing outlives the call. Error handling: every refusal and failure is a
`FetchError` whose `reason` is one of a few words (docs/embeds.md lists them); callers log it.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import certifi
import httpcore
import httpx
import trio

from relay.netfetch.addresses import parse_ip, refusal

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from relay.config import Settings

# An async function from a host name to the IP addresses (as text) it resolves to.
Resolver = Callable[[str], Awaitable[list[str]]]

USER_AGENT = "RelayBot/0.1 (+link previews; self-hosted Relay chat server)"
HTML_MAX_BYTES = 1024 * 1024
DEADLINE_S = 10.0
MAX_REDIRECTS = 3
MAX_URL_CHARS = 2048
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers a caller may not set: the transport owns them, or they would leak or confuse.
_OWN_HEADERS = frozenset(
    {"host", "cookie", "user-agent", "content-length", "transfer-encoding", "connection"}
)


class FetchError(Exception):
    """A refused or failed fetch. `reason` is one of: scheme, port, url, address, resolve,
    redirects, too_large, timeout, content_type, network."""

    def __init__(self, reason: str, detail: str, media_type: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.media_type = media_type  # with reason "content_type": the type refused


async def system_resolver(host: str) -> list[str]:
    """The addresses the system resolver gives for `host` (getaddrinfo, in a thread)."""
    infos = await trio.socket.getaddrinfo(host, None, type=trio.socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Where fetches may go; built once from the settings (`fetch_ports`,
    `fetch_allow_test_loopback`) and shared by every caller."""

    ports: frozenset[int] = frozenset({80, 443})
    allow_test_loopback: bool = False  # tests only: lets exactly 127.0.0.1 through
    resolver: Resolver = system_resolver
    user_agent: str = USER_AGENT
    ssl_context: ssl.SSLContext | None = None  # None: the system's CAs via certifi

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver = system_resolver) -> FetchPolicy:
        return cls(
            ports=frozenset(settings.fetch_ports),
            allow_test_loopback=settings.fetch_allow_test_loopback,
            resolver=resolver,
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """What one fetch may take. `content_types`: accepted media types, exact ("text/html") or
    by family ("image/"); empty accepts any. Checked on 2xx answers only."""

    max_bytes: int = HTML_MAX_BYTES
    deadline_s: float = DEADLINE_S
    max_redirects: int = MAX_REDIRECTS
    content_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fetched:
    """A response read whole: the final URL (after redirects), status, headers, media type
    (lower case, without parameters; "" if none) and body."""

    url: str
    status: int
    headers: httpx.Headers
    content_type: str
    body: bytes = field(repr=False)


async def fetch(
    url: str,
    policy: FetchPolicy,
    limits: Limits = Limits(),
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Fetched:
    """Make one request under `policy` and `limits` and read its answer whole.

    Any status comes back (a push sender needs 404, 410, 429); redirects are followed for GET
    and HEAD, and returned as they are for other methods.

    Raises:
        FetchError: the request was refused (scheme, port, url, address, resolve, redirects,
            content_type, too_large) or failed (timeout, network).
    """
    sent_headers = _headers(headers, policy.user_agent)
    try:
        with trio.fail_after(limits.deadline_s):
            async with _pool(policy) as (pool, backend):
                for _hop in range(limits.max_redirects + 1):
                    target = await _checked(url, policy, backend)
                    request = httpx.Request(method, target, headers=sent_headers, content=body)
                    status, response_headers, response = await _send(pool, request, limits)
                    location = response_headers.get("location")
                    if status in REDIRECT_STATUSES and location and method in ("GET", "HEAD"):
                        await response.aclose()
                        try:
                            url = str(target.join(location))
                        except (httpx.InvalidURL, ValueError) as e:
                            raise FetchError("url", f"bad redirect: {e}") from None
                        continue
                    return await _read(target, status, response_headers, response, limits)
                raise FetchError("redirects", f"more than {limits.max_redirects} redirects")
    except trio.TooSlowError:
        raise FetchError("timeout", f"not done within {limits.deadline_s:g} s") from None


def _headers(given: Mapping[str, str] | None, user_agent: str) -> dict[str, str]:
    headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"}
    for name, value in (given or {}).items():
        if name.lower() not in _OWN_HEADERS:
            headers[name] = value
    return headers


async def _checked(url: str, policy: FetchPolicy, backend: PinnedBackend) -> httpx.URL:
    """The URL parsed and its host resolved and checked; pins the checked address."""
    if len(url) > MAX_URL_CHARS:
        raise FetchError("url", f"longer than {MAX_URL_CHARS} characters")
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise FetchError("url", str(e)) from None
    if target.scheme not in ("http", "https"):
        raise FetchError("scheme", f"{target.scheme or 'no'} scheme (http and https only)")
    if target.userinfo:
        raise FetchError("url", "credentials in the URL")
    # The ASCII (IDNA) form: what the resolver gets, and what httpcore will ask to connect to.
    host = target.raw_host.decode("ascii", "replace").lower()
    if not host:
        raise FetchError("url", "no host")
    port = target.port or (443 if target.scheme == "https" else 80)
    if port not in policy.ports:
        raise FetchError("port", f"port {port} is not allowed")
    literal = parse_ip(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await policy.resolver(host)
        except OSError as e:
            raise FetchError("resolve", f"{host}: {e}") from None
        if not addresses:
            raise FetchError("resolve", f"{host}: no addresses")
    for text in addresses:
        address = parse_ip(text.partition("%")[0])
        if address is None:
            raise FetchError("resolve", f"{host}: resolver gave {text!r}")
        why = refusal(address, allow_test_loopback=policy.allow_test_loopback)
        if why is not None:
            raise FetchError("address", f"{host} -> {address}: {why}")
    backend.pin(host, port, addresses[0].partition("%")[0])
    return target


async def _send(
    pool: httpcore.AsyncConnectionPool, request: httpx.Request, limits: Limits
) -> tuple[int, httpx.Headers, httpcore.Response]:
    assert isinstance(request.stream, httpx.AsyncByteStream)
    seconds = limits.deadline_s
    core = httpcore.Request(
        method=request.method,
        url=httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        ),
        headers=request.headers.raw,
        content=request.stream,
        extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), seconds)},
    )
    with _mapped_errors():
        response = await pool.handle_async_request(core)
    return response.status, httpx.Headers(response.headers), response


async def _read(
    target: httpx.URL,
    status: int,
    headers: httpx.Headers,
    response: httpcore.Response,
    limits: Limits,
) -> Fetched:
    """Read the body (decoded, capped) and close the response whatever happens."""
    try:
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if 200 <= status < 300 and limits.content_types and not _accepts(limits, media_type):
            what = media_type or "no content type"
            raise FetchError("content_type", f"{what} not accepted", media_type)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            raise FetchError("too_large", f"Content-Length {declared} > {limits.max_bytes}")
        decoder = _Decoder(headers.get("content-encoding", ""), limits.max_bytes)
        stream = response.stream
        assert isinstance(stream, AsyncIterable)
        with _mapped_errors():
            async with aclosing(stream.__aiter__()) as parts:  # type: ignore[type-var]
                async for part in parts:
                    decoder.feed(part)
        return Fetched(str(target), status, headers, media_type, decoder.finish())
    finally:
        with _mapped_errors():
            await response.aclose()


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except httpcore.TimeoutException as e:
        raise FetchError("timeout", str(e) or type(e).__name__) from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as e:
        raise FetchError("network", str(e) or type(e).__name__) from None


class _Decoder:
    """A body as received, decoded (identity, gzip or deflate) and capped at `max_bytes`
    decoded bytes: a small compressed body cannot expand past the cap."""

    def __init__(self, encoding: str, max_bytes: int) -> None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._zlib = None
        elif encoding in ("gzip", "x-gzip", "deflate"):
            self._zlib = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
        else:
            raise FetchError("network", f"unsupported content encoding {encoding!r}")
        self._max = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        if self._zlib is not None:
            try:
                data = self._zlib.decompress(data, self._max - self._size + 1)
            except zlib.error as e:
                raise FetchError("network", f"bad compressed body: {e}") from None
        self._size += len(data)
        if self._size > self._max:
            raise FetchError("too_large", f"body over {self._max} bytes")
        self._chunks.append(data)

    def finish(self) -> bytes:
        return b"".join(self._chunks)


def _accepts(limits: Limits, media_type: str) -> bool:
    return any(
        media_type.startswith(t) if t.endswith("/") else media_type == t
        for t in limits.content_types
    )


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the address `_checked` pinned for a (host, port), never resolving the name
    itself; a host nobody pinned is refused (defence in depth: httpcore asks only for pinned
    origins)."""

    def __init__(self) -> None:
        self._inner = httpcore.TrioBackend()
        self._pins: dict[tuple[str, int], str] = {}

    def pin(self, host: str, port: int, address: str) -> None:
        self._pins[host, port] = address

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = self._pins.get((host.lower(), port))
        if address is None:
            raise FetchError("address", f"{host}:{port} was not checked")
        return await self._inner.connect_tcp(
            address, port, timeout=timeout, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise FetchError("address", "unix sockets are never used")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _pool:
    """A connection pool of one fetch, over a fresh `PinnedBackend`."""

    def __init__(self, policy: FetchPolicy) -> None:
        context = policy.ssl_context or ssl.create_default_context(cafile=certifi.where())
        self.backend = PinnedBackend()
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=context, network_backend=self.backend, max_connections=2, retries=0
        )

    async def __aenter__(self) -> tuple[httpcore.AsyncConnectionPool, PinnedBackend]:
        return self.pool, self.backend

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.aclose()
