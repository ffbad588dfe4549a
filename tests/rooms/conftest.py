"""App-room fixtures: a real server (settings from the `settings` marker), accounts, rooms, and
WebSocket room clients (trio-websocket through `relay.client.open_websocket`)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio_websocket
from nacl.signing import SigningKey

from relay.client import open_websocket
from relay.protocol.rooms import Kind, decode_server_binary, encode_binary
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import trio

    from relay.client import RelayClient
    from tests.conftest import RunningServer

# Long enough that nothing expires by accident; tests of the graces set their own.
ROOM_SETTINGS: dict[str, Any] = {"room_reconnect_grace_s": 10.0, "room_empty_grace_s": 10.0}


@pytest.fixture
async def rooms_server(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    overrides = dict(ROOM_SETTINGS)
    marker = request.node.get_closest_marker("settings")
    if marker is not None:
        overrides.update(marker.kwargs)
    running, shutdown = await start_server(nursery, settings_for(tmp_path, **overrides))
    yield running
    await shutdown()


async def account(server: RunningServer, name: str) -> RelayClient:
    """A logged-in account (Ed25519 key login: no password hashing, so fast)."""
    key = SigningKey.generate()
    client = server.client()
    await client.register(name, public_key=bytes(key.verify_key))
    await client.login_with_key(name, key)
    return client


async def new_room(client: RelayClient, **body: Any) -> dict[str, Any]:
    room: dict[str, Any] = await client.call(
        "POST", "/v1/api/rooms", {"max_clients": 8, "protocol": "peer", **body}
    )
    return room


class Closed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class RoomClient:
    """One WebSocket client of a room: JSON events as dicts, binary frames as tuples."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.connected: dict[str, Any] = {}

    @property
    def client_id(self) -> int:
        return int(self.connected["client_id"])

    async def send(self, type_: str, **fields: Any) -> None:
        await self.ws.send_message(json.dumps({"type": type_, **fields}))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send_message(data)

    async def send_binary(self, kind: Kind, target: int, payload: bytes) -> None:
        await self.ws.send_message(encode_binary(kind, target, payload))

    async def receive(self) -> dict[str, Any] | tuple[Kind, int, bytes]:
        try:
            data = await self.ws.get_message()
        except trio_websocket.ConnectionClosed as e:
            raise Closed(e.reason.code if e.reason else None) from None
        if isinstance(data, bytes):
            return decode_server_binary(data)
        event: dict[str, Any] = json.loads(data)
        return event

    async def event(self, type_: str | None = None) -> dict[str, Any]:
        """The next frame, which must be a JSON event (of `type_`, if given)."""
        event = await self.receive()
        assert isinstance(event, dict), event
        if type_ is not None:
            assert event["type"] == type_, event
        return event

    async def binary(self) -> tuple[Kind, int, bytes]:
        frame = await self.receive()
        assert isinstance(frame, tuple), frame
        return frame

    async def close_code(self) -> int | None:
        """Read until the server closes; the close code (frames before it are skipped)."""
        try:
            while True:
                await self.receive()
        except Closed as e:
            return e.code

    async def expect_error(self, code: str, close: int | None = None) -> dict[str, Any]:
        """The next frame is `error` with `code`; then, if `close`, the connection closes so."""
        error = await self.event("error")
        assert error["code"] == code, error
        if close is not None:
            assert await self.close_code() == close
        return error

    async def join(self, room_id: str, secret: str) -> dict[str, Any]:
        await self.send("connect", room_id=room_id, secret=secret)
        self.connected = await self.event("connected")
        return self.connected

    async def rejoin(self, room_id: str, client_id: int, client_secret: str) -> dict[str, Any]:
        await self.send(
            "reconnect", room_id=room_id, client_id=client_id, client_secret=client_secret
        )
        self.connected = await self.event("connected")
        return self.connected


@asynccontextmanager
async def open_client(server: RunningServer) -> AsyncIterator[RoomClient]:
    """A connection to /v1/websocket that has not joined yet."""
    async with open_websocket(server.ws_url + "/v1/websocket") as ws:
        yield RoomClient(ws)


@asynccontextmanager
async def joined(server: RunningServer, room: dict[str, Any]) -> AsyncIterator[RoomClient]:
    """A client that joined `room` (using its id and secret)."""
    async with open_client(server) as client:
        await client.join(room["id"], room["secret"])
        yield client
