"""`relay rooms`: the real command against a real server on loopback (REST and /v1/websocket);
`tail` as a real process, since it runs until a signal."""

from __future__ import annotations

import json
import signal
import subprocess
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
from nacl.signing import SigningKey

from relay.client import open_websocket
from relay.protocol.rooms import Kind, encode_binary
from tests.cli.conftest import BIN, Lines, clean_env

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import pytest
    import trio_websocket

    from relay.client import RelayClient
    from tests.cli.conftest import Ran
    from tests.conftest import RunningServer

    RelayCli = Callable[..., Awaitable[Ran]]


async def token_of(server: RunningServer, name: str) -> tuple[RelayClient, str]:
    """A logged-in account (Ed25519 key: no password hashing) and its access token."""
    key = SigningKey.generate()
    client = server.client()
    await client.register(name, public_key=bytes(key.verify_key))
    await client.login_with_key(name, key)
    assert client.access_token is not None
    return client, client.access_token


@asynccontextmanager
async def tail(
    server: RunningServer, room: dict[str, Any]
) -> AsyncIterator[tuple[trio.Process, Lines, Lines]]:
    """`relay rooms tail` as a process, once its `connected` line came: the process and its
    stdout and stderr lines."""
    process = await trio.lowlevel.open_process(
        [str(BIN / "relay"), "rooms", "tail", room["id"], room["secret"]],
        env=clean_env(RELAY_REALTIME_URL=server.ws_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = Lines(process.stdout), Lines(process.stderr)
    try:
        try:
            connected = await out.frame()
        except AssertionError:  # it ended before joining: say why
            raise AssertionError(f"relay rooms tail ended: {await err.rest()!r}") from None
        assert connected["type"] == "connected", connected
        yield process, out, err
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@asynccontextmanager
async def room_client(
    server: RunningServer, room: dict[str, Any]
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A WebSocket client joined to the room (its `connected` frame read)."""
    async with open_websocket(f"{server.ws_url}/v1/websocket") as ws:
        connect = {"type": "connect", "room_id": room["id"], "secret": room["secret"]}
        await ws.send_message(json.dumps(connect))
        assert json.loads(await ws.get_message())["type"] == "connected"
        yield ws


async def next_of(ws: trio_websocket.WebSocketConnection, kind: str) -> dict[str, Any]:
    with trio.fail_after(5):
        while (frame := json.loads(await ws.get_message()))["type"] != kind:
            pass
    return frame  # type: ignore[no-any-return]


async def test_create_list_say_tail_and_close(
    relay_server: RunningServer, relay_cli: RelayCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = await token_of(relay_server, "alice")
    monkeypatch.setenv("RELAY_URL", relay_server.url)
    monkeypatch.setenv("RELAY_REALTIME_URL", relay_server.ws_url)
    monkeypatch.setenv("RELAY_TOKEN", token)
    created = await relay_cli(
        "rooms",
        "create",
        "--public",
        "--max-clients",
        "4",
        "--metadata",
        '{"game": "go"}',
        "--json",
    )
    assert (created.code, created.err) == (0, "")
    room = json.loads(created.out)
    assert (room["protocol"], room["max_clients"], room["public"]) == ("peer", 4, True)
    assert room["metadata"] == {"game": "go"}
    private = await relay_cli("rooms", "create")
    private_id, private_secret = private.out.split()
    assert len(private_secret) > 20

    listed = await relay_cli("rooms", "list")
    header, row, totals = listed.out.splitlines()
    assert header.split() == ["ID", "PROTOCOL", "CLIENTS", "STATUS", "HOST", "CREATED"]
    assert row.split()[:5] == [room["id"], "peer", "0/4", "empty", "-"]
    assert totals == "2 rooms (1 private, not listed), 0 of 10000 clients"
    assert private_id not in listed.out
    as_json = await relay_cli("rooms", "list", "--json")
    assert [json.loads(line)["id"] for line in as_json.out.splitlines()] == [room["id"]]

    async with tail(relay_server, room) as (process, out, err):
        said = await relay_cli("rooms", "say", room["id"], room["secret"], "hello, room")
        assert (said.code, said.out, said.err) == (0, "", "")
        assert await out.frame() == {"type": "client_joined", "client_id": 2}
        assert await out.frame() == {"type": "broadcast", "from": 2, "data": "hello, room"}
        assert await out.frame() == {"type": "client_left", "client_id": 2, "reason": "left"}

        pretty = '{"a":\n  [1, 2]}'  # relayed byte for byte: tail still prints one line
        raw = await relay_cli("rooms", "say", "--raw", room["id"], room["secret"], pretty)
        assert raw.code == 0, raw.err
        await out.next()  # client_joined
        assert await out.frame() == {"type": "broadcast", "from": 3, "data": {"a": [1, 2]}}
        await out.next()  # client_left

        async with room_client(relay_server, room) as ws:
            await ws.send_message(encode_binary(Kind.BROADCAST, 0, b"\x00\xff"))
            await out.next()  # client_joined
            assert await out.frame() == {"type": "broadcast", "from": 4, "binary": "AP8="}

        closed = await relay_cli("rooms", "close", room["id"])
        assert (closed.code, closed.out) == (0, f"closed room {room['id']}\n")
        assert await out.frame() == {"type": "client_left", "client_id": 4, "reason": "left"}
        assert await out.frame() == {
            "type": "error",
            "code": "room_closed",
            "message": "the room was closed by its creator",
        }
        assert await err.rest() == "relay: room closed\n"
        assert await process.wait() == 0

    listed = await relay_cli("rooms", "list")
    assert listed.out.splitlines()[1:] == ["1 room (1 private, not listed), 0 of 10000 clients"]


async def test_tail_ends_on_sigint_and_leaves_the_room(
    relay_server: RunningServer, relay_cli: RelayCli
) -> None:
    _, token = await token_of(relay_server, "alice")
    created = await relay_cli("rooms", "create", "--url", relay_server.url, "--token", token)
    room_id, secret = created.out.split()
    room = {"id": room_id, "secret": secret}
    async with room_client(relay_server, room) as ws, tail(relay_server, room) as (p, out, err):
        assert (await next_of(ws, "client_joined"))["client_id"] == 2
        p.send_signal(signal.SIGINT)
        # A clean leave (close 1000), not a dropped connection that keeps its slot.
        assert await next_of(ws, "client_left") == {
            "type": "client_left",
            "client_id": 2,
            "reason": "left",
        }
        assert await p.wait() == 0
        assert await err.rest() == ""
        assert await out.rest() == ""


async def test_a_username_and_password_log_in_for_one_command_only(
    relay_server: RunningServer, relay_cli: RelayCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await relay_cli("user", "create", "alice", stdin="password123")).code == 0
    monkeypatch.setenv("RELAY_URL", relay_server.url)
    monkeypatch.setenv("RELAY_USERNAME", "alice")
    monkeypatch.setenv("RELAY_PASSWORD", "password123")

    created = await relay_cli("rooms", "create", "--protocol", "host", "--max-clients", "2")
    assert created.code == 0, created.err
    room_id = created.out.split()[0]
    listed = await relay_cli("user", "list", "--json")
    assert json.loads(listed.out)["logins"] == 0  # logged out again
    closed = await relay_cli("rooms", "close", room_id)
    assert closed.code == 0, closed.err

    wrong = await relay_cli("rooms", "create", "--password", "not it")  # a flag beats the env
    assert (wrong.code, wrong.error) == (
        1,
        "relay: wrong username or password (invalid_credentials)",
    )


async def test_failures_are_one_line(
    relay_server: RunningServer, relay_cli: RelayCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, token = await token_of(relay_server, "alice")
    _, bob_token = await token_of(relay_server, "bob")
    monkeypatch.setenv("RELAY_URL", relay_server.url)
    monkeypatch.setenv("RELAY_REALTIME_URL", relay_server.ws_url)
    room = await alice.call("POST", "/v1/api/rooms", {"max_clients": 2, "protocol": "peer"})

    cases: list[tuple[list[str], int, str]] = [
        (["rooms", "say", "123", "s", "hi"], 1, "relay: no such room (unknown_room)"),
        (
            ["rooms", "close", "../1", "--token", token],
            2,
            "relay: invalid ROOM_ID '../1': a room's id is a number",
        ),
        (
            ["rooms", "say", room["id"], "wrong", "hi"],
            1,
            "relay: wrong room secret (invalid_secret)",
        ),
        (["rooms", "say", "--raw", room["id"], room["secret"], "{"], 2, "relay: --raw: MESSAGE is"),
        (
            ["rooms", "create"],
            2,
            "relay: this needs an account: --token (RELAY_TOKEN), or --username and --password"
            " (RELAY_USERNAME, RELAY_PASSWORD)",
        ),
        (
            ["rooms", "create", "--token", "nonsense"],
            1,
            "relay: the access token is malformed or tampered with (invalid_token)",
        ),
        (
            ["rooms", "create", "--token", token, "--max-clients", "0"],
            2,
            "relay: invalid --max-clients: Expected `int` >= 1",
        ),
        (["rooms", "create", "--token", token, "--metadata", "[1"], 2, "relay: invalid metadata:"),
        (
            ["rooms", "close", room["id"], "--token", bob_token],
            1,
            "relay: only the room's creator may do this (not_creator)",
        ),
        (
            ["rooms", "list", "--url", "http://127.0.0.1:1"],
            1,
            "relay: cannot reach the server at http://127.0.0.1:1: ",
        ),
        (
            ["rooms", "tail", room["id"], room["secret"], "--realtime-url", "ws://127.0.0.1:1"],
            1,
            "relay: cannot reach the server at ws://127.0.0.1:1: ",
        ),
    ]
    for argv, status, start in cases:
        ran = await relay_cli(*argv)
        assert (ran.code, ran.error[: len(start)]) == (status, start), argv

    monkeypatch.delenv("RELAY_URL")
    monkeypatch.setenv("RELAY_HTTP_PORT", "0")
    no_url = await relay_cli("rooms", "list")
    assert (no_url.code, no_url.error) == (
        1,
        "relay: http_port is 0 (any free port): give the server's URL with --url",
    )
