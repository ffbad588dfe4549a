"""docs/deploy/relay.service: its settings are valid Relay settings, its open-files limit fits
them, and systemd itself accepts the unit (`systemd-analyze verify`, where installed)."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pytest
import trio

from relay.config import load_settings

UNIT = Path(__file__).parents[2] / "docs" / "deploy" / "relay.service"
RELAY = Path(sys.executable).parent / "relay"  # the venv's console script


def directives(name: str) -> list[str]:
    """The values of every `name=` line of the unit's sections."""
    prefix = f"{name}="
    return [
        line.removeprefix(prefix)
        for line in UNIT.read_text().splitlines()
        if line.startswith(prefix)
    ]


def unit_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for value in directives("Environment"):
        for assignment in shlex.split(value):  # systemd's quoting, for what the unit uses
            key, _, text = assignment.partition("=")
            env[key] = text
    return env


def test_the_units_settings_are_valid_and_trust_the_local_proxy() -> None:
    env = unit_environment()
    assert env["RELAY_DATA_DIR"] == "/var/lib/relay"  # StateDirectory=relay
    assert directives("StateDirectory") == ["relay"]
    settings = load_settings(env)
    assert settings.host == "127.0.0.1"
    assert settings.trusted_proxies == ("127.0.0.1", "::1")


def test_the_open_files_limit_covers_the_connection_caps() -> None:
    settings = load_settings(unit_environment())
    listeners = 3  # REST, realtime and the byte relay, each up to max_connections
    [limit] = directives("LimitNOFILE")
    assert int(limit) >= listeners * settings.max_connections + 256


async def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed, so relay.service was not verified")
    unit = tmp_path / "relay.service"  # verify wants ExecStart's program to exist
    unit.write_text(UNIT.read_text().replace("/opt/relay/bin/relay", str(RELAY)))
    result = await trio.run_process(
        [analyze, "verify", str(unit)], capture_stdout=True, capture_stderr=True, check=False
    )
    output = (result.stdout + result.stderr).decode()
    assert (result.returncode, output) == (0, "")
