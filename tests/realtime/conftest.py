"""Fixtures: the realtime listener on a free loopback port, with the echo endpoint or others."""

from __future__ import annotations

from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest

from relay.realtime.echo import echo
from relay.realtime.listener import serve_realtime
from tests.realtime.clients import open_raw

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    import trio

    from relay.realtime.listener import Endpoint
    from tests.realtime.clients import RawClient


@pytest.fixture
def serve(nursery: trio.Nursery) -> Callable[..., Awaitable[str]]:
    """serve(endpoints, **options) starts a listener for this test; returns its ws:// URL."""

    async def start(endpoints: Mapping[str, Endpoint], **options: Any) -> str:
        urls: list[str] = await nursery.start(
            partial(serve_realtime, endpoints, "127.0.0.1", 0, **options)
        )
        return urls[0]

    return start


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    """raw(url, path=None, local_address=None) opens a raw client (handshake done if `path`,
    from `local_address` if given); closed at teardown."""
    async with AsyncExitStack() as stack:

        async def open_client(
            url: str, path: str | None = None, local_address: str | None = None
        ) -> RawClient:
            return await stack.enter_async_context(open_raw(url, path, local_address))

        yield open_client


@pytest.fixture
async def echo_url(serve: Callable[..., Awaitable[str]]) -> str:
    return await serve({"/echo": echo})
