"""Byte-relay fixtures: a real server with the relayd listener on a free port, and raw clients.

`RelaydClient` speaks the wire format over a plain `trio.open_tcp_stream`, with the sans-I/O
parser reading what the server sends. `login(id)` confirms the login the only way the protocol
allows (there is no reply): it sends a transfer to itself and waits for it to come back.
"""

from __future__ import annotations

import contextlib
import socket
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import trio

from relay.client import open_websocket
from relay.protocol import relayd
from relay.protocol.relayd import Parser, Transfer
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    import trio_websocket

    from relay.byterelay import ByteRelay
    from tests.conftest import RunningServer

SYNC = b"sync"


class RelaydClient:
    """A relayd client on a raw TCP stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = Parser(relayd.MAX_PAYLOAD_LEN)
        self.client_id: bytes | None = None

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def login(self, client_id: bytes, *, confirm: bool = True) -> None:
        self.client_id = client_id
        await self.send_raw(relayd.encode_login(client_id))
        if confirm:
            await self.sync()

    async def sync(self) -> None:
        """Send a frame to ourselves and wait for it: everything sent before was handled."""
        assert self.client_id is not None
        await self.send(self.client_id, SYNC)
        frame = await self.receive()
        assert (frame.sender, frame.payload) == (self.client_id, SYNC)

    async def send(self, to: bytes, payload: bytes) -> None:
        assert self.client_id is not None
        await self.send_raw(relayd.encode_transfer(self.client_id, to, payload))

    async def heartbeat(self) -> None:
        assert self.client_id is not None
        await self.send_raw(relayd.encode_heartbeat(self.client_id))

    async def receive(self) -> Transfer:
        while True:
            frame = self.parser.next_frame()
            if frame is not None:
                assert isinstance(frame, Transfer)  # the server sends nothing else
                return frame
            data = await self.stream.receive_some(1024 * 1024)
            if not data:
                raise EOFError("the server closed the connection")
            self.parser.feed(data)

    async def read_to_eof(self) -> bytes:
        """Everything the server still sends until it closes (a reset counts as a close)."""
        chunks: list[bytes] = []
        with contextlib.suppress(trio.BrokenResourceError):
            while data := await self.stream.receive_some(1024 * 1024):
                chunks.append(data)
        return b"".join(chunks)

    async def expect_silent_close(self) -> None:
        """The server closes this connection without sending anything (more)."""
        assert self.parser.buffered_bytes == 0
        assert await self.read_to_eof() == b""


@dataclass
class RelayServer:
    server: RunningServer
    stack: AsyncExitStack

    @property
    def hub(self) -> ByteRelay:
        hub = self.server.runtime.byte_relay
        assert hub is not None
        return hub

    @property
    def address(self) -> tuple[str, int]:
        return self.server.runtime.relay_addresses[0]

    @property
    def ws_url(self) -> str:
        return f"{self.server.ws_url}/v1/relay"

    async def connect(self, *, rcvbuf: int | None = None) -> RelaydClient:
        """A TCP client, closed at the end of the test; `rcvbuf` shrinks its receive buffer."""
        host, port = self.address
        if rcvbuf is None:
            stream = await trio.open_tcp_stream(host, port)
        else:
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            await sock.connect((host, port))
            stream = trio.SocketStream(sock)
        await self.stack.enter_async_context(stream)
        return RelaydClient(stream)

    async def client(self, client_id: bytes) -> RelaydClient:
        """A TCP client, logged in and confirmed."""
        client = await self.connect()
        await client.login(client_id)
        return client

    def ws(self) -> AbstractAsyncContextManager[trio_websocket.WebSocketConnection]:
        """A WebSocket to /v1/relay (open it in the test's task: it holds a nursery)."""
        return open_websocket(self.ws_url)

    @asynccontextmanager
    async def ws_client(
        self, client_id: bytes
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """A WebSocket client, logged in and confirmed like `RelaydClient.login`."""
        async with self.ws() as ws:
            await ws.send_message(relayd.encode_login(client_id))
            await ws.send_message(relayd.encode_transfer(client_id, client_id, SYNC))
            frame = relayd.decode(await ws_bytes(ws))
            assert isinstance(frame, Transfer)
            assert frame.payload == SYNC
            yield ws


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll the hub's counters: it has no events to wait on, and tests must not add any."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.01)


async def ws_bytes(ws: trio_websocket.WebSocketConnection) -> bytes:
    message = await ws.get_message()
    assert isinstance(message, bytes)
    return message


@asynccontextmanager
async def running_relay(
    nursery: trio.Nursery, tmp_path: Path, **overrides: object
) -> AsyncIterator[RelayServer]:
    running, shutdown = await start_server(
        nursery, settings_for(tmp_path, relay_port=0, **overrides)
    )
    try:
        async with AsyncExitStack() as stack:
            yield RelayServer(running, stack)
    finally:
        await shutdown()


@pytest.fixture
async def relay_server(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RelayServer]:
    """The real server with the byte relay on; `@pytest.mark.settings(...)` overrides."""
    marker = request.node.get_closest_marker("settings")
    overrides = dict(marker.kwargs) if marker is not None else {}
    async with running_relay(nursery, tmp_path, **overrides) as server:
        yield server
