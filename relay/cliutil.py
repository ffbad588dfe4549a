"""What the `relay` admin subcommands share: one-line errors, the `--json` option, tables,
password prompts, and the settings list of `relay serve --help`.

A command handler takes the parsed arguments and the settings and raises `CommandError` for
anything the operator can fix; `run_command` prints it as one line on stderr and turns it into
the exit status (2: bad input, 1: the command failed). Output meant for scripts goes to stdout,
one JSON object per line with `--json`.
"""

from __future__ import annotations

import getpass
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from relay.config import ENV_PREFIX, Settings
from relay.errors import RelayError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

USAGE = 2  # bad input: an argument, a name or a password that cannot be right
FAILED = 1  # the command could not be done (unknown name, conflict, server not reachable)
SETTINGS_REFERENCE = "docs/configuration.md"
# Defaults that mean more than their value.
_SHOWN_DEFAULTS = {
    "database": "<data_dir>/relay.db",
    "secret_key": "generated, kept in the database",
    "relay_port": "33333 (off: no byte relay)",
}


class CommandError(Exception):
    """A failure the operator can act on: printed as `relay: <message>`, exit `status`."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def run_command(
    handler: Callable[[argparse.Namespace, Settings], int | None],
    args: argparse.Namespace,
    settings: Settings,
) -> int:
    """Run a subcommand's handler; its errors become one line on stderr and an exit status."""
    try:
        return handler(args, settings) or 0
    except CommandError as e:
        print(f"relay: {e.message}", file=sys.stderr)
        return e.status
    except RelayError as e:  # a storage query's refusal (a name taken, a limit reached)
        print(f"relay: {e.message} ({e.code})", file=sys.stderr)
        return FAILED


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per line (for scripts)"
    )


def print_json(value: Any) -> None:
    print(msgspec.json.encode(value).decode(), flush=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Left-aligned columns, two spaces apart; empty cells are shown as '-'."""
    cells = [list(headers), *([("-" if c is None else str(c)) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def read_password(prompt: str = "password: ", *, confirm: bool = True) -> str:
    """Ask on the terminal (twice with `confirm`), or read the first line of stdin when it is
    not a terminal (`echo "$PW" | relay user create alice`)."""
    if sys.stdin.isatty():
        password = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != password:
            raise CommandError("the two passwords differ", USAGE)
        return password
    line = sys.stdin.readline()
    if not line:
        raise CommandError("no password: type it in a terminal or give it on stdin", USAGE)
    return line.rstrip("\r\n")


def validation_error(
    error: msgspec.ValidationError, what: str = "value", options: Sequence[str] = ()
) -> CommandError:
    """msgspec's "Expected `str` of length >= 8 - at `$.password`" as "invalid password: ...";
    a field named in `options` is shown as its option (max_uses: --max-uses)."""
    reason, _, where = str(error).partition(" - at `$")
    field = where.strip(".`") or what
    if field in options:
        field = "--" + field.replace("_", "-")
    return CommandError(f"invalid {field}: {reason}", USAGE)


def serve_epilog() -> str:
    """Every setting with its environment variable and default, for `relay serve --help`."""
    defaults = Settings()
    lines = [
        "settings: built-in defaults, then the TOML file of --config (its keys are the names",
        "below), then RELAY_* environment variables (highest). Each setting is explained in",
        f"{SETTINGS_REFERENCE}.",
        "",
    ]
    names = Settings.__struct_fields__
    width = max(len(name) for name in names) + 2
    env_width = max(len(ENV_PREFIX) + len(name) for name in names) + 2
    for name in names:
        value = getattr(defaults, name)
        if isinstance(value, bool):
            shown = str(value).lower()
        elif isinstance(value, tuple):  # a list setting: commas or spaces in the environment
            shown = ",".join(map(str, value)) or "none"
        else:
            shown = _SHOWN_DEFAULTS.get(name, "unset" if value is None else str(value))
        lines.append(f"  {name:<{width}}{ENV_PREFIX + name.upper():<{env_width}}{shown}")
    return "\n".join(lines)
