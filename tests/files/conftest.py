"""A server with small file limits, and a world of people in it (tests/rest/test_messages)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest

from tests.conftest import settings_for, start_server
from tests.rest.test_messages import World, make_world

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import trio

MiB = 1024 * 1024


@pytest.fixture
async def files_world(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[World]:
    settings = settings_for(
        tmp_path, max_upload_bytes=2 * MiB, upload_quota_bytes=5 * MiB, min_free_disk_bytes=0
    )
    running, shutdown = await start_server(nursery, settings)
    async with AsyncExitStack() as stack:
        yield await make_world(stack, running)
    await shutdown()
