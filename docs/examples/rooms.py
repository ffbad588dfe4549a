"""Create an app room, join it with two clients, and broadcast from one to the other.

    .venv/bin/python docs/examples/rooms.py

Talks to the server at HTTP_URL and WS_URL (defaults: http://127.0.0.1:8080 and
ws://127.0.0.1:8081). Creating a room takes an account (ada, registered on the first run);
joining takes only the room's id and secret.
"""

import json
import os

import trio

from relay.client import ApiError, RelayClient, open_websocket

HTTP_URL = os.environ.get("HTTP_URL", "http://127.0.0.1:8080")
WS_URL = os.environ.get("WS_URL", "ws://127.0.0.1:8081")


async def log_in(client: RelayClient, username: str, password: str) -> None:
    """Log in, registering the account first if there is none of that name."""
    try:
        await client.login(username, password)
    except ApiError as e:
        if e.code != "invalid_credentials":
            raise
        await client.register(username, password)
        await client.login(username, password)


async def main() -> None:
    async with RelayClient(HTTP_URL) as api:
        await log_in(api, "ada", "a long password")
        room = await api.call("POST", "/v1/api/rooms", {"max_clients": 4, "protocol": "peer"})
        connect = {"type": "connect", "room_id": room["id"], "secret": room["secret"]}
        url = f"{WS_URL}/v1/websocket"
        async with open_websocket(url) as first, open_websocket(url) as second:
            for ws in (first, second):
                await ws.send_message(json.dumps(connect))
                print(json.loads(await ws.get_message()))  # connected: client id, host, members
            await first.send_message(json.dumps({"type": "broadcast", "data": {"x": 1}}))
            while (message := json.loads(await second.get_message()))["type"] != "broadcast":
                pass  # membership events
            print(message)  # the server says who sent it: "from" is first's client id
        await api.call("DELETE", f"/v1/api/rooms/{room['id']}")  # or it closes once empty


trio.run(main)
