"""The admin commands that work on the database itself: `relay user create|set-password|disable|
enable|list`, `relay server create|list` and `relay invite create`.

They open the SQLite file the server uses (the settings' data_dir or database, as `relay serve`
would) with the server's own pragmas, create or upgrade it as the server does at start-up, and
make each change in one `BEGIN IMMEDIATE` transaction with the storage layer's queries: the
same checks and limits as the API. So they work whether the server runs or not: WAL lets both
processes use the file, and a change waits up to the busy timeout (5 s) for the server's
writer.

What a running server sees, since nothing here reaches its memory: new users, servers and
invites are read from the database when they are first used. Logins ended here
(`disable`, `set-password`) are found by the server's `Accounts.follow_revocations` within about
a second (REVOCATION_POLL_S): from then on their access tokens are refused and their gateway
connections closed (4004). A disabled account's logins and refreshes are refused at once (403
account_disabled), since those read the database. Users already online see a server created
here only when they next connect (READY): no event is sent.

IDs come from a Snowflakes generator with a random worker number from 1 to 1023 (the server's is
0), so they cannot collide with the running server's.
"""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from relay import crypto
from relay.chat import commands
from relay.chat.invites import invite_code
from relay.chat.objects import invite_out, iso
from relay.cliutil import (
    CommandError,
    add_json_option,
    print_json,
    print_table,
    read_password,
    validation_error,
)
from relay.errors import Conflict
from relay.ids import Snowflakes, parse_id
from relay.rest.bodies import Register
from relay.storage import invites, servers, users
from relay.storage.access import now_ms
from relay.storage.schema import migrate
from relay.storage.sqlite.db import connect

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator

    from sqlite_utils import Database

    from relay.config import Settings
    from relay.storage.servers import ServerListing, ServerRow
    from relay.storage.users import UserListing, UserRow

T = TypeVar("T")
PAGE = 500  # rows read per query when listing
INVITE_CODE_TRIES = 3
AUDIT_REASON = "relay invite create (admin command)"


class UserInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A user as `relay user list --json` prints it."""

    id: str
    username: str
    display_name: str | None
    created_at: str
    disabled_at: str | None
    has_password: bool
    logins: int  # live login sessions


class ServerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A server as `relay server list --json` prints it."""

    id: str
    name: str
    owner_id: str
    owner: str
    members: int
    public: bool
    created_at: str


# -- the database -------------------------------------------------------------------------------


@contextmanager
def database(settings: Settings, *, create: bool) -> Iterator[Database]:
    """The server's database, created (`create`) or upgraded to this version as at start-up:
    the SQLite file, or PostgreSQL when `database` is a postgresql:// DSN.

    Raises:
        CommandError: no database and not `create`, a database newer than this Relay, or a
            file SQLite cannot open.
    """
    if settings.postgres_dsn is not None:
        with _postgres(settings.postgres_dsn) as db:
            yield db
        return
    path = settings.db_path
    if not create and not path.exists():
        raise CommandError(
            f"no database at {path} (set by data_dir or database: RELAY_DATA_DIR, --config);"
            " start the server once or run `relay db migrate`"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = connect(path)
    except (OSError, sqlite3.Error) as e:
        raise CommandError(f"cannot open the database {path}: {e}") from None
    try:
        try:
            migrate(db)
        except RuntimeError as e:  # newer than this Relay
            raise CommandError(f"{path}: {e}") from None
        yield db
    except sqlite3.OperationalError as e:  # e.g. "database is locked" past the busy timeout
        raise CommandError(f"database {path}: {e}") from None
    finally:
        db.close()


@contextmanager
def _postgres(dsn: str) -> Iterator[Database]:
    """`database` on PostgreSQL (docs/postgresql.md): the same queries through the adapter."""
    import psycopg

    from relay.storage.postgres.db import connect as pg_connect
    from relay.storage.postgres.schema import migrate as pg_migrate

    try:
        db = pg_connect(dsn)
    except psycopg.Error as e:
        raise CommandError(f"cannot open the database (PostgreSQL): {e}") from None
    try:
        try:
            pg_migrate(db.conn.raw)
        except RuntimeError as e:  # newer than this Relay, or not Relay's
            raise CommandError(f"database (PostgreSQL): {e}") from None
        yield db  # type: ignore[misc]  # the Database surface the queries use
    except psycopg.OperationalError as e:
        raise CommandError(f"database (PostgreSQL): {e}") from None
    finally:
        db.close()


def transaction(db: Database, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(db, *args, **kwargs)` in one transaction, committed if it returns."""
    if not isinstance(db.conn, sqlite3.Connection):  # PostgreSQL (`_postgres`)
        with db.atomic():
            return fn(db, *args, **kwargs)
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db, *args, **kwargs)
    except BaseException:
        db.conn.rollback()
        raise
    db.conn.execute("COMMIT")
    return result


def snowflakes() -> Snowflakes:
    return Snowflakes(worker=1 + secrets.randbelow(1023))


def find_user(db: Database, username: str) -> UserRow:
    user = users.get_user_by_name(db, username)
    if user is None:
        raise CommandError(f"no user named {username!r}")
    return user


def find_server(db: Database, text: str) -> ServerRow:
    """A server by id, or by name when exactly one server has it."""
    server_id = parse_id(text)
    if server_id is not None and (server := servers.get_server(db, server_id)) is not None:
        return server
    rows = db.execute("SELECT id FROM servers WHERE name = ? LIMIT 2", (text,)).fetchall()
    if not rows:
        raise CommandError(f"no server with id or name {text!r}")
    if len(rows) > 1:
        raise CommandError(f"more than one server is named {text!r}: give its id")
    found = servers.get_server(db, rows[0][0])
    assert found is not None
    return found


def validated(kind: type[T], **values: Any) -> T:
    """`values` as the API's body type `kind` (the same rules as the API)."""
    try:
        return msgspec.convert(values, kind)
    except msgspec.ValidationError as e:
        raise validation_error(e, options=("display_name", "max_uses", "max_age")) from None


def user_info(listing: UserListing) -> UserInfo:
    user = listing.user
    return UserInfo(
        id=str(user.id),
        username=user.username,
        display_name=user.display_name,
        created_at=iso(user.created_at),
        disabled_at=None if user.disabled_at is None else iso(user.disabled_at),
        has_password=user.password_hash is not None,
        logins=listing.logins,
    )


def server_info(listing: ServerListing) -> ServerInfo:
    server = listing.server
    return ServerInfo(
        id=str(server.id),
        name=server.name,
        owner_id=str(server.owner_id),
        owner=listing.owner_name,
        members=listing.member_count,
        public=server.is_public,
        created_at=iso(server.created_at),
    )


def _ended(count: int) -> str:
    return f"{count} login{'' if count == 1 else 's'} ended"


# -- relay user ---------------------------------------------------------------------------------


def user_create(args: argparse.Namespace, settings: Settings) -> None:
    validated(Register, username=args.name, display_name=args.display_name)  # before the prompt
    password = read_password()
    body = validated(
        Register, username=args.name, password=password, display_name=args.display_name
    )
    assert body.password is not None
    password_hash = crypto.hash_password(body.password)
    ids = snowflakes()
    with database(settings, create=True) as db:
        user = transaction(
            db,
            users.insert_user,
            ids.next(),
            body.username,
            body.display_name,
            password_hash,
            None,
            ids.next(),
            now_ms(),
        )
    if args.json:
        print_json(user_info(users.UserListing(user, 0)))
    else:
        print(user.id)


def user_set_password(args: argparse.Namespace, settings: Settings) -> None:
    with database(settings, create=False) as db:
        user = find_user(db, args.name)
        password = read_password("new password: ")
        try:
            checked = msgspec.convert(password, commands.Password)
        except msgspec.ValidationError as e:
            raise validation_error(e, "password") from None
        password_hash = crypto.hash_password(checked)

        def change(db: Database) -> list[int]:
            users.update_user(db, user.id, now_ms(), password_hash=password_hash)
            if args.keep_logins:
                return []
            return users.revoke_user_sessions(db, user.id, now_ms(), "password_reset")

        ended = transaction(db, change)
    print(f"{user.username}: password changed, {_ended(len(ended))}")


def user_disable(args: argparse.Namespace, settings: Settings) -> None:
    with database(settings, create=False) as db:
        user = find_user(db, args.name)
        ended = transaction(db, users.set_disabled, user.id, True, now_ms())
    if user.disabled_at is not None:
        print(f"{user.username}: already disabled, {_ended(len(ended))}")
    else:
        print(f"{user.username}: disabled, {_ended(len(ended))}")


def user_enable(args: argparse.Namespace, settings: Settings) -> None:
    with database(settings, create=False) as db:
        user = find_user(db, args.name)
        transaction(db, users.set_disabled, user.id, False, now_ms())
    state = "enabled" if user.disabled_at is not None else "was not disabled"
    print(f"{user.username}: {state}")


def user_list(args: argparse.Namespace, settings: Settings) -> None:
    with database(settings, create=False) as db:

        def page(after: int) -> list[UserListing]:
            return users.list_users(db, after, PAGE, now_ms())

        found = [user_info(u) for u in _pages(page, lambda u: u.user.id)]
    if args.json:
        for info in found:
            print_json(info)
        return
    print_table(
        ("ID", "USERNAME", "DISPLAY NAME", "CREATED", "DISABLED", "LOGINS"),
        [
            (
                u.id,
                u.username,
                u.display_name,
                u.created_at[:10],
                u.disabled_at and u.disabled_at[:10],
                u.logins,
            )
            for u in found
        ],
    )


# -- relay server -------------------------------------------------------------------------------


def server_create(args: argparse.Namespace, settings: Settings) -> None:
    body = validated(commands.CreateServer, name=args.name)
    ids = snowflakes()
    with database(settings, create=False) as db:
        owner = find_user(db, args.owner)
        state = transaction(
            db,
            servers.create_server,
            ids.next(),
            (ids.next(), ids.next()),
            owner.id,
            body.name,
            now_ms(),
            settings.max_servers_owned,
        )
    if args.json:
        print_json(server_info(servers.ServerListing(state.server, owner.username, 1)))
    else:
        print(state.server.id)


def server_list(args: argparse.Namespace, settings: Settings) -> None:
    with database(settings, create=False) as db:

        def page(after: int) -> list[ServerListing]:
            return servers.list_servers(db, after, PAGE)

        found = [server_info(s) for s in _pages(page, lambda s: s.server.id)]
    if args.json:
        for info in found:
            print_json(info)
        return
    print_table(
        ("ID", "NAME", "OWNER", "MEMBERS", "PUBLIC", "CREATED"),
        [
            (s.id, s.name, s.owner, s.members, "yes" if s.public else "no", s.created_at[:10])
            for s in found
        ],
    )


# -- relay invite -------------------------------------------------------------------------------


def invite_create(args: argparse.Namespace, settings: Settings) -> None:
    body = validated(commands.CreateInvite, max_age=args.max_age, max_uses=args.max_uses)
    with database(settings, create=False) as db:
        server = find_server(db, args.server)
        now = now_ms()
        expires_at = now + body.max_age * 1000 if body.max_age else None
        for _ in range(INVITE_CODE_TRIES):  # 60 random bits: a clash is all but impossible
            try:
                invite = transaction(
                    db,
                    invites.create_invite,
                    invite_code(),
                    server.id,
                    server.owner_id,  # made on the owner's behalf, as the audit log says
                    body.max_uses or None,
                    expires_at,
                    now,
                    AUDIT_REASON,
                    max_invites=settings.max_invites_per_server,
                )
            except Conflict:
                continue
            break
        else:
            raise CommandError("could not pick a free invite code; try again")
    if args.json:
        print_json(invite_out(invite))
    else:
        print(invite.code)


# -- the argument parsers -----------------------------------------------------------------------


def _pages(fetch: Callable[[int], list[T]], key: Callable[[T], int]) -> list[T]:
    """Every row of a listing query read PAGE at a time, by id."""
    found: list[T] = []
    after = 0
    while page := fetch(after):
        found.extend(page)
        after = key(page[-1])
    return found


def _command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Callable[[argparse.Namespace, Settings], None],
    summary: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=summary, description=description or summary)
    parser.set_defaults(run=handler)
    return parser


def add_commands(commands_: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `relay user`, `relay server` and `relay invite`."""
    db_note = (
        "Works on the database directly (the settings' data_dir or database), whether or not"
        " the server runs."
    )
    user = commands_.add_parser(
        "user", help="create, disable and list accounts", description=db_note
    )
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    p = _command(
        user_commands,
        "create",
        user_create,
        "create an account with a password; prints its id",
        "Create an account. The password is asked for on the terminal, or read from the first"
        " line of stdin when that is not a terminal. " + db_note,
    )
    p.add_argument("name", help="username: 2-32 letters, digits, '_' or '.'")
    p.add_argument("--display-name", metavar="TEXT", help="display name (1-64 characters)")
    add_json_option(p)
    p = _command(
        user_commands,
        "set-password",
        user_set_password,
        "give an account a new password and end its logins",
        "Set a new password (asked for on the terminal, or the first line of stdin), and end"
        " every login of the account (a running server closes their connections within about a"
        " second). " + db_note,
    )
    p.add_argument("name", help="username")
    p.add_argument(
        "--keep-logins", action="store_true", help="do not end the account's current logins"
    )
    p = _command(
        user_commands,
        "disable",
        user_disable,
        "refuse an account's logins and end the ones it has",
        "Disable an account: its logins and token refreshes are refused (403 account_disabled)"
        " and its current logins end; a running server refuses their access tokens and closes"
        " their gateway connections within about a second. `relay user enable` undoes it. "
        + db_note,
    )
    p.add_argument("name", help="username")
    p = _command(user_commands, "enable", user_enable, "let a disabled account log in again")
    p.add_argument("name", help="username")
    p = _command(
        user_commands, "list", user_list, "list every account (with its live logins)", db_note
    )
    add_json_option(p)

    server = commands_.add_parser("server", help="create and list servers", description=db_note)
    server_commands = server.add_subparsers(dest="server_command", required=True, metavar="COMMAND")
    p = _command(
        server_commands,
        "create",
        server_create,
        "create a server owned by a user; prints its id",
        "Create a server (with its @everyone role, #general and a General voice channel) owned"
        " by a user. Users already online see it when they next connect. " + db_note,
    )
    p.add_argument("name", help="server name (1-100 characters)")
    p.add_argument("--owner", required=True, metavar="USERNAME", help="the owner's username")
    add_json_option(p)
    p = _command(server_commands, "list", server_list, "list every server", db_note)
    add_json_option(p)

    invite = commands_.add_parser("invite", help="create invites", description=db_note)
    invite_commands = invite.add_subparsers(dest="invite_command", required=True, metavar="COMMAND")
    p = _command(
        invite_commands,
        "create",
        invite_create,
        "create an invite to a server; prints its code",
        "Create an invite to a server, made on the owner's behalf (the audit log says it came"
        " from this command). Anyone logged in joins with POST /v1/api/invites/CODE. " + db_note,
    )
    p.add_argument("server", help="the server's id, or its name if no other server has it")
    p.add_argument(
        "--max-uses", type=int, default=0, metavar="N", help="0 (default): no limit; at most 100"
    )
    p.add_argument(
        "--max-age",
        type=int,
        default=86_400,
        metavar="SECONDS",
        help="lifetime (default 86400, a day; 0: never expires; at most 604800)",
    )
    add_json_option(p)
