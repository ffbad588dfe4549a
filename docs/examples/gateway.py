"""Log in, connect to the gateway, post a message and see it come back as an event.

    .venv/bin/python docs/examples/gateway.py

Talks to the server at HTTP_URL and WS_URL (defaults: http://127.0.0.1:8080 and
ws://127.0.0.1:8081, where `scripts/serve` listens). Logs in as ada, registering her on the
first run, and makes her a server if she has none. relay.client is the bundled client: async,
on Trio (httpx for REST, trio-websocket for the gateway), and it sends the gateway's
heartbeats by itself, so a connection can stay open as long as you like.
"""

import os
import secrets

import trio

from relay.client import ApiError, RelayClient, open_gateway

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
    async with RelayClient(HTTP_URL) as client:
        await log_in(client, "ada", "a long password")
        async with open_gateway(WS_URL) as gateway:
            assert client.access_token is not None
            ready = await gateway.identify(client.access_token)
            print("READY:", ready["user"]["username"], "in", len(ready["servers"]), "servers")
            servers = ready["servers"]
            if not servers:
                await client.call("POST", "/v1/api/servers", {"name": "Tour"})
                servers = [(await gateway.dispatch("SERVER_CREATE"))["d"]]
            channel = next(c for c in servers[0]["channels"] if c["type"] == "text")
            nonce = secrets.token_hex(8)  # names this post: its event carries it back
            body = {"content": "hello from the gateway example", "nonce": nonce}
            await client.call("POST", f"/v1/api/channels/{channel['id']}/messages", body)
            while (event := await gateway.dispatch("MESSAGE_CREATE"))["d"]["nonce"] != nonce:
                pass  # someone else's message
            message = event["d"]
            print("MESSAGE_CREATE:", message["author"]["username"], "said", message["content"])


trio.run(main)
