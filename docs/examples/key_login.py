"""Make an account that logs in with an Ed25519 key instead of a password.

    .venv/bin/python docs/examples/key_login.py

Talks to the server at HTTP_URL (default http://127.0.0.1:8080). Each run makes a new account
with a new key: keep `key.encode()` (the 32-byte seed) to log in as it again. The client signs
a single-use challenge from the server; the key never leaves the client.
"""

import os
import secrets

import trio
from nacl.signing import SigningKey

from relay.client import RelayClient

HTTP_URL = os.environ.get("HTTP_URL", "http://127.0.0.1:8080")


async def main() -> None:
    key = SigningKey.generate()
    username = f"key_{secrets.token_hex(4)}"
    async with RelayClient(HTTP_URL) as client:
        await client.register(username, public_key=bytes(key.verify_key))
        await client.login_with_key(username, key)
        me = await client.me()
        print(me["username"], "logged in with the key", me["keys"][0]["public_key"])


trio.run(main)
