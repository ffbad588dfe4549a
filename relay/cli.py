"""The `relay` command: serve, and database upkeep. Thin: it parses arguments and calls in."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

import trio

from relay import __version__, admin, backup, roomctl, voicectl
from relay.cliutil import run_command, serve_epilog
from relay.config import load_settings
from relay.errors import ConfigError, ListenError, first_of
from relay.logs import configure_logging

if TYPE_CHECKING:
    from relay.config import Settings

CONFIG_HELP = "TOML settings file (RELAY_* env vars override it)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Relay chat and voice server")
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    parser.add_argument("--config", help=CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve",
        help="run the server until SIGINT/SIGTERM",
        description="Run the server until SIGINT or SIGTERM.",
        epilog=serve_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    db = commands.add_parser("db", help="database upkeep")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("migrate", help="create the database or upgrade it to this version")
    copy = db_commands.add_parser(
        "copy",
        help="copy the SQLite database into an empty PostgreSQL database",
        description="Copy every table of the SQLite database (the server must be stopped) into"
        " an empty PostgreSQL database, ids included, creating its schema if need be; then"
        " compare every table's row count. The SQLite file is left as it is.",
    )
    copy.add_argument("--to", required=True, metavar="DSN", help="postgresql://USER@HOST/DB")
    copy.add_argument(
        "--from",
        dest="source",
        metavar="PATH",
        help="the SQLite database (default: the configured one, <data_dir>/relay.db)",
    )
    backup.add_commands(commands)
    admin.add_commands(commands)  # user, server, invite (relay/admin.py)
    roomctl.add_commands(commands)  # rooms (relay/roomctl.py)
    voicectl.add_commands(commands)  # voice play (relay/voicectl.py)
    _accept_config_after_commands(parser)
    return parser


def _accept_config_after_commands(parser: argparse.ArgumentParser) -> None:
    """Let `--config` follow any (sub)command too (`relay serve --config relay.toml`), as
    scripts/serve and `just serve` pass their arguments after `serve`. Given in both places,
    the later one wins."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument("--config", default=argparse.SUPPRESS, help=CONFIG_HELP)
                _accept_config_after_commands(command)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in backup.COMMANDS:
        return backup.run(args, os.environ)
    try:
        settings = load_settings(os.environ, args.config)
    except ConfigError as e:
        print(f"relay: {e}", file=sys.stderr)
        return 2
    if handler := getattr(args, "run", None):  # admin and rooms: their own output, no logs
        return run_command(handler, args, settings)
    configure_logging(settings.log_format, settings.log_level)
    if args.command == "serve":
        from relay import server

        reason: str | None = None
        try:
            trio.run(server.run, settings)
        except* ListenError as group:  # the HTTP port: bound before the services start
            reason = str(first_of(group))
        except* server.StartupFailed as group:  # in the services, e.g. the realtime port
            reason = first_of(group).reason
        if reason is not None:
            print(f"relay: start-up failed: {reason}", file=sys.stderr)
            return 1
        return 0
    if args.db_command == "copy":
        return _copy_to_postgres(settings, args.source, args.to)
    if settings.postgres_dsn is not None:
        return _migrate_postgres(settings.postgres_dsn)
    from relay.storage.schema import migrate
    from relay.storage.sqlite.db import connect
    from relay.storage.sqlite.lock import DatabaseInUse, database_lock

    settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Not under a running server (or a restore): its schema would change beneath it.
        with database_lock(settings.db_path):
            db = connect(settings.db_path)
            try:
                print(f"{settings.db_path}: schema version {migrate(db)}")
            finally:
                db.close()
    except DatabaseInUse as e:
        print(f"relay: {e}", file=sys.stderr)
        return 1
    return 0


def _migrate_postgres(dsn: str) -> int:
    """`relay db migrate` on PostgreSQL (processes that start together also migrate safely: a
    lock makes them take turns)."""
    import psycopg

    from relay.storage.postgres.schema import migrate

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            print(f"postgresql: schema version {migrate(conn)}")
    except (psycopg.Error, RuntimeError) as e:
        print(f"relay: {e}", file=sys.stderr)
        return 1
    return 0


def _copy_to_postgres(settings: Settings, source: str | None, dsn: str) -> int:
    """`relay db copy`: the SQLite database into an empty PostgreSQL one (under the SQLite
    database's lock: no server may run on it meanwhile)."""
    from pathlib import Path

    import psycopg

    from relay.storage.postgres.fromsqlite import CopyRefused, copy_database
    from relay.storage.sqlite.lock import DatabaseInUse, database_lock

    if not dsn.startswith(("postgresql://", "postgres://")):
        print("relay: --to must be a postgresql:// DSN", file=sys.stderr)
        return 2
    if source is None and settings.postgres_dsn is not None:
        print(
            "relay: RELAY_DATABASE is PostgreSQL: name the SQLite file with --from", file=sys.stderr
        )
        return 2
    path = Path(source) if source is not None else settings.db_path

    def progress(table: str, rows: int) -> None:
        print(f"{table}: {rows} rows", flush=True)

    try:
        if not path.is_file():
            raise CopyRefused(f"{path}: no such database")
        with database_lock(path):
            copied = copy_database(path, dsn, progress=progress)
    except (CopyRefused, DatabaseInUse, psycopg.Error) as e:
        print(f"relay: {e}", file=sys.stderr)
        return 1
    print(
        f"copied {copied.rows} rows of {copied.tables} tables from {path} into postgresql"
        f" (schema version {copied.version}); every table's row count matches"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
