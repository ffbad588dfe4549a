"""Running a bench wrapper script in a subprocess and reading the Markdown table it prints."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from pathlib import Path


async def table_of(script: Path, args: list[str], header: str) -> list[list[str]]:
    """Run `script` with `args` (it must succeed within 90 s) and return the cells of each row
    of the table it prints, whose first line starts with `header`."""
    with trio.fail_after(90):  # a hang guard, not a performance assertion
        result = await trio.run_process(
            [sys.executable, str(script), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode()
    assert result.returncode == 0, out[-2000:] + result.stderr.decode()[-4000:]
    lines = out.strip().splitlines()
    assert lines[0].startswith(header), out[-2000:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
