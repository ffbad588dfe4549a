"""Gateway fixtures: a real server, users with tokens, a shared server, gateway connections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from nacl.signing import SigningKey

from tests.conftest import settings_for, start_server
from tests.gateway.msgpack_hub import MsgpackHub

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import trio

    from relay.client import RelayClient
    from tests.conftest import RunningServer


@dataclass
class Member:
    client: RelayClient
    user_id: str
    token: str


async def new_member(server: RunningServer, name: str) -> Member:
    key = SigningKey.generate()
    client = server.client()
    user = await client.register(name, public_key=bytes(key.verify_key))
    await client.login_with_key(name, key)
    assert client.access_token is not None
    return Member(client, user["id"], client.access_token)


async def join(owner: Member, others: list[Member], server_id: str) -> None:
    invite = await owner.client.call("POST", f"/v1/api/servers/{server_id}/invites", {})
    for member in others:
        await member.client.call("POST", f"/v1/api/invites/{invite['code']}")


GATEWAY_SETTINGS: dict[str, Any] = {"presence_grace_s": 0.2}


@pytest.fixture(params=["local", "msgpack"])
async def gateway_server(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RunningServer]:
    """The real server, with the in-process fan-out ("local") and with one that sends every
    crossing through msgpack ("msgpack"), as a broker between processes would."""
    overrides = dict(GATEWAY_SETTINGS)
    marker = request.node.get_closest_marker("settings")
    if marker is not None:
        overrides.update(marker.kwargs)
    hub_type = MsgpackHub if request.param == "msgpack" else None
    settings = settings_for(tmp_path, **overrides)
    running, shutdown = await start_server(nursery, settings, hub_type=hub_type)
    yield running
    await shutdown()
