"""The access log: one line per REST request and per realtime connection end, each with a
request id (the REST one also in the X-Request-Id header), and the log formats ("auto" is text
on a terminal, JSON lines otherwise)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from typing import TYPE_CHECKING

import trio
import trio.testing

from relay.client import open_gateway, open_websocket
from relay.logs import JsonFormatter, TextFormatter, json_lines
from tests.conftest import settings_for, start_server
from tests.gateway.conftest import new_member

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.conftest import RunningServer


async def wait_for_record(
    caplog: pytest.LogCaptureFixture, logger: str, message: str, count: int = 1
) -> list[logging.LogRecord]:
    """The first `count` records of `logger` with `message`, once the server has logged them
    (after a connection ends the server still has its side to finish)."""
    with trio.fail_after(5):
        while True:
            records = [r for r in caplog.records if r.name == logger and r.getMessage() == message]
            if len(records) >= count:
                return records
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)


async def test_a_rest_request_logs_route_user_and_its_request_id(
    relay_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    member = await new_member(relay_server, "logged")
    caplog.clear()
    caplog.set_level(logging.INFO, logger="relay.http")
    response = await member.client.request("GET", f"/v1/api/users/{member.user_id}")
    assert response.status_code == 200
    [record] = await wait_for_record(caplog, "relay.http", "request")
    line = record.__dict__
    assert line["method"] == "GET"
    assert line["path"] == f"/v1/api/users/{member.user_id}"
    assert line["route"] == "/v1/api/users/<user_id>"
    assert line["status"] == 200
    assert line["user"] == member.user_id
    assert line["ip"] == "127.0.0.1"
    assert line["duration_ms"] >= 0
    assert re.fullmatch(r"[0-9a-f]{16}", line["request_id"])
    assert response.headers["X-Request-Id"] == line["request_id"]
    # An unknown route has no route, an anonymous caller no user; both still have an id.
    caplog.clear()
    response = await member.client.request("GET", "/v1/api/nothing-here", token="")
    [record] = await wait_for_record(caplog, "relay.http", "request")
    assert (record.route, record.user, record.status) == (None, None, 404)  # type: ignore[attr-defined]
    assert response.headers["X-Request-Id"] == record.request_id  # type: ignore[attr-defined]


async def test_a_gateway_connection_logs_its_end(
    relay_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    member = await new_member(relay_server, "gateway")
    caplog.set_level(logging.INFO, logger="relay.realtime")
    with trio.fail_after(5):
        async with open_gateway(relay_server.ws_url) as gw:
            await gw.identify(member.token)
            answered = dict(gw.ws.handshake_headers)
        async with open_websocket(relay_server.ws_url + "/v1/websocket"):
            pass  # an app-room client that never joined: no user
    gateway, room = await wait_for_record(caplog, "relay.realtime", "connection closed", 2)
    assert gateway.path == "/v1/gateway"  # type: ignore[attr-defined]
    assert gateway.code == 1000  # type: ignore[attr-defined]
    assert gateway.user == member.user_id  # type: ignore[attr-defined]
    assert gateway.ip == "127.0.0.1"  # type: ignore[attr-defined]
    assert gateway.duration_ms > 0  # type: ignore[attr-defined]
    assert re.fullmatch(r"[0-9a-f]{16}", gateway.request_id)  # type: ignore[attr-defined]
    assert answered[b"x-request-id"] == gateway.request_id.encode()  # type: ignore[attr-defined]
    assert (room.path, room.user) == ("/v1/websocket", None)  # type: ignore[attr-defined]
    assert room.request_id != gateway.request_id  # type: ignore[attr-defined]


def record(**extra: object) -> logging.LogRecord:
    entry = logging.makeLogRecord({"name": "relay.http", "levelname": "INFO", "msg": "request"})
    entry.__dict__.update(extra)
    return entry


def test_json_lines_carry_the_fields_as_keys() -> None:
    line = JsonFormatter().format(record(path="/a b", status=200, user=None))
    decoded = json.loads(line)
    assert decoded["msg"] == "request"
    assert decoded["level"] == "info"
    assert (decoded["path"], decoded["status"], decoded["user"]) == ("/a b", 200, None)


def test_text_lines_quote_values_that_would_split() -> None:
    line = TextFormatter().format(
        record(path="/v1/gateway", reason='no heartbeat in "time"', note="a=b", empty="")
    )
    assert line.endswith(' path=/v1/gateway reason="no heartbeat in \\"time\\"" note="a=b" empty=')


def test_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    primary, secondary = os.openpty()
    try:
        with open(secondary, "w") as terminal:
            assert not json_lines("auto", terminal)
            assert json_lines("json", terminal)
    finally:
        os.close(primary)
    pipe = io.StringIO()
    assert json_lines("auto", pipe)
    assert not json_lines("text", pipe)
    assert json_lines("auto", sys.stderr) == (not sys.stderr.isatty())


async def test_connections_ended_by_shutdown_are_logged_too(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    member = await new_member(running, "leaving")
    caplog.set_level(logging.INFO, logger="relay.realtime")
    with trio.fail_after(10):
        async with open_gateway(running.ws_url) as gw:
            await gw.identify(member.token)
            await shutdown()  # returns once the server has stopped
    [line] = [r for r in caplog.records if r.getMessage() == "connection closed"]
    assert (line.path, line.user) == ("/v1/gateway", member.user_id)  # type: ignore[attr-defined]
    # 1001 (going away), or 1011 when the gateway endpoint's clean-up (hub.session_gone) runs
    # after run_services has detached the runtime: a shutdown-order race of its own, which
    # also logs "realtime endpoint failed"; not this test's subject.
    assert line.code in (1001, 1011)  # type: ignore[attr-defined]
