"""scripts/serve and `just serve`, run as a user would: arguments after `serve` reach `relay
serve` (a TOML file given with --config is read), and a .venv that scripts/test set up is used
as it is (nothing is installed again)."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STAMP = ROOT / ".venv" / ".relay-installed"
LISTENING = re.compile(rb'"msg":"listening","http":"(http://127\.0\.0\.1:\d+)"')


def dev_install_is_current() -> bool:
    """scripts/bootstrap's stamp says the dev set is installed for this pyproject.toml."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return STAMP.is_file() and STAMP.read_text().strip() == f"{digest}-dev"


@pytest.mark.skipif(
    not dev_install_is_current(),
    reason="scripts/test has not installed this pyproject.toml's dev set: serving would install",
)
@pytest.mark.parametrize(
    "command", [["scripts/serve"], [str(BIN / "just"), "serve"]], ids=["scripts/serve", "just"]
)
async def test_serve_passes_its_arguments_to_relay_serve(
    tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        'http_port = 0\nrealtime_port = 0\nrelay_port = "off"\nlog_format = "json"\n'
        "voice_udp_port = 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    # Its own process group: `just` runs the script in a shell, and the signal must reach relay.
    process = await trio.lowlevel.open_process(
        [*command, "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    seen = bytearray()
    try:
        with trio.fail_after(20):
            while (match := LISTENING.search(seen)) is None:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, seen.decode()
                seen += chunk
        async with httpx.AsyncClient(base_url=match.group(1).decode()) as client:
            assert (await client.get("/healthz")).status_code == 200
        assert (tmp_path / "data" / "relay.db").exists()  # the file's data_dir, so it was read
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        with trio.fail_after(20):
            while chunk := await process.stdout.receive_some(4096):
                seen += chunk
            await process.wait()
    assert b"installing" not in seen, seen.decode()
    assert b'"msg":"stopped"' in seen, seen.decode()
