"""`relay user|server|invite` and `relay db migrate` on PostgreSQL (the same queries through the
adapter), with a server running on the same database; `relay backup|restore|check` refuse."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from relay.client import ApiError, open_gateway
from relay.protocol.gateway import Close
from relay.storage.schema import LATEST_VERSION
from tests.cli.conftest import BIN, clean_env
from tests.cli.test_admin import PASSWORD, close_code, user_json
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from pathlib import Path

    from tests.cli.test_admin import RelayCli
    from tests.realservers import PostgresServer


async def test_admin_commands_on_postgresql_reach_the_running_server(
    nursery: trio.Nursery,
    tmp_path: Path,
    postgres: PostgresServer,
    relay_cli: RelayCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = postgres.new_database()
    monkeypatch.setenv("RELAY_DATABASE", dsn)
    # A process of its own: `relay db migrate` sets up logging, which in-process would outlive
    # the test's captured output.
    migrated = await trio.run_process(
        [str(BIN / "relay"), "db", "migrate"],
        env=clean_env(RELAY_DATABASE=dsn),
        capture_stdout=True,
        capture_stderr=True,
    )
    assert migrated.stdout == f"postgresql: schema version {LATEST_VERSION}\n".encode()
    running, shutdown = await start_server(nursery, settings_for(tmp_path, database=dsn))
    assert (await relay_cli("user", "create", "alice", stdin=PASSWORD)).code == 0
    taken = await relay_cli("user", "create", "ALICE", stdin=PASSWORD)
    assert (taken.code, taken.error) == (1, "relay: that username is taken (username_taken)")
    alice = running.client()
    await alice.login("alice", PASSWORD)
    server_id = (await relay_cli("server", "create", "Home", "--owner", "alice")).out.strip()
    assert [s["id"] for s in await alice.call("GET", "/v1/api/users/@me/servers")] == [server_id]
    code = (await relay_cli("invite", "create", "Home")).out.strip()
    assert (await alice.call("GET", f"/v1/api/invites/{code}"))["server"]["id"] == server_id

    async with open_gateway(running.ws_url) as gateway:
        await gateway.identify(alice.access_token or "")
        disabled = await relay_cli("user", "disable", "alice")
        assert disabled.out == "alice: disabled, 1 login ended\n"
        assert await close_code(gateway) == Close.AUTHENTICATION_FAILED
    with pytest.raises(ApiError) as error:
        await alice.login("alice", PASSWORD)
    assert (error.value.status, error.value.code) == (403, "account_disabled")
    assert (await user_json(relay_cli, "alice"))["disabled_at"] is not None

    for command in (["backup", str(tmp_path / "copy.db")], ["restore", str(tmp_path / "x.db")]):
        refused = await relay_cli(*command)
        assert refused.code == 2
        assert "pg_dump" in refused.error
    checked = await relay_cli("check")
    assert checked.code == 1
    assert "pg_dump" in checked.out
    await alice.aclose()
    await shutdown()
