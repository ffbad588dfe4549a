"""REST behind a reverse proxy (`trusted_proxies`): the per-IP limits and the connection cap key
on the client X-Forwarded-For names when, and only when, the request comes from a trusted proxy.
Clients connect from other loopback addresses (127.0.0.2 is the proxy, 127.0.0.3 a stranger)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.conftest import RunningServer

PROXY, STRANGER = "127.0.0.2", "127.0.0.3"


@pytest.fixture
async def behind_proxy(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    """A server trusting PROXY; `@pytest.mark.settings(...)` adds settings."""
    marker = request.node.get_closest_marker("settings")
    overrides = marker.kwargs if marker is not None else {}
    settings = settings_for(tmp_path, trusted_proxies=[PROXY], **overrides)
    running, shutdown = await start_server(nursery, settings)
    yield running
    await shutdown()


async def refresh(
    server: RunningServer, local: str, forwarded_for: str | None = None, request_id: str = ""
) -> httpx.Response:
    """POST /v1/api/auth/refresh with a bogus token (401): each one spends a login attempt of
    the client's address (login_per_ip)."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    if request_id:
        headers["X-Request-Id"] = request_id
    transport = httpx.AsyncHTTPTransport(local_address=local)
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as http:
        with trio.fail_after(5):
            return await http.post(
                "/v1/api/auth/refresh", json={"refresh_token": "bogus"}, headers=headers
            )


@pytest.mark.settings(login_per_ip=2)
async def test_per_ip_limits_key_on_the_client_a_trusted_proxy_names(
    behind_proxy: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.http")
    # Two clients behind the proxy each get their own two attempts.
    for client in ["203.0.113.1", "203.0.113.2"]:
        for _ in range(2):
            assert (await refresh(behind_proxy, PROXY, f"6.6.6.6, {client}")).status_code == 401
    assert (await refresh(behind_proxy, PROXY, "203.0.113.1")).status_code == 429
    # The proxy's own requests (no header) are the proxy's address.
    assert (await refresh(behind_proxy, PROXY)).status_code == 401
    # Anyone else is its own address, whatever X-Forwarded-For it writes.
    for forwarded in ["203.0.113.3", "203.0.113.4"]:
        assert (await refresh(behind_proxy, STRANGER, forwarded)).status_code == 401
    assert (await refresh(behind_proxy, STRANGER, "203.0.113.5")).status_code == 429
    ips = [r.ip for r in caplog.records if r.name == "relay.http"]  # type: ignore[attr-defined]
    assert ips == [
        *["203.0.113.1"] * 2,
        *["203.0.113.2"] * 2,
        "203.0.113.1",
        PROXY,
        *[STRANGER] * 3,
    ]


async def test_request_ids_are_taken_from_a_trusted_proxy_only(
    behind_proxy: RunningServer,
) -> None:
    through = await refresh(behind_proxy, PROXY, "203.0.113.1", request_id="nginx-id-1")
    assert through.headers["X-Request-Id"] == "nginx-id-1"
    direct = await refresh(behind_proxy, STRANGER, request_id="chosen-by-client")
    assert direct.headers["X-Request-Id"] != "chosen-by-client"
    assert len(direct.headers["X-Request-Id"]) == 16


async def get_on_open_connection(url: str, local: str) -> tuple[trio.SocketStream, bytes]:
    """GET /healthz on a new connection kept open afterwards; the connection and the reply's
    status line."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port), local_address=local)
    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
    reply = b""
    while b"\r\n" not in reply:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        reply += chunk
    return stream, reply.partition(b"\r\n")[0]


@pytest.mark.settings(max_connections_per_ip=1)
async def test_a_trusted_proxys_connections_are_not_one_addresss_share(
    behind_proxy: RunningServer,
) -> None:
    """max_connections_per_ip is 1: the proxy may hold more (each may carry many clients'
    requests); a stranger's second connection is refused."""
    streams = []
    with trio.fail_after(5):
        for local, expected in [
            (PROXY, b"HTTP/1.1 200"),
            (PROXY, b"HTTP/1.1 200"),
            (PROXY, b"HTTP/1.1 200"),
            (STRANGER, b"HTTP/1.1 200"),
            (STRANGER, b"HTTP/1.1 503"),
        ]:
            stream, status = await get_on_open_connection(behind_proxy.url, local)
            streams.append(stream)
            assert status.startswith(expected), (local, status)
    for stream in streams:
        await stream.aclose()
