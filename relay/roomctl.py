"""`relay rooms list|create|close|say|tail`: the app rooms of a running server, which live in
its memory, reached through its REST API (/v1/api/rooms) and its app-room WebSocket
(/v1/websocket on the realtime port) with the bundled client (relay.client).

Where the server is: `--url` / RELAY_URL and `--realtime-url` / RELAY_REALTIME_URL, else the
settings' host, http_port and realtime_port (https/wss when tls_cert is set), so the commands
find a server started with the same settings. Who is asking (create and close only; listing,
saying and tailing need no account): `--token` / RELAY_TOKEN (an access token), or `--username`
and `--password` / RELAY_USERNAME and RELAY_PASSWORD (asked for on a terminal when missing),
which log in for the one command and log out after it, so scripts do not pile up logins.

`say` and `tail` join the room as a client with its secret. `say` sends one message and leaves:
a broadcast, except in a host room whose host is someone else, where only the host may
broadcast, so it goes to the host. `tail` prints every frame it receives as one JSON line
(binary payloads as base64) until Ctrl-C or the room's end.

Resource handling: each command runs its own `trio.run`; the HTTP client and the WebSocket are
closed when it returns, and a login made for it is ended (shielded, at most LOGOUT_S).

Error handling: an unreachable server, an API error or a refused join is one line on stderr and
exit status 1; bad arguments exit 2.
"""

from __future__ import annotations

import base64
import os
import signal
import sys
import threading
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext, suppress
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import trio
import trio_websocket

from relay.chat.commands import CreateRoom
from relay.client import ApiError, RelayClient, open_websocket
from relay.cliutil import (
    USAGE,
    CommandError,
    add_json_option,
    print_json,
    print_table,
    read_password,
    validation_error,
)
from relay.errors import first_of
from relay.ids import parse_id
from relay.protocol.rooms import KIND_NAMES, Close, decode_server_binary

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Awaitable, Callable

    from relay.config import Settings

JOIN_TIMEOUT_S = 10.0
LEAVE_TIMEOUT_S = 5.0
LOGOUT_S = 5.0
PAGE = 100
NORMAL_CLOSURE = 1000
INTERRUPTED = 130  # the shell's status for a command ended by SIGINT
# A tail that ends with one of these was ended on purpose, not by a failure.
TAIL_ENDS = {NORMAL_CLOSURE: "the server closed the connection", Close.ROOM_CLOSED: "room closed"}
_json = msgspec.json.Encoder()


# -- where the server is ------------------------------------------------------------------------


def _host(settings: Settings) -> str:
    """The address to reach the listeners at: a wildcard bind is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    return f"[{host}]" if ":" in host else host


def http_url(settings: Settings, given: str | None) -> str:
    """The REST base URL: `given` (--url, RELAY_URL), else from the settings."""
    if given := given or os.environ.get("RELAY_URL"):
        return given.rstrip("/")
    if settings.http_port == 0:
        raise CommandError("http_port is 0 (any free port): give the server's URL with --url")
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{_host(settings)}:{settings.http_port}"


def realtime_url(settings: Settings, given: str | None) -> str:
    """The realtime listener's base URL: `given` (--realtime-url, RELAY_REALTIME_URL), else from
    the settings."""
    if given := given or os.environ.get("RELAY_REALTIME_URL"):
        return given.rstrip("/")
    if settings.realtime_port == 0:
        raise CommandError(
            "realtime_port is 0 (any free port): give the server's WebSocket URL with"
            " --realtime-url"
        )
    scheme = "wss" if settings.tls_cert else "ws"
    return f"{scheme}://{_host(settings)}:{settings.realtime_port}"


def room_id(text: str) -> str:
    """A ROOM_ID argument, checked before it goes into a path or a frame."""
    if parse_id(text) is None:
        raise CommandError(f"invalid ROOM_ID {text!r}: a room's id is a number", USAGE)
    return text


def _unreachable(url: str, error: BaseException) -> CommandError:
    detail = str(error) or type(error).__name__
    return CommandError(f"cannot reach the server at {url}: {detail} (is it running?)")


# -- running a command --------------------------------------------------------------------------


def _run(
    command: Callable[[argparse.Namespace, Settings], Awaitable[None]],
    args: argparse.Namespace,
    settings: Settings,
) -> int:
    """`trio.run` the command. Ctrl-C stops it with exit status 130 and no traceback (`tail`
    handles it itself: that is how it ends)."""
    error: CommandError | None = None
    interrupted = False
    try:
        trio.run(partial(command, args, settings))
    except* CommandError as group:  # raised inside a nursery (the WebSocket's) it comes grouped
        error = first_of(group)
    except* KeyboardInterrupt:
        interrupted = True
    if error is not None:
        raise error
    return INTERRUPTED if interrupted else 0


@asynccontextmanager
async def api(args: argparse.Namespace, settings: Settings) -> AsyncIterator[RelayClient]:
    """A client of the REST API; its transport and API errors become CommandError."""
    url = http_url(settings, args.url)
    async with RelayClient(url) as client:
        try:
            yield client
        except ApiError as e:
            raise CommandError(f"{e.message} ({e.code})") from None
        except httpx.TransportError as e:
            raise _unreachable(url, e) from None


@asynccontextmanager
async def logged_in(client: RelayClient, args: argparse.Namespace) -> AsyncIterator[None]:
    """Use --token / RELAY_TOKEN, or log in with the username and password for this command."""
    token, username = args.token, args.username
    if token is None and username is None:
        token = os.environ.get("RELAY_TOKEN") or None
        username = None if token else os.environ.get("RELAY_USERNAME") or None
    if token is not None:
        client.access_token = token
        yield
        return
    if username is None:
        raise CommandError(
            "this needs an account: --token (RELAY_TOKEN), or --username and --password"
            " (RELAY_USERNAME, RELAY_PASSWORD)",
            USAGE,
        )
    password = args.password or os.environ.get("RELAY_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise CommandError("no password: give --password or RELAY_PASSWORD", USAGE)
        password = read_password(f"password of {username}: ", confirm=False)
    await client.login(username, password)
    try:
        yield
    finally:
        # If this fails the login just expires (refresh_token_ttl_s).
        with trio.move_on_after(LOGOUT_S, shield=True), suppress(ApiError, httpx.TransportError):
            await client.logout()


# -- list, create, close ------------------------------------------------------------------------


async def rooms_list(args: argparse.Namespace, settings: Settings) -> None:
    async with api(args, settings) as client:
        rooms: list[dict[str, Any]] = []
        after = "0"
        while page := await client.call("GET", f"/v1/api/rooms?after={after}&limit={PAGE}"):
            rooms.extend(page)
            after = page[-1]["id"]
        summary = await client.call("GET", "/v1/api/summary")
    if args.json:
        for room in rooms:
            print_json(room)
        return
    print_table(
        ("ID", "PROTOCOL", "CLIENTS", "STATUS", "HOST", "CREATED"),
        [
            (
                r["id"],
                r["protocol"],
                f"{r['current_clients']}/{r['max_clients']}",
                r["status"],
                r["host_id"],
                r["created_at"][:19].replace("T", " "),
            )
            for r in rooms
        ],
    )
    total = summary["number_of_rooms"]
    print(
        f"{total} room{'' if total == 1 else 's'} ({total - len(rooms)} private, not listed),"
        f" {summary['current_clients']} of {summary['max_clients']} clients"
    )


async def rooms_create(args: argparse.Namespace, settings: Settings) -> None:
    metadata = None
    if args.metadata is not None:
        try:
            metadata = msgspec.json.decode(args.metadata)
        except msgspec.DecodeError as e:
            raise CommandError(f"invalid metadata: {e}", USAGE) from None
    try:
        body = msgspec.convert(
            {
                "max_clients": args.max_clients,
                "protocol": args.protocol,
                "public": args.public,
                "metadata": metadata,
            },
            CreateRoom,
        )
    except msgspec.ValidationError as e:
        raise validation_error(e, options=("max_clients", "protocol", "metadata")) from None
    async with api(args, settings) as client, logged_in(client, args):
        room = await client.call("POST", "/v1/api/rooms", msgspec.to_builtins(body))
    if args.json:
        print_json(room)
    else:
        print(room["id"], room["secret"])


async def rooms_close(args: argparse.Namespace, settings: Settings) -> None:
    async with api(args, settings) as client, logged_in(client, args):
        await client.call("DELETE", f"/v1/api/rooms/{room_id(args.room_id)}")
    print(f"closed room {args.room_id}")


# -- say and tail -------------------------------------------------------------------------------


@asynccontextmanager
async def joined(
    args: argparse.Namespace, settings: Settings
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, str]]:
    """A WebSocket joined to the room: the connection and the `connected` frame's text."""
    url = realtime_url(settings, args.realtime_url)
    hello = {"type": "connect", "room_id": room_id(args.room_id), "secret": args.secret}
    async with AsyncExitStack() as stack:
        try:
            ws = await stack.enter_async_context(open_websocket(f"{url}/v1/websocket"))
        except* (OSError, trio_websocket.HandshakeError) as group:
            raise _unreachable(url, first_of(group)) from None
        await ws.send_message(_json.encode(hello).decode())
        try:
            with trio.fail_after(JOIN_TIMEOUT_S):
                text = await ws.get_message()
        except trio_websocket.ConnectionClosed as e:
            raise CommandError(f"the server closed the connection: {_reason(e)}") from None
        except trio.TooSlowError:
            raise CommandError("the room did not answer the join in time") from None
        frame = _decode(text)
        if frame.get("type") == "error":
            raise CommandError(f"{frame.get('message')} ({frame.get('code')})")
        yield ws, text if isinstance(text, str) else text.decode()


def _decode(text: str | bytes) -> dict[str, Any]:
    try:
        frame = msgspec.json.decode(text)
    except msgspec.DecodeError:
        frame = None
    if not isinstance(frame, dict):
        raise CommandError("the server sent something that is not a room frame")
    return frame


def _reason(closed: trio_websocket.ConnectionClosed) -> str:
    if closed.reason is None:
        return "no close code"
    return f"{closed.reason.code} {closed.reason.reason or ''}".rstrip()


async def rooms_say(args: argparse.Namespace, settings: Settings) -> None:
    if args.raw:
        try:
            msgspec.json.decode(args.message)
        except msgspec.DecodeError as e:
            raise CommandError(f"--raw: MESSAGE is not JSON: {e}", USAGE) from None
        data = args.message
    else:
        data = _json.encode(args.message).decode()
    async with joined(args, settings) as (ws, text):
        connected = _decode(text)
        is_host = connected.get("host_id") == connected.get("client_id")
        kind = "broadcast" if connected.get("protocol") == "peer" or is_host else "host"
        # Built by hand so a --raw message goes out byte for byte.
        await ws.send_message(f'{{"type":"{kind}","data":{data}}}')
        await ws.send_message('{"type":"leave"}')
        # The room answers in order: an error about the message comes before the close.
        errors = []
        with trio.move_on_after(LEAVE_TIMEOUT_S):
            try:
                while True:
                    frame = _decode(await ws.get_message())
                    if frame.get("type") == "error":
                        errors.append(f"{frame.get('message')} ({frame.get('code')})")
            except trio_websocket.ConnectionClosed:
                pass
        if errors:
            raise CommandError("; ".join(errors))


def _line(message: str | bytes) -> str:
    """One JSON line for a received frame. A relayed `data` is the sender's JSON byte for byte
    and may hold newlines, which outside strings are whitespace: they become spaces."""
    if isinstance(message, str):
        return message.replace("\r", " ").replace("\n", " ")
    try:
        kind, sender, payload = decode_server_binary(message)
    except ValueError:
        return _json.encode({"type": "binary", "data": base64.b64encode(message).decode()}).decode()
    frame = {"type": KIND_NAMES[kind], "from": sender, "binary": base64.b64encode(payload).decode()}
    return _json.encode(frame).decode()


async def rooms_tail(args: argparse.Namespace, settings: Settings) -> None:
    # SIGINT and SIGTERM end the tail cleanly (leaving the room with a normal close), as they
    # stop `relay serve`: handled here even where the shell started it with SIGINT ignored.
    # (Signal handlers belong to the main thread: run in another, the tail ends with the room.)
    main_thread = threading.current_thread() is threading.main_thread()
    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) if main_thread else nullcontext()
    ) as signals:
        async with joined(args, settings) as (ws, text), trio.open_nursery() as nursery:
            if signals is not None:
                nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            await _print_frames(ws, text)
            nursery.cancel_scope.cancel()


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()


async def _print_frames(ws: trio_websocket.WebSocketConnection, first: str) -> None:
    """Print the `connected` frame and every one after it until the connection ends."""
    try:
        _print_line(_line(first))
        while True:
            _print_line(_line(await ws.get_message()))
    except trio_websocket.ConnectionClosed as e:
        code = e.reason.code if e.reason else None
        if code not in TAIL_ENDS:
            raise CommandError(f"the server closed the connection: {_reason(e)}") from None
        print(f"relay: {TAIL_ENDS[code]}", file=sys.stderr)
    except BrokenPipeError:  # the reader went away (`relay rooms tail ... | head -3`)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit's flush does not fail again


def _print_line(line: str) -> None:
    print(line, flush=True)


# -- the argument parsers -----------------------------------------------------------------------


def _server_options(parser: argparse.ArgumentParser, *, realtime: bool) -> None:
    if realtime:
        parser.add_argument(
            "--realtime-url",
            metavar="URL",
            help="the realtime listener, e.g. ws://127.0.0.1:8081 (RELAY_REALTIME_URL;"
            " default: from the settings)",
        )
    else:
        parser.add_argument(
            "--url",
            metavar="URL",
            help="the server, e.g. http://127.0.0.1:8080 (RELAY_URL; default: from the settings)",
        )


def _account_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", help="an access token (RELAY_TOKEN)")
    parser.add_argument("--username", help="log in as this user (RELAY_USERNAME)")
    parser.add_argument(
        "--password", help="their password (RELAY_PASSWORD; asked for on a terminal)"
    )


def _command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    command: Callable[[argparse.Namespace, Settings], Awaitable[None]],
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=summary, description=description)
    parser.set_defaults(run=partial(_run, command))
    return parser


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `relay rooms`."""
    rooms = commands.add_parser(
        "rooms",
        help="list, create, close, talk in and watch a running server's app rooms",
        description="App rooms of a running server, through its REST API and WebSocket.",
    )
    group = rooms.add_subparsers(dest="rooms_command", required=True, metavar="COMMAND")

    p = _command(
        group,
        "list",
        rooms_list,
        "list the public rooms",
        "List the server's public rooms, then a line with the totals (private rooms included)."
        " Needs no account.",
    )
    _server_options(p, realtime=False)
    add_json_option(p)

    p = _command(
        group,
        "create",
        rooms_create,
        "create a room; prints its id and secret",
        "Create a room owned by the account you log in as; prints its id and secret (joining"
        " needs both).",
    )
    p.add_argument("--max-clients", type=int, default=10, metavar="N", help="default 10")
    p.add_argument(
        "--protocol",
        choices=("host", "peer"),
        default="peer",
        help="peer (default): anyone may broadcast; host: only the host",
    )
    p.add_argument(
        "--public", action="store_true", help="listed by `rooms list` (the secret stays private)"
    )
    p.add_argument("--metadata", metavar="JSON", help="a JSON object the room carries")
    _server_options(p, realtime=False)
    _account_options(p)
    add_json_option(p)

    p = _command(
        group,
        "close",
        rooms_close,
        "close a room you created",
        "Close a room: every client in it is told and disconnected. Only its creator may.",
    )
    p.add_argument("room_id", metavar="ROOM_ID")
    _server_options(p, realtime=False)
    _account_options(p)

    p = _command(
        group,
        "say",
        rooms_say,
        "send one message to a room",
        "Join a room with its secret, send MESSAGE (as a JSON string) and leave. It is a"
        " broadcast to everyone else, except in a host room whose host is someone else: there"
        " only the host may broadcast, so it goes to the host.",
    )
    p.add_argument("room_id", metavar="ROOM_ID")
    p.add_argument("secret", metavar="SECRET")
    p.add_argument("message", metavar="MESSAGE")
    p.add_argument("--raw", action="store_true", help="MESSAGE is JSON, sent as it is")
    _server_options(p, realtime=True)

    p = _command(
        group,
        "tail",
        rooms_tail,
        "print what arrives in a room until Ctrl-C",
        "Join a room with its secret and print every frame that arrives, one JSON line each"
        ' (binary payloads as {"type", "from", "binary": base64}), until Ctrl-C or the room'
        " closes.",
    )
    p.add_argument("room_id", metavar="ROOM_ID")
    p.add_argument("secret", metavar="SECRET")
    _server_options(p, realtime=True)
