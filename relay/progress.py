"""Progress of a long command (backup, restore) on the operator's terminal.

On a terminal, one line rewritten in place (`backup: 5120/25600 pages (20%)`), shown only once
the command has run `after_s`, so quick runs print nothing extra. Elsewhere (a pipe, a log, cron)
nothing, unless forced (`--progress`): then a plain line at most every `every_s` and at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable

MIB = 1024 * 1024


def pages(done: int, total: int) -> str:
    return f"{done}/{total} pages"


class Progress:
    """Call it with (done, total) as work advances; `finish()` ends the line it drew, if any."""

    def __init__(
        self,
        label: str,
        *,
        unit: Callable[[int, int], str] = pages,
        stream: TextIO | None = None,
        force: bool = False,
        after_s: float = 1.0,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty()
        self.enabled = self.terminal or force
        self.after_s = 0.0 if force else after_s
        # A terminal line is cheap to redraw; a forced line in a log is not.
        self.every_s = 0.1 if self.terminal else every_s
        self.clock = clock
        self.started = clock()
        self.last_shown: float | None = None
        self.last: tuple[int, int] | None = None
        self.shown: tuple[int, int] | None = None
        self.drawn = False  # a terminal line is open (no newline yet)

    def __call__(self, done: int, total: int) -> None:
        self.last = (done, total)
        if not self.enabled:
            return
        now = self.clock()
        if now - self.started < self.after_s:
            return
        if self.last_shown is not None and now - self.last_shown < self.every_s:
            return
        self.last_shown = now
        self._show(done, total)

    def note(self, text: str) -> None:
        """A step without a count (e.g. the integrity check after a copy), shown only when
        progress is: the command is long enough for it."""
        if self.shown is None:
            return
        self.finish()
        self._write(f"{self.label}: {text}")

    def finish(self) -> None:
        """Show the last count if anything was shown, and end the line."""
        if self.shown is not None and self.last is not None and self.last != self.shown:
            self._show(*self.last)
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def _show(self, done: int, total: int) -> None:
        self.shown = (done, total)
        percent = f" ({100 * done // total}%)" if total else ""
        self._write(f"{self.label}: {self.unit(done, total)}{percent}")

    def _write(self, text: str) -> None:
        if self.terminal:
            self.stream.write(f"\r\x1b[K{text}")  # back to the line's start and clear it
            self.drawn = True
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()
