"""The voice tests' server: short resume windows, so voice states end quickly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.cli.conftest import data_dir, relay_cli  # noqa: F401  (fixtures for test_play)
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import trio

    from tests.conftest import RunningServer


@pytest.fixture
async def voice_server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningServer]:
    settings = settings_for(
        tmp_path, voice_resume_grace_s=0.5, resume_window_s=1.0, voice_max_channels=2
    )
    running, shutdown = await start_server(nursery, settings)
    yield running
    await shutdown()
