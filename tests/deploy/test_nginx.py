"""docs/deploy/nginx.conf, run: the real nginx in front of a real Relay, on loopback.

The example is used as written but for what a test must change: its listen ports (free loopback
ports, IPv4 only), Relay's ports and the certificate (a throwaway CA's, from trustme). Each
change must match the example exactly, so a test that passes still tests the example. nginx runs
as the current user with a prefix in tmp_path (pid, logs, temp files).

Addresses: the client connects from 127.0.0.3 and nginx connects to Relay from 127.0.0.2
(`proxy_bind`, the test's only addition), the one address Relay trusts; so Relay telling the
client's address from the proxy's is visible, and so is a forged X-Forwarded-For being ignored.

Skipped, saying why, where nginx is not installed (Debian: `apt-get install nginx`; .ci/run
installs it).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
import trio_websocket
import trustme

from relay.client import Gateway
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from tests.conftest import RunningServer

EXAMPLE = Path(__file__).parents[2] / "docs" / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROXY, CLIENT = "127.0.0.2", "127.0.0.3"  # nginx -> Relay, client -> nginx

pytestmark = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK),
    reason="nginx is not installed (Debian: apt-get install nginx), so docs/deploy/nginx.conf "
    "was not run",
)


def replace(text: str, old: str, new: str, count: int = 1) -> str:
    """`text` with `old` replaced, which must occur exactly `count` times."""
    assert text.count(old) == count, f"{old!r} is not in {EXAMPLE} {count} time(s)"
    return text.replace(old, new)


def free_port() -> int:
    """A port free now (nginx binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Nginx:
    def __init__(self, prefix: Path, http_port: int, https_port: int) -> None:
        self.prefix = prefix
        self.http_port = http_port
        self.https_port = https_port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def access_log(self) -> str:
        return (self.prefix / "access.log").read_text()


def site_config(
    relay: RunningServer, cert: Path, key: Path, http_port: int, https_port: int
) -> str:
    rest_port = int(relay.url.rsplit(":", 1)[1])
    realtime_port = int(relay.ws_url.rsplit(":", 1)[1])
    site = EXAMPLE.read_text()
    site = replace(site, "    listen [::]:80;\n", "")
    site = replace(site, "    listen [::]:443 ssl http2;\n", "")
    site = replace(site, "listen 80;", f"listen 127.0.0.1:{http_port};")
    site = replace(site, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    site = replace(site, "server 127.0.0.1:8080;", f"server 127.0.0.1:{rest_port};")
    site = replace(site, "server 127.0.0.1:8081;", f"server 127.0.0.1:{realtime_port};")
    site = replace(site, "/etc/letsencrypt/live/chat.example.com/fullchain.pem", str(cert))
    return replace(site, "/etc/letsencrypt/live/chat.example.com/privkey.pem", str(key))


def main_config(prefix: Path) -> str:
    """What /etc/nginx/nginx.conf would be, for an unprivileged nginx in `prefix`."""
    user = ""
    if os.geteuid() == 0:  # else workers would switch to `nobody`
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = " ".join(
        f"{kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
{user}
events {{ worker_connections 64; }}
http {{
    log_format relay '$remote_addr "$request" $status $request_id';
    access_log {prefix / "access.log"} relay;
    {temp}
    proxy_bind {PROXY};
    include {prefix / "relay.conf"};
}}
"""


@pytest.fixture
async def relay(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningServer]:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, trusted_proxies=[PROXY]))
    yield running
    await shutdown()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def nginx(relay: RunningServer, ca: trustme.CA, tmp_path: Path) -> AsyncIterator[Nginx]:
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    issued = ca.issue_cert("127.0.0.1", "chat.example.com")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    http_port, https_port = free_port(), free_port()
    (prefix / "relay.conf").write_text(site_config(relay, cert, key, http_port, https_port))
    (prefix / "nginx.conf").write_text(main_config(prefix))
    command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    command += ["-e", str(prefix / "error.log")]
    checked = await trio.run_process([*command, "-t"], capture_stderr=True, check=False)
    assert checked.returncode == 0, checked.stderr.decode()
    process = await trio.lowlevel.open_process(command, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(10):
            while True:  # an external process: poll until it accepts
                assert process.poll() is None, (prefix / "error.log").read_text()
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", https_port)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.02)
        yield Nginx(prefix, http_port, https_port)
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_rest_and_the_gateway_through_nginx(
    nginx: Nginx, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    context = trusting(ca)
    transport = httpx.AsyncHTTPTransport(local_address=CLIENT, verify=context)
    with trio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url=nginx.url) as http:
            # REST through nginx, with a forged X-Forwarded-For that must change nothing.
            forged = {"X-Forwarded-For": "6.6.6.6"}
            body = {"username": "proxied", "password": "password123"}
            response = await http.post("/v1/api/auth/register", json=body, headers=forged)
            assert response.status_code == 201, response.text
            user_id = response.json()["id"]
            login = await http.post("/v1/api/auth/login", json=body)
            assert login.status_code == 200
            token = login.json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            guild = (await http.post("/v1/api/servers", json={"name": "Home"}, headers=auth)).json()
            channel = next(c["id"] for c in guild["channels"] if c["type"] == "text")

            # The gateway through nginx: HELLO, IDENTIFY -> READY, then a message posted over
            # REST (through nginx too) arrives as MESSAGE_CREATE.
            async with open_wss(nginx, "/v1/gateway?encoding=json", context) as ws:
                handshake_id = dict(ws.handshake_headers)[b"x-request-id"].decode()
                gateway = Gateway(ws, "json")
                assert (await gateway.receive())["op"] == 10  # HELLO
                ready = await gateway.identify(token)
                assert ready["user"]["id"] == user_id
                posted = await http.post(
                    f"/v1/api/channels/{channel}/messages",
                    json={"content": "through nginx"},
                    headers=auth,
                )
                assert posted.status_code == 201
                event = await gateway.dispatch("MESSAGE_CREATE")
                assert event["d"]["content"] == "through nginx"

            # A body over max_body_bytes (1 MiB): refused by nginx, in Relay's error shape.
            big = await http.post("/v1/api/auth/register", content=b"x" * 1_500_000, headers=auth)
            assert big.status_code == 413
            assert big.json()["error"]["code"] == "payload_too_large"

            # The plain-HTTP server only redirects.
            async with httpx.AsyncClient() as plain:
                redirect = await plain.get(f"http://127.0.0.1:{nginx.http_port}/v1/api/x?y=1")
            assert redirect.status_code == 301
            assert redirect.headers["Location"] == "https://127.0.0.1/v1/api/x?y=1"

        # Both finish their side of the WebSocket after the client's close: nginx logs the
        # 101 then, and Relay its "connection closed" line.
        upgrade = f'"GET /v1/gateway?encoding=json HTTP/1.1" 101 {handshake_id}'
        await eventually(lambda: upgrade in nginx.access_log())
        await eventually(lambda: any(r.getMessage() == "connection closed" for r in caplog.records))

    # Relay saw the client's address (not nginx's, not the forged one) and nginx's request ids,
    # which it returned as X-Request-Id and nginx logged.
    requests = [r for r in caplog.records if r.name == "relay.http" and r.getMessage() == "request"]
    assert [(r.path, r.ip) for r in requests] == [  # type: ignore[attr-defined]
        ("/v1/api/auth/register", CLIENT),
        ("/v1/api/auth/login", CLIENT),
        ("/v1/api/servers", CLIENT),
        (f"/v1/api/channels/{channel}/messages", CLIENT),
    ]
    [gateway_line] = [r for r in caplog.records if r.getMessage() == "connection closed"]
    assert gateway_line.ip == CLIENT  # type: ignore[attr-defined]
    assert gateway_line.user == user_id  # type: ignore[attr-defined]
    assert gateway_line.code == 1000  # type: ignore[attr-defined]
    assert gateway_line.request_id == handshake_id  # type: ignore[attr-defined]
    assert login.headers["X-Request-Id"] == requests[1].request_id  # type: ignore[attr-defined]
    logged = nginx.access_log()
    for request_id in [handshake_id, *(r.request_id for r in requests)]:  # type: ignore[attr-defined]
        assert re.search(rf'^{CLIENT} "[^"]*" \d+ {request_id}$', logged, re.MULTILINE), logged


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait for what another process (nginx) or the server's other side does (the caller's
    deadline bounds it)."""
    while True:  # polling: nginx's log file cannot be waited on with a trio.Event
        if condition():
            return
        await trio.sleep(0.01)


@asynccontextmanager
async def open_wss(
    nginx: Nginx, resource: str, context: ssl.SSLContext
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A WebSocket to nginx from CLIENT (relay.client.open_websocket picks no local address)."""
    tcp = await trio.open_tcp_stream("127.0.0.1", nginx.https_port, local_address=CLIENT)
    stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", resource)
        try:
            yield ws
        finally:
            await ws.aclose()
