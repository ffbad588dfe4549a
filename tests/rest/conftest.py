"""A real server shared by every test of a module, and people to talk to it.

Starting a server per test costs more than most permission tests themselves, so `shared_server`
runs one per module in its own thread (its own `trio.run`); tests reach it over HTTP and
WebSockets only, from their own Trio loop, and never touch its Runtime (it belongs to another
thread). Each test makes its own users and servers, so tests do not depend on each other.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import trio
from nacl.signing import SigningKey

from relay.client import RelayClient
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from relay.config import Settings

API = "/v1/api"
T = TypeVar("T")


@dataclass(frozen=True)
class SharedServer:
    url: str
    ws_url: str


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServer]:
    # max_pins is low so that test_pins reaches it
    settings = settings_for(tmp_path_factory.mktemp("shared"), presence_grace_s=0.2, max_pins=2)
    yield from serve_shared(settings)


def serve_shared(settings: Settings) -> Iterator[SharedServer]:
    """Run a server with `settings` in its own thread until the generator is closed (a module
    fixture that needs other settings overrides `shared_server` with this)."""
    started: queue.Queue[SharedServer | BaseException] = queue.Queue()
    stop: list[Callable[[], None]] = []

    async def serve() -> None:
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()
        stop.append(lambda: trio.from_thread.run_sync(done.set, trio_token=token))
        async with trio.open_nursery() as nursery:
            running, shutdown = await start_server(nursery, settings)
            started.put(SharedServer(running.url, running.ws_url))
            await done.wait()
            await shutdown()

    def thread_main() -> None:
        try:
            trio.run(serve)
        except BaseException as e:  # hand start-up failures to the test thread
            started.put(e)

    thread = threading.Thread(target=thread_main, name="shared-relay", daemon=True)
    thread.start()
    first = started.get(timeout=30)
    if isinstance(first, BaseException):
        raise first
    yield first
    stop[0]()
    thread.join(timeout=30)


@dataclass
class Person:
    """A logged-in user and their client; `call` raises ApiError, `status` does not."""

    client: RelayClient
    id: str
    name: str

    @property
    def token(self) -> str:
        assert self.client.access_token is not None
        return self.client.access_token

    async def call(self, method: str, path: str, body: Any = None, reason: str = "") -> Any:
        response = await self.client.request(
            method, API + path, json=body, headers={"X-Audit-Log-Reason": reason} if reason else {}
        )
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    async def status(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await self.client.request(method, API + path, json=body)
        return response.status_code, response.json() if response.content else None

    async def error(self, method: str, path: str, body: Any = None) -> tuple[int, str, str | None]:
        """(status, error code, the permission named) of a refused request."""
        status, payload = await self.status(method, path, body)
        assert payload is not None, (method, path, status)
        assert "error" in payload, (method, path, status, payload)
        error = payload["error"]
        return status, error["code"], error.get("fields", {}).get("permission")


@pytest.fixture
async def people(shared_server: SharedServer) -> AsyncIterator[Callable[[str], Awaitable[Person]]]:
    """Register and log in users (Ed25519 keys: no password hashing). Names get a unique
    suffix, since the server outlives the test."""
    clients: list[RelayClient] = []

    async def make(name: str) -> Person:
        key = SigningKey.generate()
        client = RelayClient(shared_server.url)
        clients.append(client)
        username = f"{name}_{next(_serial)}"
        user = await client.register(username, public_key=bytes(key.verify_key))
        await client.login_with_key(username, key)
        return Person(client, user["id"], username)

    yield make
    for client in clients:
        await client.aclose()


_serial = itertools.count(1)


# -- building worlds ---------------------------------------------------------------------------


async def new_server(owner: Person, name: str = "Home") -> tuple[str, str]:
    """A server and its `general` text channel."""
    server = await owner.call("POST", "/servers", {"name": name})
    text = next(c["id"] for c in server["channels"] if c["type"] == "text")
    return server["id"], text


async def join(owner: Person, server_id: str, *others: Person) -> None:
    invite = await owner.call("POST", f"/servers/{server_id}/invites")
    path = f"/invites/{invite['code']}"
    await gather(*(partial(other.call, "POST", path) for other in others))


async def add_role(owner: Person, server_id: str, permissions: int, position: int = 1) -> str:
    role = await owner.call(
        "POST",
        f"/servers/{server_id}/roles",
        {"name": f"r{position}", "permissions": str(permissions), "position": position},
    )
    role_id: str = role["id"]
    return role_id


async def give(owner: Person, server_id: str, person: Person, role_id: str) -> None:
    await owner.call("PUT", f"/servers/{server_id}/members/{person.id}/roles/{role_id}")


async def set_everyone(owner: Person, server_id: str, permissions: int) -> None:
    await owner.call(
        "PATCH", f"/servers/{server_id}/roles/{server_id}", {"permissions": str(permissions)}
    )


async def post(person: Person, channel_id: str, content: str = "hello") -> str:
    message = await person.call("POST", f"/channels/{channel_id}/messages", {"content": content})
    message_id: str = message["id"]
    return message_id


async def gather(*calls: Callable[[], Awaitable[T]]) -> list[T]:
    """Run the calls concurrently; their results in order (set-up goes faster this way: the
    server commits concurrent writes together)."""
    results: dict[int, T] = {}

    async def one(n: int, call: Callable[[], Awaitable[T]]) -> None:
        results[n] = await call()

    async with trio.open_nursery() as nursery:
        for n, call in enumerate(calls):
            nursery.start_soon(one, n, call)
    return [results[n] for n in range(len(calls))]
