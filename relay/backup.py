"""`relay backup`, `relay restore` and `relay check`: a copy of a server's state taken while it
runs, the way back to it, and a check of the configuration and the database.

A backup is one file today: the database, copied online as one consistent snapshot
(relay.storage.sqlite.backup.copy_online), checked with `PRAGMA integrity_check`, and put in
place only once whole and sound (a temporary file beside the target, then a link or rename). It
holds everything the server keeps: accounts and their password hashes, and the token signing
key unless `secret_key` is set; keep it as private as the data directory. When the files issue
gives the server a files directory and keys, they join the backup as further parts; restore
tells what a backup holds by its first bytes (`_kind`), so a new kind gets its own signature and
backups of this kind still restore.

A restore needs the server stopped: it holds the database's lock (relay.storage.sqlite.lock),
which a running server holds too, so neither can start while the other runs. It copies the
backup into the data directory (through SQLite, so a database with a `-wal` beside it comes
whole), checks the copy (integrity, a Relay schema no newer than this code's), and only then
sets the old database aside, with its `-wal` and `-journal`, under a dated name (or removes
it), and renames the copy into place. An older schema is restored as it
is; the server (or `relay db migrate`) upgrades it at start.

Everything here blocks (file and SQLite work). The CLI calls it directly; code in the server
process must run it in a worker thread (`trio.to_thread.run_sync`).

Resource handling: the temporary copy is removed on every way out, failure or Ctrl-C included;
the lock is released when `restore` returns.

Error handling: a refusal (target exists, server running, damaged or foreign backup) raises
Refused, one line the CLI prints before exiting 1; SQLite and OS errors pass through and the
CLI prints them the same way.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relay.config import load_settings
from relay.errors import ConfigError
from relay.progress import MIB, Progress
from relay.storage.schema import LATEST_VERSION
from relay.storage.sqlite import backup as sqlite_backup
from relay.storage.sqlite.lock import DatabaseInUse, database_lock, lock_holder, lock_path

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator, Mapping

    from relay.config import Settings

COMMANDS = ("backup", "restore", "check")
POSTGRES_REFUSAL = (
    "`relay {command}` works on the SQLite file; the database is PostgreSQL: back it up with"
    " pg_dump and restore it with pg_restore (docs/postgresql.md)"
)
# A table every Relay schema has had since migration 1: a database without it is not Relay's.
RELAY_TABLE = "users"


class Refused(Exception):
    """The command refused or failed before changing anything; the text is one line."""


@dataclass(frozen=True)
class BackedUp:
    path: Path
    size_bytes: int
    pages: int
    schema_version: int
    seconds: float


@dataclass(frozen=True)
class Restored:
    database: Path
    size_bytes: int
    schema_version: int
    kept: Path | None  # where the old database went, if there was one and it was kept


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        if self.ok:
            return f"{self.name}: ok ({self.detail})" if self.detail else f"{self.name}: ok"
        return f"{self.name}: FAILED: {self.detail}"


# -- backup --------------------------------------------------------------------------------------


def backup(
    settings: Settings,
    target: Path,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_checking: Callable[[], None] | None = None,
) -> BackedUp:
    """Copy the server's database, running or not, to the new file `target`.

    Raises Refused if there is no database, `target` exists (unless `force`) or names the
    database itself, or the copy fails its integrity check."""
    started = time.monotonic()
    source = settings.db_path
    if not source.is_file():
        raise Refused(f"no database at {source}")
    if target.is_dir():
        raise Refused(f"{target} is a directory: name the backup file")
    if not target.parent.is_dir():
        raise Refused(f"no such directory: {target.parent}")
    if _is_database_file(target, source):
        raise Refused(f"{target} is the server's own database")
    if target.exists() and not force:
        raise Refused(f"{target} exists (--force replaces it)")
    with _staged(target) as staging:
        copied = sqlite_backup.copy_online(source, staging, progress=progress)
        if on_checking is not None:
            on_checking()
        with _closing(sqlite_backup.open_readonly(staging, immutable=True)) as conn:
            problems = sqlite_backup.integrity_problems(conn)
        if problems:
            raise Refused(
                f"the copy failed its integrity check ({_summary(problems)}); nothing was "
                "written: the database itself may be damaged (relay check)"
            )
        _install(staging, target, replace=force)
    return BackedUp(
        path=target,
        size_bytes=target.stat().st_size,
        pages=copied.pages,
        schema_version=copied.schema_version,
        seconds=time.monotonic() - started,
    )


def _install(staging: Path, target: Path, *, replace: bool) -> None:
    """Give the finished copy its name: atomically, and never over a file that appeared since
    the caller looked (a hard link fails if the name exists) unless `replace`."""
    if replace:
        os.replace(staging, target)
    else:
        try:
            os.link(staging, target)
        except FileExistsError:
            raise Refused(f"{target} exists (--force replaces it)") from None
        except OSError:  # no hard links here: check and rename (a race is possible, not likely)
            if target.exists():
                raise Refused(f"{target} exists (--force replaces it)") from None
            os.rename(staging, target)
    _sync_directory(target.parent)


# -- restore -------------------------------------------------------------------------------------


def restore(
    settings: Settings,
    source: Path,
    *,
    keep: bool = True,
    progress: Callable[[int, int], None] | None = None,
    on_checking: Callable[[], None] | None = None,
) -> Restored:
    """Make the backup at `source` the server's database; the server must be stopped.

    Raises Refused (changing nothing) if a server runs on the database, or the backup is not a
    Relay backup, is damaged, or has a schema newer than this code's."""
    database = settings.db_path
    if not source.is_file():
        raise Refused(f"no such file: {source}")
    if _is_database_file(source, database):
        raise Refused(f"{source} is the server's own database")
    kind = _kind(source)
    if kind is None:
        raise Refused(f"{source} is not a Relay backup (not a SQLite database)")
    database.parent.mkdir(parents=True, exist_ok=True)
    with _server_stopped(database), _staged(database) as staging:
        try:
            # Through SQLite rather than byte for byte: a database kept aside by an earlier
            # restore may have commits in its -wal, and they belong in the copy.
            sqlite_backup.copy_online(source, staging, progress=progress)
        except sqlite3.DatabaseError as e:
            raise Refused(f"{source} failed its integrity check: {e}") from None
        if on_checking is not None:
            on_checking()
        version = _check_backup(source, staging)
        kept = _set_aside(database) if keep else None
        sqlite_backup.remove_sidecars(database)  # what is left: they belong to the old file
        os.replace(staging, database)
        _sync_directory(database.parent)
    return Restored(
        database=database,
        size_bytes=database.stat().st_size,
        schema_version=version,
        kept=kept,
    )


@contextmanager
def _server_stopped(database: Path) -> Iterator[None]:
    """Hold the database's lock, which a running server holds: Refused if it is held."""
    try:
        with database_lock(database):
            yield
    except DatabaseInUse as e:
        raise Refused(f"{e}: stop the server first") from None


def _kind(path: Path) -> str | None:
    """What a backup file holds, from its first bytes: "database" (a SQLite file), or None."""
    return "database" if sqlite_backup.is_sqlite_file(path) else None


def _check_backup(source: Path, copy: Path) -> int:
    """Check the staged copy of `source`: sound, Relay's, and not newer than this code.
    Returns its schema version."""
    with _closing(sqlite_backup.open_readonly(copy, immutable=True)) as conn:
        problems = sqlite_backup.integrity_problems(conn)
        if problems:
            raise Refused(f"{source} failed its integrity check: {_summary(problems)}")
        version = sqlite_backup.schema_version(conn)
        if version > LATEST_VERSION:
            raise Refused(
                f"{source} has schema version {version}, newer than this relay's "
                f"({LATEST_VERSION}): restore it with the relay that made it"
            )
        if version < 1 or RELAY_TABLE not in sqlite_backup.tables(conn):
            raise Refused(f"{source} is not a Relay database (schema version {version})")
    return version


def _set_aside(database: Path) -> Path | None:
    """Move the database there now (with its WAL) to a dated name beside it; None if none."""
    if not database.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = database.with_name(f"{database.name}.pre-restore-{stamp}")
    n = 1
    while aside.exists() or sqlite_backup.sidecars(aside):
        n += 1
        aside = database.with_name(f"{database.name}.pre-restore-{stamp}-{n}")
    sqlite_backup.move_database(database, aside)
    return aside


# -- check ---------------------------------------------------------------------------------------


def check(env: Mapping[str, str], config_file: str | None) -> list[Check]:
    """The configuration, then the database: one Check each, stopping at the first that leaves
    nothing further to look at (bad settings, no database)."""
    try:
        settings = load_settings(env, config_file)
    except ConfigError as e:
        return [Check("config", False, str(e))]
    source = config_file or "defaults"
    if settings.postgres_dsn is not None:
        return [
            Check("config", True, f"{source} and RELAY_* variables"),
            Check("database", False, POSTGRES_REFUSAL.format(command="check")),
        ]
    detail = f"{source} and RELAY_* variables; database {settings.db_path}"
    results = [Check("config", True, detail)]
    return results + check_database(settings.db_path)


def check_database(path: Path) -> list[Check]:
    """Is there a SQLite database at `path`, sound (integrity_check, foreign_key_check), with a
    schema this code can run? Safe while a server runs: it only reads, in a snapshot."""
    if not path.is_file():
        return [Check("database", False, f"no database at {path} (a server creates it at start)")]
    try:
        if not sqlite_backup.is_sqlite_file(path):
            return [Check("database", False, f"{path} is not a SQLite database")]
        holder = lock_holder(path)
        size = f"{path.stat().st_size / MIB:.1f} MiB"
        conn = sqlite_backup.open_readonly(path)
    except (OSError, sqlite3.Error) as e:
        return [Check("database", False, f"{path}: {e}")]
    in_use = "not in use" if holder is None else f"in use by process {holder or '?'}"
    with _closing(conn):
        results = [Check("database", True, f"{path}, {size}, {in_use}")]
        problems = sqlite_backup.integrity_problems(conn)
        results.append(Check("integrity", not problems, _summary(problems) if problems else ""))
        if problems:
            return results
        orphans = sqlite_backup.foreign_key_problems(conn)
        results.append(Check("foreign keys", not orphans, _summary(orphans) if orphans else ""))
        results.append(_version_check(conn))
    return results


def _version_check(conn: sqlite3.Connection) -> Check:
    version = sqlite_backup.schema_version(conn)
    name = "schema version"
    if version > LATEST_VERSION:
        return Check(name, False, f"{version} is newer than this relay's ({LATEST_VERSION})")
    if version < 1 or RELAY_TABLE not in sqlite_backup.tables(conn):
        return Check(name, False, f"not a Relay database (user_version {version})")
    if version < LATEST_VERSION:
        return Check(name, True, f"{version}; the server upgrades it to {LATEST_VERSION} at start")
    return Check(name, True, str(version))


# -- helpers -------------------------------------------------------------------------------------


def _summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def _is_database_file(path: Path, database: Path) -> bool:
    """Is `path` the database, one of its sidecars or its lock file?"""
    own = [database, lock_path(database)]
    own += [database.with_name(database.name + s) for s in sqlite_backup.SIDECARS]
    for candidate in own:
        if path.exists() and candidate.exists():
            if os.path.samefile(path, candidate):
                return True
        elif path.resolve() == candidate.resolve():
            return True
    return False


@contextmanager
def _staged(final: Path) -> Iterator[Path]:
    """A new empty file beside `final` (same file system, so a rename is atomic), private to
    its owner (a database holds password hashes and keys), removed on the way out unless it was
    renamed away."""
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
    finally:
        for leftover in [staging, *sqlite_backup.sidecars(staging)]:
            leftover.unlink(missing_ok=True)


@contextmanager
def _closing(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield conn
    finally:
        conn.close()


def _sync_directory(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the commands --------------------------------------------------------------------------------


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `backup`, `restore` and `check` with the `relay` command's parser."""
    make = commands.add_parser(
        "backup",
        help="copy the database to a file, while the server runs or not",
        description="Copy the database to PATH as one consistent snapshot, while the server "
        "runs or not; the copy is checked (PRAGMA integrity_check) before it takes its name.",
    )
    make.add_argument("path", type=Path, metavar="PATH", help="the backup file to write")
    make.add_argument("--force", action="store_true", help="replace PATH if it exists")
    _progress_option(make)
    back = commands.add_parser(
        "restore",
        help="make a backup the database of a stopped server",
        description="Check the backup at PATH (integrity, schema version) and make it the "
        "database of a stopped server; the old database is kept beside it under a dated name.",
    )
    back.add_argument("path", type=Path, metavar="PATH", help="a file made by relay backup")
    back.add_argument(
        "--no-keep", action="store_true", help="delete the old database instead of keeping it"
    )
    _progress_option(back)
    commands.add_parser(
        "check",
        help="check the settings and the database; exit 1 on any failure",
        description="Check the settings, then the database (integrity_check, "
        "foreign_key_check, schema version): one line each; exit 1 on any failure.",
    )


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show progress even when not on a terminal (on one, it shows when the copy is long)",
    )


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run one of COMMANDS; returns the exit status."""
    if args.command == "check":
        results = check(env, args.config)
        for result in results:
            print(result.line())
        return 0 if all(result.ok for result in results) else 1
    try:
        settings = load_settings(env, args.config)
    except ConfigError as e:
        print(f"relay: {e}", file=sys.stderr)
        return 2
    if settings.postgres_dsn is not None:
        print(f"relay: {POSTGRES_REFUSAL.format(command=args.command)}", file=sys.stderr)
        return 2
    progress = Progress(args.command, force=args.progress)
    # SIGTERM (a timeout, systemd) ends the command like Ctrl-C: through the clean-up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.command == "backup":
            made = backup(
                settings,
                args.path,
                force=args.force,
                progress=progress,
                on_checking=lambda: progress.note("checking the copy's integrity"),
            )
            progress.finish()
            print(
                f"{made.path}: {made.size_bytes / MIB:.1f} MiB, {made.pages} pages, schema "
                f"version {made.schema_version}, integrity ok ({made.seconds:.1f} s)"
            )
        else:
            done = restore(
                settings,
                args.path,
                keep=not args.no_keep,
                progress=progress,
                on_checking=lambda: progress.note("checking the backup's integrity"),
            )
            progress.finish()
            if done.kept is not None:
                print(f"kept the old database as {done.kept}")
            upgrade = (
                f"; the server upgrades it to {LATEST_VERSION} at start"
                if done.schema_version < LATEST_VERSION
                else ""
            )
            print(
                f"{done.database}: restored from {args.path} ({done.size_bytes / MIB:.1f} MiB, "
                f"schema version {done.schema_version}{upgrade})"
            )
    except (Refused, sqlite3.Error, OSError) as e:
        progress.finish()
        print(f"relay: {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.finish()
        print(f"relay: {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
