"""Clients for tests. `ws_client` is `relay.client.open_websocket` (trio-websocket over a stream
it owns). `RawClient`: wsproto does the handshake and parses what the server sends, while the
test writes whatever bytes it likes (fragments, RSV bits, bad UTF-8, garbage)."""

from __future__ import annotations

import contextlib
import os
import struct
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, RejectConnection, Request

from relay.client import open_websocket

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from wsproto.extensions import Extension
    from wsproto.typing import Headers

ws_client = open_websocket
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """One client-to-server frame, masked as clients must; `rsv` is the 3 reserved bits."""
    mask = os.urandom(4)
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode
    n = len(payload)
    if n <= 125:
        header = bytes((first, 0x80 | n))
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


def split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


class RawClient:
    """A TCP connection to the listener; `ws` parses the server's side of the conversation."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.response_head = b""
        self._events: list[Event] = []

    @classmethod
    async def connect(cls, url: str, local_address: str | None = None) -> RawClient:
        """`local_address`: connect from another loopback address (127.0.0.2, ...)."""
        host, port = split_url(url)
        return cls(await trio.open_tcp_stream(host, port, local_address=local_address))

    async def handshake(
        self,
        path: str,
        *,
        extensions: Sequence[Extension] = (),
        extra_headers: Headers | None = None,
        then: bytes = b"",
    ) -> Event:
        """Send the upgrade request (and `then`, in the same write); return Accept or Reject."""
        request = Request(
            host="127.0.0.1",
            target=path,
            extensions=list(extensions),
            extra_headers=extra_headers or [],
        )
        await self.stream.send_all(self.ws.send(request) + then)
        while True:
            for event in self.ws.events():
                if isinstance(event, AcceptConnection | RejectConnection):
                    return event
                self._events.append(event)
            data = await self.stream.receive_some(65536)
            assert data, "the server closed before answering the handshake"
            if not self.response_head:
                self.response_head = bytes(data).partition(b"\r\n\r\n")[0]
            self.ws.receive_data(bytes(data))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def next_event(self) -> Event | None:
        """The server's next event; None when the server closed the TCP connection."""
        while not self._events:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(bytes(data))
            self._events.extend(self.ws.events())
        return self._events.pop(0)

    async def expect_close(self) -> CloseConnection:
        """Skip to the server's close frame, answer it, and see the TCP connection end."""
        while True:
            event = await self.next_event()
            assert event is not None, "TCP closed without a close frame"
            if isinstance(event, CloseConnection):
                break
        # After a protocol error the server may not wait for our answer: fine.
        with contextlib.suppress(trio.BrokenResourceError):
            await self.send(masked(CLOSE, close_payload(event.code)))
        await self.read_to_eof()
        return event

    async def read_to_eof(self) -> int:
        """Read (and count) everything until the server closes the connection."""
        total = 0
        with contextlib.suppress(trio.BrokenResourceError):  # a reset is closed all the same
            while data := await self.stream.receive_some(65536):
                total += len(data)
        return total

    async def aclose(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def open_raw(
    url: str, path: str | None = None, local_address: str | None = None
) -> AsyncIterator[RawClient]:
    """A raw client, after a successful handshake for `path` if given; closed on exit."""
    client = await RawClient.connect(url, local_address)
    async with client.stream:
        if path is not None:
            assert isinstance(await client.handshake(path), AcceptConnection)
        yield client
