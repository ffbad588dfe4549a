"""The server shell through raw sockets and HTTP: probes, the error shape, body limits, logs."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import pytest
import trio

from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import RelayClient
    from tests.conftest import RunningServer


async def raw_exchange(url: str, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a request over a plain socket (the server may stop reading mid-body); read the reply."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    received = b""
    async with stream:
        try:
            await stream.send_all(head)
            for part in body_parts:
                await stream.send_all(part)
        except trio.BrokenResourceError:
            pass  # the server answered and closed before reading it all: that is the point
        with trio.fail_after(5):  # the answer must not wait for the rest of the body
            while not _complete(received):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
    return received


def _complete(raw: bytes) -> bool:
    head, found, body = raw.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_and_json(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


async def test_healthz_and_readyz(client: RelayClient) -> None:
    response = await client.request("GET", "/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    response = await client.request("GET", "/readyz")
    assert response.status_code == 200
    ready = response.json()
    assert ready["status"] == "ready"
    assert ready["checks"] == {"database": "ok", "actors": "ok", "disk": "ok"}
    assert ready["rooms"] == {"number_of_rooms": 0, "current_clients": 0, "committed_clients": 0}
    assert ready["byte_relay"] is None  # relay_port is off in these tests
    assert ready["broker"] is None  # one process: no broker (docs/cluster.md)
    assert ready["writes_queued"] == 0  # the writer keeps up with an idle server


async def test_unknown_route_and_wrong_method_use_the_error_shape(client: RelayClient) -> None:
    response = await client.request("GET", "/v1/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_route"
    response = await client.request("GET", "/v1/api/auth/login")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    # RFC 9110 15.5.6: a 405 says which methods the resource takes (schemathesis found it out)
    assert response.headers["Allow"] == "OPTIONS, POST"
    response = await client.request("TRACE", "/v1/api/servers/1")
    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH"


async def test_declared_oversize_body_is_refused_before_reading(
    relay_server: RunningServer,
) -> None:
    limit = relay_server.settings.max_body_bytes
    head = (
        "POST /v1/api/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {limit + 1}\r\n\r\n"
    ).encode()
    # Only a little of the body is ever sent: the answer must not wait for the rest.
    raw = await raw_exchange(relay_server.url, head, [b"{"])
    status, body = status_and_json(raw)
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"  # type: ignore[index]


@pytest.mark.parametrize("total", [2 * 1024 * 1024])
async def test_streamed_oversize_body_is_refused(relay_server: RunningServer, total: int) -> None:
    head = (
        b"POST /v1/api/auth/register HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    raw = await raw_exchange(relay_server.url, head, [chunk] * (total // 0x8000) + [b"0\r\n\r\n"])
    status, body = status_and_json(raw)
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"  # type: ignore[index]


async def test_one_structured_log_line_per_request(
    client: RelayClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.http")
    await client.request("GET", "/healthz")
    await client.request("GET", "/v1/api/users/@me")
    lines = [r for r in caplog.records if r.name == "relay.http"]
    assert [(r.method, r.path, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("GET", "/healthz", 200),
        ("GET", "/v1/api/users/@me", 401),
    ]
    assert all(r.duration_ms >= 0 for r in lines)  # type: ignore[attr-defined]


async def read_response(stream: trio.SocketStream) -> bytes:
    """One whole response (with a content-length) from a kept-alive connection."""
    received = b""
    with trio.fail_after(5):
        while not _complete(received):
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed after {received!r}"
            received += chunk
    return received


async def test_a_reply_sent_before_the_body_arrived_closes_the_connection(
    relay_server: RunningServer,
) -> None:
    """hypercorn closes such a connection (its body is unread), and says so: the connection
    used to stay open and ignore its next request (the 404 ended with a cancelled close)."""
    host, port = relay_server.url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(
            b"POST /v1/api/nowhere HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n"
        )
        head = (await read_response(stream)).partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 404")
        assert b"\r\nconnection: close" in head
        with trio.fail_after(5):
            assert await stream.receive_some(100) == b""


async def test_a_kept_alive_connection_does_not_hold_up_shutdown(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A reused connection is closed at once at shutdown, not after shutdown_grace_s: it used to
    lose its keep-alive timer (and the shutdown's notice) when its first request ended."""
    settings = settings_for(tmp_path, shutdown_grace_s=5.0)
    running, shutdown = await start_server(nursery, settings)
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        # The body comes in a second packet and is read: the connection stays open.
        await stream.send_all(
            b"POST /v1/api/auth/register HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        )
        await trio.sleep(0.05)
        await stream.send_all(b"{}")
        head = (await read_response(stream)).partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 400")
        assert b"connection: close" not in head
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(stream)).startswith(b"HTTP/1.1 200")
        started = trio.current_time()
        await shutdown()
        assert trio.current_time() - started < 1.0
        assert await stream.receive_some(100) == b""


async def connect_from(url: str, source: str) -> trio.SocketStream:
    """A TCP connection to the server from `source`, one of the loopback addresses."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect((host, int(port)))
    return trio.SocketStream(sock)


async def answers(stream: trio.SocketStream) -> bool:
    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    return (await read_response(stream)).startswith(b"HTTP/1.1 200")


async def refused(stream: trio.SocketStream) -> bool:
    """Whether the server answered 503 and closed, before being sent anything."""
    received = b""
    while chunk := await stream.receive_some(65536):
        received += chunk
    status, body = status_and_json(received)
    return (status, body["error"]["code"]) == (503, "too_many_connections")  # type: ignore[index]


async def test_connections_over_a_cap_get_503_until_one_ends(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, max_connections=3, max_connections_per_ip=2)
    running, shutdown = await start_server(nursery, settings)
    with trio.fail_after(5):
        first = await connect_from(running.url, "127.0.0.1")
        second = await connect_from(running.url, "127.0.0.1")
        assert await answers(first)
        assert await answers(second)
        async with await connect_from(running.url, "127.0.0.1") as third:
            assert await refused(third)
        await first.aclose()
        await trio.testing.wait_all_tasks_blocked()  # the server's side of it has ended too
        again = await connect_from(running.url, "127.0.0.1")
        assert await answers(again)
        # The total cap (3) counts every address.
        other = await connect_from(running.url, "127.0.0.2")
        assert await answers(other)
        async with await connect_from(running.url, "127.0.0.3") as over:
            assert await refused(over)
        for stream in (second, again, other):
            await stream.aclose()
    await shutdown()


async def test_a_body_that_does_not_arrive_in_time_gets_408(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, body_timeout_s=0.5))
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        started = trio.current_time()
        await stream.send_all(
            b"POST /v1/api/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        raw = await read_response(stream)
        assert trio.current_time() - started >= 0.5
        status, body = status_and_json(raw)
        assert (status, body["error"]["code"]) == (408, "request_timeout")  # type: ignore[index]
        assert b"\r\nconnection: close" in raw.lower()
        with trio.fail_after(5):
            assert await stream.receive_some(100) == b""
    await shutdown()
