"""The shell blocks of README.md and docs/**/*.md, and a bash that runs one as a reader would:
fed the block's text as it goes (so a value a command prints can fill a later placeholder),
Ctrl-C for a command that runs until stopped, and its output read as it comes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: relay, just
SHELLS = {"sh", "bash", "console", "shell"}
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FIXED_PORTS = (8080, 9464)  # written in docs/api.md and docs/metrics.md
STEP_TIMEOUT_S = 60.0  # a hang guard per wait, not a performance bound


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository: docs/cli.md
    line: int  # of the opening fence
    body: str

    @property
    def id(self) -> str:
        """The page and the block's first command, without its comment: stable when other
        blocks are added or moved, and a changed first command asks for a new decision."""
        first = next(line for line in self.body.splitlines() if line.strip())
        return f"{self.page}: {first.split('  #')[0].strip()}"


def blocks_in(page: str, text: str) -> list[Block]:
    """The shell blocks of one page's markdown `text`."""
    return [
        Block(page, text.count("\n", 0, match.start()) + 1, match[2])
        for match in FENCE.finditer(text)
        if match[1].strip() in SHELLS
    ]


def shell_blocks() -> list[Block]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [b for page in pages for b in blocks_in(str(page.relative_to(ROOT)), page.read_text())]


def block(block_id: str) -> Block:
    [found] = [b for b in shell_blocks() if b.id == block_id]
    return found


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Each placeholder replaced by its value; each must occur (a stale table fails)."""
    for placeholder, value in values.items():
        assert placeholder in text, f"{placeholder!r} is no longer in the block"
        text = text.replace(placeholder, value)
    return text


def split_after(text: str, command: str) -> tuple[str, str]:
    """The block's lines up to and including the first that starts with `command`, and the rest."""
    lines = text.splitlines(keepends=True)
    [at] = [i for i, line in enumerate(lines) if line.startswith(command)][:1]
    return "".join(lines[: at + 1]), "".join(lines[at + 1 :])


def reader_env(**extra: str) -> dict[str, str]:
    """A reader's shell: this environment without RELAY_* settings, the venv's bin first on
    PATH (as after `. .venv/bin/activate` or `pip install`), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@dataclass
class Shell:
    """`bash -e -o pipefail` reading a block from a pipe (not stdin, which the commands own), in
    a session of its own so that Ctrl-C goes to its foreground commands as a terminal's does."""

    process: trio.Process
    script: int  # the write end of the script pipe; -1 once closed
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    changed: trio.Event = field(default_factory=trio.Event)
    eof: bool = False  # both outputs read to their end

    @property
    def stdout(self) -> str:
        return self.out.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.decode(errors="replace")

    def feed(self, text: str) -> None:
        """More of the block; bash runs each command as soon as it has read it whole."""
        os.write(self.script, text.encode())

    def end(self) -> None:
        """The block is all given: bash exits after its last command."""
        os.close(self.script)
        self.script = -1

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the foreground commands and bash, which goes on with the next
        command if the interrupted one exited 0 (its way of ending cleanly), as in a terminal."""
        os.killpg(self.process.pid, signal.SIGINT)

    async def expect(self, pattern: str, *, stream: str = "stdout") -> re.Match[str]:
        """Wait until the output's whole lines match `pattern` (multiline); fail if bash exits
        first. Whole lines only: a line read in two pieces would otherwise match its first
        piece at `$` (a room's secret cut short)."""
        regex = re.compile(pattern, re.MULTILINE)
        with trio.move_on_after(STEP_TIMEOUT_S):
            while True:
                text = self.stdout if stream == "stdout" else self.stderr
                found = regex.search(text, 0, text.rfind("\n") + 1)
                if found:
                    return found
                assert self.process.returncode is None, (
                    f"bash exited {self.process.returncode} before printing {pattern!r}:\n"
                    f"{self.stdout}{self.stderr}"
                )
                await self.changed.wait()
        raise AssertionError(f"no {pattern!r} in:\n{self.stdout}\n{self.stderr}")

    async def finished(self) -> str:
        """Wait for bash to exit; it must exit 0. Its stdout."""
        if self.script != -1:
            self.end()
        code: int | None = None
        with trio.move_on_after(STEP_TIMEOUT_S):
            code = await self.process.wait()
            while not self.eof:
                await self.changed.wait()
        assert code is not None, f"still running:\n{self.stdout}\n{self.stderr}"
        assert self.eof, f"a command left running holds the output:\n{self.stdout}"
        assert code == 0, f"exit {code}:\n{self.stdout}\n{self.stderr}"
        return self.stdout


async def _pump(stream: trio.abc.ReceiveStream, into: bytearray, shell: Shell) -> None:
    async for chunk in stream:
        into += chunk
        shell.changed.set()
        shell.changed = trio.Event()


@contextlib.asynccontextmanager
async def bash(
    cwd: Path, env: Mapping[str, str], *, stdin: int = subprocess.DEVNULL
) -> AsyncIterator[Shell]:
    """A Shell to feed a block to; killed (its whole session) if the test ends first."""
    read_end, write_end = os.pipe()
    process = await trio.lowlevel.open_process(
        ["bash", "-e", "-o", "pipefail", f"/dev/fd/{read_end}"],
        cwd=cwd,
        env=dict(env),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(read_end,),
        start_new_session=True,
    )
    os.close(read_end)
    shell = Shell(process, write_end)
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None
    assert stderr is not None

    async def pumps() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(_pump, stdout, shell.out, shell)
            inner.start_soon(_pump, stderr, shell.err, shell)
        shell.eof = True
        shell.changed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pumps)
        try:
            yield shell
        finally:
            if shell.script != -1:
                shell.end()
            if process.returncode is None:  # the test failed mid-block: end what it started
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()


@contextlib.asynccontextmanager
async def fixed_ports_lock() -> AsyncIterator[None]:
    """Held while a block uses the ports the docs write out (REST's 8080, metrics' 9464):
    pytest-xdist workers, and other checkouts' test runs on this machine, take turns."""
    path = Path(tempfile.gettempdir()) / "relay-docs-fixed-ports.lock"
    with path.open("a") as lock:
        await trio.to_thread.run_sync(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
        try:
            for port in FIXED_PORTS:  # a clear failure, not a server's bind error
                with socket.socket() as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        probe.bind(("127.0.0.1", port))
                    except OSError as e:
                        raise AssertionError(
                            f"127.0.0.1:{port}, which the docs' blocks use, is taken: {e}"
                        ) from None
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def group_environ(pgid: int, argv_word: str) -> dict[str, str]:
    """The environment of the process of session `pgid` whose command line has `argv_word` (the
    value a block made inline, like a generated token)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            if argv_word.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                raw = (entry / "environ").read_bytes().split(b"\0")
                return dict(v.decode().split("=", 1) for v in raw if b"=" in v)
    raise AssertionError(f"no process {argv_word!r} in group {pgid}")
