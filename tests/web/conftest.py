"""The web client's browser tests: a real Relay (`python -m relay serve` in a subprocess, on
free ports) and Debian's Chromium driven by Playwright's sync API.

The server runs as its own process so the browser tests need no Trio in the test process:
Playwright's sync API runs its own event loop, and the tests are plain functions. The gateway
reaches the browser through `Cutter`, a TCP forwarder the tests can cut and block, named to the
client by the `public_url` setting (so that setting is exercised too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from tests.realservers import wait_for_relay

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser

CHROMIUM = os.environ.get("RELAY_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Voice: a fake microphone (a beep) granted without a prompt, and audio that may start
    # without a gesture of a real user.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cutter:
    """A TCP forwarder to the realtime listener: `cut()` drops every connection through it,
    `block()` refuses new ones until `unblock()`, as a network that goes away would."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.blocked = False
        self.accepted = 0
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                self.accepted += 1
                try:
                    if self.blocked:
                        raise ConnectionRefusedError
                    upstream = socket.create_connection(self.target)
                except OSError:
                    client.close()
                    continue
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    def pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        with self.lock:  # each socket is the source of one pipe: closed once, here
            if source in self.open:
                self.open.remove(source)
        source.close()

    def cut(self) -> None:
        with self.lock:
            for s in self.open:  # the pipes see the end and close them
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def block(self) -> None:
        with self.lock:
            self.blocked = True

    def unblock(self) -> None:
        with self.lock:
            self.blocked = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


class WebServer:
    def __init__(self, url: str, cutter: Cutter, data: Path) -> None:
        self.url = url
        self.cutter = cutter
        self.data = data  # the data directory: relay.db for what the client stored


@pytest.fixture(scope="package")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    data: Path = tmp_path_factory.mktemp("web")
    http_port, realtime_port = free_port(), free_port()
    cutter = Cutter(realtime_port)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELAY_")},
        "RELAY_DATA_DIR": str(data),
        "RELAY_HTTP_PORT": str(http_port),
        "RELAY_REALTIME_PORT": str(realtime_port),
        "RELAY_RELAY_PORT": "off",
        "RELAY_VOICE_UDP_PORT": "0",  # any free one: other servers may hold the default
        "RELAY_PUBLIC_URL": f"http://127.0.0.1:{cutter.port}",
        "RELAY_LOG_FORMAT": "json",
        "RELAY_LOG_LEVEL": "warning",
        "RELAY_REGISTER_PER_IP": "1000",
        "RELAY_LOGIN_PER_IP": "1000",
        "RELAY_HTTP_PER_IP": "100000",
        "RELAY_MESSAGE_RATE": "1000",
        "RELAY_ACTION_RATE": "1000",
        # A small file limit, so a test meets it; push endpoints on 127.0.0.1 (a stand-in
        # push service: headless Chromium cannot subscribe with a real one offline).
        "RELAY_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
        "RELAY_FETCH_ALLOW_TEST_LOOPBACK": "true",
    }
    log = open(data / "server.log", "wb")  # noqa: SIM115  (closed below, after the server)
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve"], env=env, stderr=log)
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_for_relay(url, proc, data / "server.log")
        yield WebServer(url, cutter, data)
    finally:
        cutter.close()
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="package")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: the web client's browser tests did not run")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        # Playwright starts Chromium on a fresh temporary user-data-dir of its own (and
        # refuses one in the args); its own browser download is never used.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        # Waits end as soon as the page matches; the long bound is for a loaded CI machine
        # (a reconnect backs off up to seconds), never a sleep.
        sync_api.expect.set_options(timeout=15_000)
        yield browser
        browser.close()
