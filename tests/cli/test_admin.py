"""`relay user|server|invite`: the real command against the real SQLite file, with a real server
running on the same file where the test is about what the server then does."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import trio
from nacl.signing import SigningKey

from relay.client import ApiError, GatewayClosed, open_gateway
from relay.config import Settings
from relay.protocol.gateway import Close
from tests.cli.conftest import BIN, clean_env

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from relay.client import Gateway, RelayClient
    from tests.cli.conftest import Ran
    from tests.conftest import RunningServer

    RelayCli = Callable[..., Awaitable[Ran]]

PASSWORD = "password123"


async def key_account(server: RunningServer, name: str) -> RelayClient:
    """A logged-in account with an Ed25519 key (no password hashing: fast)."""
    key = SigningKey.generate()
    client = server.client()
    await client.register(name, public_key=bytes(key.verify_key))
    await client.login_with_key(name, key)
    return client


async def close_code(gateway: Gateway) -> int | None:
    """Read until the server closes the gateway connection (within 5 s); its close code."""
    with trio.fail_after(5):
        try:
            while True:
                await gateway.receive()
        except GatewayClosed as e:
            return e.code


async def user_json(relay_cli: RelayCli, name: str) -> dict[str, object]:
    listed = await relay_cli("user", "list", "--json")
    assert listed.code == 0, listed.err
    found: dict[str, object] = next(
        u for line in listed.out.splitlines() if (u := json.loads(line))["username"] == name
    )
    return found


async def test_a_created_user_logs_in_on_the_running_server(
    relay_server: RunningServer, relay_cli: RelayCli
) -> None:
    created = await relay_cli(
        "user", "create", "alice", "--display-name", "Alice A", stdin=PASSWORD + "\n"
    )
    assert (created.code, created.err) == (0, "")
    user_id = created.out.strip()

    client = relay_server.client()
    logged_in = await client.login("alice", PASSWORD)
    assert logged_in["user"]["id"] == user_id
    assert logged_in["user"]["display_name"] == "Alice A"
    header, row = (await relay_cli("user", "list")).out.splitlines()
    assert header.split() == ["ID", "USERNAME", "DISPLAY", "NAME", "CREATED", "DISABLED", "LOGINS"]
    assert row.split()[:4] == [user_id, "alice", "Alice", "A"]
    assert row.split()[-2:] == ["-", "1"]
    assert await user_json(relay_cli, "alice") == {
        "id": user_id,
        "username": "alice",
        "display_name": "Alice A",
        "created_at": logged_in["user"]["created_at"],
        "disabled_at": None,
        "has_password": True,
        "logins": 1,
    }


async def test_bad_input_gets_one_line_and_status_2_and_changes_nothing(
    relay_cli: RelayCli, data_dir: Path
) -> None:
    missing = await relay_cli("user", "list")
    assert missing.code == 1
    assert missing.error == (
        f"relay: no database at {data_dir / 'relay.db'} (set by data_dir or database:"
        " RELAY_DATA_DIR, --config); start the server once or run `relay db migrate`"
    )
    assert not await trio.Path(data_dir).exists()

    bad_name = await relay_cli("user", "create", "no spaces", stdin=PASSWORD + "\n")
    assert bad_name.code == 2
    assert bad_name.error.startswith("relay: invalid username: Expected `str` matching regex")
    short = await relay_cli("user", "create", "alice", stdin="short\n")
    assert (short.code, short.error) == (
        2,
        "relay: invalid password: Expected `str` of length >= 8",
    )
    no_password = await relay_cli("user", "create", "alice", stdin="")
    assert (no_password.code, no_password.error) == (
        2,
        "relay: no password: type it in a terminal or give it on stdin",
    )
    assert (await relay_cli("user", "create", "alice", stdin=PASSWORD)).code == 0
    taken = await relay_cli("user", "create", "ALICE", stdin=PASSWORD)
    assert (taken.code, taken.error) == (1, "relay: that username is taken (username_taken)")
    no_args = await relay_cli("user", "create")
    assert no_args.code == 2
    assert no_args.err.splitlines()[-1].endswith("the following arguments are required: name")

    unknown_owner = await relay_cli("server", "create", "Home", "--owner", "nobody")
    assert (unknown_owner.code, unknown_owner.error) == (1, "relay: no user named 'nobody'")
    empty_name = await relay_cli("server", "create", "", "--owner", "alice")
    assert (empty_name.code, empty_name.error) == (
        2,
        "relay: invalid name: Expected `str` of length >= 1",
    )
    assert (await relay_cli("server", "create", "Home", "--owner", "alice")).code == 0
    too_many = await relay_cli("invite", "create", "Home", "--max-uses", "101")
    assert (too_many.code, too_many.error) == (
        2,
        "relay: invalid --max-uses: Expected `int` <= 100",
    )
    no_server = await relay_cli("invite", "create", "Away")
    assert (no_server.code, no_server.error) == (1, "relay: no server with id or name 'Away'")
    for name in ("ghost", "nobody"):
        unknown = await relay_cli("user", "disable", name)
        assert (unknown.code, unknown.error) == (1, f"relay: no user named {name!r}")

    users = (await relay_cli("user", "list", "--json")).out.splitlines()
    assert [json.loads(line)["username"] for line in users] == ["alice"]
    assert len((await relay_cli("server", "list", "--json")).out.splitlines()) == 1


async def test_disabling_ends_the_sessions_on_the_running_server_and_refuses_logins(
    relay_server: RunningServer, relay_cli: RelayCli
) -> None:
    """What the server does then is tested in tests/rest/test_auth.py; here, the command."""
    assert (await relay_cli("user", "create", "alice", stdin=PASSWORD)).code == 0
    alice = relay_server.client()
    await alice.login("alice", PASSWORD)

    async with open_gateway(relay_server.ws_url) as gateway:
        await gateway.identify(alice.access_token or "")
        disabled = await relay_cli("user", "disable", "alice")
        assert (disabled.code, disabled.out, disabled.err) == (
            0,
            "alice: disabled, 1 login ended\n",
            "",
        )
        assert await close_code(gateway) == Close.AUTHENTICATION_FAILED
    with pytest.raises(ApiError) as error:
        await alice.login("alice", PASSWORD)
    assert (error.value.status, error.value.code) == (403, "account_disabled")
    assert (await user_json(relay_cli, "alice"))["disabled_at"] is not None

    again = await relay_cli("user", "disable", "alice")
    assert again.out == "alice: already disabled, 0 logins ended\n"
    assert (await relay_cli("user", "enable", "alice")).out == "alice: enabled\n"
    await alice.login("alice", PASSWORD)
    assert (await relay_cli("user", "enable", "alice")).out == "alice: was not disabled\n"


async def test_set_password_ends_the_logins_unless_kept(
    relay_server: RunningServer, relay_cli: RelayCli
) -> None:
    assert (await relay_cli("user", "create", "alice", stdin=PASSWORD)).code == 0
    alice = relay_server.client()
    await alice.login("alice", PASSWORD)

    async with open_gateway(relay_server.ws_url) as gateway:
        await gateway.identify(alice.access_token or "")
        changed = await relay_cli("user", "set-password", "alice", stdin="new password 1\n")
        assert (changed.code, changed.out) == (0, "alice: password changed, 1 login ended\n")
        assert await close_code(gateway) == Close.AUTHENTICATION_FAILED
    assert (await alice.request("GET", "/v1/api/users/@me")).status_code == 401
    with pytest.raises(ApiError) as error:
        await alice.login("alice", PASSWORD)
    assert error.value.code == "invalid_credentials"
    await alice.login("alice", "new password 1")

    kept = await relay_cli(
        "user", "set-password", "alice", "--keep-logins", stdin="new password 2\n"
    )
    assert kept.out == "alice: password changed, 0 logins ended\n"
    assert (await user_json(relay_cli, "alice"))["logins"] == 1
    assert (await alice.me())["username"] == "alice"
    short = await relay_cli("user", "set-password", "alice", stdin="short\n")
    assert (short.code, short.error) == (
        2,
        "relay: invalid password: Expected `str` of length >= 8",
    )


async def test_a_server_and_invite_made_here_work_on_the_running_server(
    relay_server: RunningServer, relay_cli: RelayCli
) -> None:
    alice = await key_account(relay_server, "alice")
    bob = await key_account(relay_server, "bob")

    created = await relay_cli("server", "create", "Home base", "--owner", "alice", "--json")
    assert created.code == 0, created.err
    server = json.loads(created.out)
    assert (server["name"], server["owner"], server["members"]) == ("Home base", "alice", 1)
    assert [s["id"] for s in await alice.call("GET", "/v1/api/users/@me/servers")] == [server["id"]]

    invite = await relay_cli("invite", "create", "Home base")  # by name
    code = invite.out.strip()
    assert (invite.code, len(code)) == (0, 10)
    joined = await bob.call("POST", f"/v1/api/invites/{code}")
    assert joined["id"] == server["id"]
    once = await relay_cli(
        "invite", "create", server["id"], "--max-uses", "1", "--max-age", "0", "--json"
    )
    details = json.loads(once.out)
    assert (details["max_uses"], details["expires_at"], details["inviter_id"]) == (
        1,
        None,
        alice.user["id"] if alice.user else None,
    )
    audit = await alice.call("GET", f"/v1/api/servers/{server['id']}/audit-log")
    reasons = {e["reason"] for e in audit if e["action"] == "invite_create"}
    assert reasons == {"relay invite create (admin command)"}

    listed = await relay_cli("server", "list")
    rows = [line.split() for line in listed.out.splitlines()]
    assert rows[0] == ["ID", "NAME", "OWNER", "MEMBERS", "PUBLIC", "CREATED"]
    assert rows[1][:6] == [server["id"], "Home", "base", "alice", "2", "no"]

    assert (await relay_cli("server", "create", "Home base", "--owner", "bob")).code == 0
    ambiguous = await relay_cli("invite", "create", "Home base")
    assert (ambiguous.code, ambiguous.error) == (
        1,
        "relay: more than one server is named 'Home base': give its id",
    )


async def test_config_after_the_subcommand(relay_cli: RelayCli, tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(f'database = "{tmp_path / "elsewhere.db"}"\n')
    created = await relay_cli("user", "create", "alice", "--config", str(config), stdin=PASSWORD)
    assert created.code == 0
    assert (tmp_path / "elsewhere.db").exists()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["user"],
        ["user", "create"],
        ["user", "set-password"],
        ["user", "disable"],
        ["user", "enable"],
        ["user", "list"],
        ["server"],
        ["server", "create"],
        ["server", "list"],
        ["invite"],
        ["invite", "create"],
        ["rooms"],
        ["rooms", "list"],
        ["rooms", "create"],
        ["rooms", "close"],
        ["rooms", "say"],
        ["rooms", "tail"],
    ],
)
async def test_every_command_has_help(relay_cli: RelayCli, command: list[str]) -> None:
    helped = await relay_cli(*command, "--help")
    assert helped.code == 0
    assert helped.out.startswith(f"usage: relay {' '.join(command)} ")


async def test_serve_help_lists_every_setting_and_points_at_the_reference(
    relay_cli: RelayCli,
) -> None:
    helped = await relay_cli("serve", "--help")
    assert helped.code == 0
    assert "--config" in helped.out
    assert "Each setting is explained in docs/configuration.md." in " ".join(helped.out.split())
    for name in Settings.__struct_fields__:
        assert f"  {name} " in helped.out
        assert f" RELAY_{name.upper()} " in helped.out
    assert "  http_port" in helped.out.replace("8080", "")  # shown with its default
    assert " 8080\n" in helped.out


async def test_the_installed_command_reads_the_password_from_stdin(tmp_path: Path) -> None:
    env = clean_env(RELAY_DATA_DIR=str(tmp_path / "data"))
    created = await trio.run_process(
        [str(BIN / "relay"), "user", "create", "dave"],
        env=env,
        stdin=b"password123\n",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert (created.returncode, created.stderr) == (0, b"")
    listed = await trio.run_process(
        [str(BIN / "relay"), "user", "list", "--json"], env=env, capture_stdout=True
    )
    assert json.loads(listed.stdout)["id"] == created.stdout.decode().strip()
