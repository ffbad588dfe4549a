"""Fixtures of the cluster tests: `three_nodes` (tests/cluster/nodes.py)."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from tests.cluster.nodes import ThreeNodes, start_three_nodes

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[ThreeNodes]:
    """scripts/cluster: Redis, PostgreSQL, three Relay processes and nginx, once per module."""
    cluster, data = start_three_nodes()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(data, ignore_errors=True)
