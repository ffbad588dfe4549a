"""The realtime listener: the upgrade handshake and its failures, routing by path, what an
endpoint learns about the request, TLS, IPv6 and shutdown."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
import trustme
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, TextMessage
from wsproto.extensions import PerMessageDeflate

from relay.forwarded import TrustedProxies
from relay.protocol import wsframe
from relay.realtime.connection import ConnectionClosed
from relay.realtime.echo import echo
from relay.realtime.gate import Gate
from relay.realtime.listener import serve_realtime
from tests.realtime.clients import CLOSE, TEXT, close_payload, masked, ws_client

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from relay.realtime.connection import Connection
    from relay.realtime.listener import Request
    from tests.realtime.clients import RawClient

    Serve = Callable[..., Awaitable[str]]
    Raw = Callable[..., Awaitable[RawClient]]


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def http_exchange(raw: Raw, url: str, request: bytes) -> bytes:
    """Send raw bytes instead of a handshake; return all the server sends before closing."""
    client = await raw(url)
    await client.send(request)
    received = b""
    while data := await client.stream.receive_some(65536):
        received += data
    return received


async def test_reports_url_and_serves_echo(serve: Serve) -> None:
    url = await serve({"/echo": echo})
    assert url.startswith("ws://127.0.0.1:")
    assert int(url.rsplit(":", 1)[1]) > 0
    with trio.fail_after(5):
        async with ws_client(url + "/echo") as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"


async def test_unknown_path_is_404(echo_url: str, raw: Raw) -> None:
    with trio.fail_after(5):
        client = await raw(echo_url)
        rejected = await client.handshake("/nowhere")
        assert isinstance(rejected, RejectConnection)
        assert rejected.status_code == 404
        assert await client.read_to_eof() == 0


async def test_plain_http_gets_426(echo_url: str, raw: Raw) -> None:
    with trio.fail_after(5):
        response = await http_exchange(raw, echo_url, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 426
    assert b"\r\nupgrade: websocket\r\n" in response.lower()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        # A WebSocket version this server does not speak: 426 with the one it does.
        (
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            426,
        ),
        # No key.
        (
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
        # Not a GET.
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Content-Length: 0\r\n\r\n",
            405,
        ),
        # HTTP/1.0 cannot upgrade.
        (
            b"GET /echo HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
    ],
)
async def test_bad_upgrade_requests_are_refused(
    echo_url: str, raw: Raw, request_head: bytes, status: int
) -> None:
    with trio.fail_after(5):
        response = await http_exchange(raw, echo_url, request_head)
    assert status_of(response) == status


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello on a plain port
        b"\x81\x85\x00\x00\x00\x00hello",  # a WebSocket frame before any handshake
        b"HELLO\r\n\r\n",
        b"x" * 20_000,  # no line end at all: over the request-head limit
    ],
)
async def test_garbage_instead_of_a_handshake_is_closed(
    echo_url: str, raw: Raw, garbage: bytes
) -> None:
    with trio.fail_after(5):
        response = await http_exchange(raw, echo_url, garbage)
    assert response == b"" or status_of(response) in (400, 431)
    async with ws_client(echo_url + "/echo") as ws:  # and the listener is fine
        await ws.send_message("ok")
        assert await ws.get_message() == "ok"


@pytest.mark.parametrize("sent", [b"", b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"])
async def test_unfinished_handshake_is_dropped_after_the_timeout(
    serve: Serve, raw: Raw, sent: bytes
) -> None:
    url = await serve({"/echo": echo}, handshake_timeout_s=0.5)
    with trio.fail_after(5):
        client = await raw(url)
        await client.send(sent)
        assert await client.read_to_eof() == 0  # closed without an answer


async def test_permessage_deflate_is_never_accepted(echo_url: str, raw: Raw) -> None:
    with trio.fail_after(5):
        client = await raw(echo_url)
        accepted = await client.handshake("/echo", extensions=[PerMessageDeflate()])
        assert isinstance(accepted, AcceptConnection)
        assert accepted.extensions == []
        assert b"sec-websocket-extensions" not in client.response_head.lower()
        await client.send(masked(TEXT, b"plain"))
        assert await client.next_event() == TextMessage(data="plain")


async def test_frames_sent_with_the_handshake_are_not_lost(echo_url: str, raw: Raw) -> None:
    with trio.fail_after(5):
        client = await raw(echo_url)
        frames = masked(TEXT, b"early") + masked(CLOSE, close_payload(1000))
        assert isinstance(await client.handshake("/echo", then=frames), AcceptConnection)
        assert await client.next_event() == TextMessage(data="early")
        assert await client.next_event() == CloseConnection(code=1000, reason="")


async def test_endpoint_sees_path_query_headers_and_address(serve: Serve) -> None:
    async def describe(conn: Connection, request: Request) -> None:
        info = {
            "path": request.path,
            "query": dict(request.query),
            "x-test": request.headers.get("x-test"),
            "host": request.headers.get("host"),
            "remote": request.remote[0] if request.remote else None,
        }
        await conn.send(wsframe.text_frame(json.dumps(info)))

    url = await serve({"/v1/info": describe})
    with trio.fail_after(5):
        async with ws_client(url + "/v1/info?encoding=msgpack&a=1&a=2&empty=") as ws:
            info = json.loads(await ws.get_message())
    assert info == {
        "path": "/v1/info",
        "query": {"encoding": "msgpack", "a": "1", "empty": ""},
        "x-test": None,
        "host": "127.0.0.1",
        "remote": "127.0.0.1",
    }


async def test_wss_with_tls(serve: Serve) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    url = await serve({"/echo": echo}, ssl_context=server_context)
    assert url.startswith("wss://127.0.0.1:")
    with trio.fail_after(5):
        async with ws_client(url + "/echo", ssl_context=client_context) as ws:
            await ws.send_message(b"secret")
            assert await ws.get_message() == b"secret"


async def test_tls_handshake_counts_against_the_handshake_timeout(serve: Serve, raw: Raw) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    url = await serve({"/echo": echo}, ssl_context=server_context, handshake_timeout_s=0.5)
    with trio.fail_after(5):
        client = await raw(url.replace("wss://", "ws://"))  # TCP only, no TLS hello
        assert await client.read_to_eof() == 0


async def test_ipv6_url_is_bracketed(nursery: trio.Nursery) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        urls: list[str] = await nursery.start(partial(serve_realtime, {"/echo": echo}, "::1", 0))
    except OSError:
        pytest.skip("cannot bind ::1 here")
    [url] = urls
    assert url.startswith("ws://[::1]:")
    with trio.fail_after(5):
        async with ws_client(url + "/echo") as ws:
            await ws.send_message("over IPv6")
            assert await ws.get_message() == "over IPv6"


async def test_shutdown_says_going_away(nursery: trio.Nursery, raw: Raw) -> None:
    listener = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        with listener:
            await serve_realtime({"/echo": echo}, "127.0.0.1", 0, task_status=task_status)

    [url] = await nursery.start(run)
    with trio.fail_after(5):
        client = await raw(url, "/echo")
        listener.cancel()
        assert (await client.expect_close()).code == 1001
        with pytest.raises(OSError, match="failed"):  # nobody listens any more
            await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))


async def test_connections_over_a_cap_get_503_until_one_ends(serve: Serve, raw: Raw) -> None:
    gate = Gate(max_total=10, max_per_ip=2)
    url = await serve({"/echo": echo}, gate=gate)
    first = await raw(url, "/echo")
    await raw(url, "/echo")
    refused = await raw(url)
    rejected = await refused.handshake("/echo")
    assert isinstance(rejected, RejectConnection)
    assert rejected.status_code == 503
    assert gate.refused == 1
    await first.send(masked(CLOSE, close_payload(1000)))
    await first.read_to_eof()
    await trio.testing.wait_all_tasks_blocked()  # the server's side of it has ended too
    assert gate.total == 1
    again = await raw(url)
    assert isinstance(await again.handshake("/echo"), AcceptConnection)
    # The total cap counts every address.
    gate.max_total = gate.total
    other = await raw(url)
    assert isinstance(await other.handshake("/echo"), RejectConnection)


async def test_a_trusted_proxy_names_the_client_for_its_cap_and_the_endpoint(
    serve: Serve, raw: Raw
) -> None:
    async def describe(conn: Connection, request: Request) -> None:
        info = {"client": request.client, "request_id": request.request_id}
        await conn.send(wsframe.text_frame(json.dumps(info)))
        with contextlib.suppress(ConnectionClosed):
            while True:
                await conn.receive()

    gate = Gate(max_total=10, max_per_ip=1)
    url = await serve({"/info": describe}, gate=gate, proxies=TrustedProxies(["127.0.0.2"]))

    async def connect(
        local: str, forwarded_for: str, request_id: str = ""
    ) -> tuple[RawClient, AcceptConnection | RejectConnection]:
        client = await raw(url, local_address=local)
        headers = [(b"X-Forwarded-For", forwarded_for.encode())]
        if request_id:
            headers.append((b"X-Request-Id", request_id.encode()))
        answer = await client.handshake("/info", extra_headers=headers)
        assert isinstance(answer, AcceptConnection | RejectConnection)
        return client, answer

    async def info(client: RawClient) -> dict[str, str]:
        event = await client.next_event()
        assert isinstance(event, TextMessage)
        return json.loads(event.data)  # type: ignore[no-any-return]

    with trio.fail_after(5):
        # Through the proxy: the client is who X-Forwarded-For names (the rightmost entry,
        # the one the proxy added), and the proxy's request id is kept and sent back.
        first, answer = await connect("127.0.0.2", "6.6.6.6, 203.0.113.9", "req-from-proxy")
        assert isinstance(answer, AcceptConnection)
        assert b"x-request-id: req-from-proxy" in first.response_head.lower()
        assert await info(first) == {"client": "203.0.113.9", "request_id": "req-from-proxy"}
        # The per-address cap (1) is the client's, not the proxy's.
        second, _ = await connect("127.0.0.2", "203.0.113.10")
        assert (await info(second))["client"] == "203.0.113.10"
        _, answer = await connect("127.0.0.2", "203.0.113.9")
        assert isinstance(answer, RejectConnection)
        assert answer.status_code == 503
        # Anyone else is its own address, whatever it writes, and gets its own request id.
        direct, _ = await connect("127.0.0.3", "203.0.113.11", "chosen-by-client")
        described = await info(direct)
        assert described["client"] == "127.0.0.3"
        assert described["request_id"] != "chosen-by-client"
        assert len(described["request_id"]) == 16
        assert (gate.total, gate.refused) == (3, 1)
        _, answer = await connect("127.0.0.3", "203.0.113.11")  # its cap is reached at accept
        assert isinstance(answer, RejectConnection)
        # When a proxied connection ends, its client's share is given back.
        await first.send(masked(CLOSE, close_payload(1000)))
        await first.read_to_eof()
        await trio.testing.wait_all_tasks_blocked()
        assert gate.total == 2
        _, answer = await connect("127.0.0.2", "203.0.113.9")
        assert isinstance(answer, AcceptConnection)
