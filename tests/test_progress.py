"""Progress lines: on a terminal only once a command has run a while, rewritten in place; off a
terminal only when asked, one plain line at a time."""

from __future__ import annotations

import io

from relay.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_quick_run_shows_nothing_on_a_terminal() -> None:
    out, clock = Terminal(), Clock()
    progress = Progress("backup", stream=out, clock=clock)
    for done in range(0, 101, 10):
        clock.now += 0.05
        progress(done, 100)
    progress.note("checking the copy's integrity")
    progress.finish()
    assert out.getvalue() == ""


def test_a_long_run_redraws_one_line_then_ends_it() -> None:
    out, clock = Terminal(), Clock()
    progress = Progress("backup", stream=out, clock=clock)
    progress(0, 400)
    clock.now = 1.0
    progress(100, 400)  # shown: the run is long now
    clock.now = 1.05
    progress(200, 400)  # not: redrawn at most every 0.1 s
    clock.now = 1.2
    progress(300, 400)
    progress(400, 400)  # the last count, shown by finish()
    progress.finish()
    assert out.getvalue() == (
        "\r\x1b[Kbackup: 100/400 pages (25%)"
        "\r\x1b[Kbackup: 300/400 pages (75%)"
        "\r\x1b[Kbackup: 400/400 pages (100%)\n"
    )


def test_off_a_terminal_only_when_forced_in_plain_lines() -> None:
    quiet = io.StringIO()
    silent = Progress("restore", stream=quiet)
    silent(0, 100)
    silent.finish()
    assert quiet.getvalue() == ""

    out, clock = io.StringIO(), Clock()
    progress = Progress("restore", stream=out, force=True, clock=clock)
    progress(0, 400)
    clock.now = 0.5
    progress(100, 400)  # within every_s (1 s) of the last line
    clock.now = 1.0
    progress(200, 400)
    progress(400, 400)
    progress.note("checking the backup's integrity")
    progress.finish()
    assert out.getvalue().splitlines() == [
        "restore: 0/400 pages (0%)",
        "restore: 200/400 pages (50%)",
        "restore: 400/400 pages (100%)",
        "restore: checking the backup's integrity",
    ]
