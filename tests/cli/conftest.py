"""Running the `relay` command in tests: in this process (`relay.cli.main` in a worker thread,
so a server in the test's Trio loop keeps serving meanwhile), or as a real process."""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from relay import cli

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

BIN = Path(sys.executable).parent  # .venv/bin: relay, just


@dataclass
class Ran:
    code: int | str | None
    out: str
    err: str

    @property
    def error(self) -> str:
        """stderr, checked to be exactly one line."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        return lines[0]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without RELAY_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(extra)
    return env


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """RELAY_DATA_DIR for in-process commands: the data directory `settings_for(tmp_path)`
    gives a test server, so the commands and the server share one database."""
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("RELAY_DATA_DIR", str(data))
    return data


@pytest.fixture
def relay_cli(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Awaitable[Ran]]:
    """`await relay_cli("user", "list", stdin="...")`: `relay.cli.main` with that stdin."""

    def main(argv: list[str]) -> int | str | None:
        try:
            return cli.main(argv)
        except SystemExit as e:  # argparse: --help (0) and bad arguments (2)
            return e.code

    async def run(*argv: str, stdin: str = "") -> Ran:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = await trio.to_thread.run_sync(main, list(argv))
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


class Lines:
    """The lines a process writes to a pipe, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def next(self) -> str:
        with trio.fail_after(10):
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                assert chunk, f"the stream ended; unread: {self.buffer!r}"
                self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer[:] = rest
        return line.decode()

    async def frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await self.next())
        return frame

    async def rest(self) -> str:
        with trio.fail_after(10):
            while chunk := await self.stream.receive_some(65536):
                self.buffer += chunk
        return self.buffer.decode()
