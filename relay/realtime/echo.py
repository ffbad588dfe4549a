"""The echo endpoint: every message goes back to its sender, text as text, binary as binary.

It exists for the Autobahn conformance suite (`echo_endpoint` in the settings mounts it at
/v1/echo) and for smoke tests. It waits for outbox room (`send`), so a client that does not
read its echoes stops being read from: TCP backpressure, not a slow-consumer close.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.protocol import wsframe
from relay.realtime.connection import ConnectionClosed

if TYPE_CHECKING:
    from relay.realtime.connection import Connection
    from relay.realtime.listener import Request


async def echo(conn: Connection, request: Request) -> None:
    """Send back every message until the client closes."""
    try:
        while True:
            message = await conn.receive()
            if isinstance(message, str):
                await conn.send(wsframe.text_frame(message))
            else:
                await conn.send(wsframe.binary_frame(message))
    except ConnectionClosed:
        return
