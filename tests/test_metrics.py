"""/metrics from a real server, on both of the operator's choices: its own listener
(`metrics_port`) and the REST port behind `metrics_token`. Each test does real work through
real clients and checks that the right series moved."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from wsproto.events import AcceptConnection, CloseConnection, TextMessage

from relay.client import open_gateway
from relay.errors import ConfigError
from relay.metrics import CONTENT_TYPE
from tests.byterelay.conftest import RelaydClient
from tests.conftest import settings_for, start_server
from tests.gateway.conftest import Member, new_member
from tests.realtime.clients import TEXT, RawClient, masked, split_url

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import RunningServer

TOKEN = "metrics-token-for-tests"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One series' value; 0 for a series not (yet) exposed."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as http:
        response = await http.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    return parse(response.text)


async def wait_for(
    url: str, name: str, at_least: float, token: str | None = None, **labels: str
) -> Samples:
    """Scrape until a counter that moves when a connection has ended reaches `at_least`."""
    with trio.fail_after(5):
        while True:
            samples = await scrape(url, token)
            if value(samples, name, **labels) >= at_least:
                return samples
            await trio.sleep(0.01)


async def owner_with_channel(server: RunningServer) -> tuple[Member, str]:
    alice = await new_member(server, "alice")
    guild = await alice.client.call("POST", "/v1/api/servers", {"name": "Home"})
    channel = next(c["id"] for c in guild["channels"] if c["type"] == "text")
    return alice, str(channel)


async def test_metrics_port_shows_the_work_done(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, metrics_port=0, relay_port=0, message_rate=2, message_window_s=60.0
    )
    server, shutdown = await start_server(nursery, settings)
    rt = server.runtime
    [url] = rt.metrics_urls
    with trio.fail_after(10):
        before = await scrape(url)
        assert value(before, "relay_connections_open", listener="metrics") == 1  # this scrape
        assert value(before, "relay_gateway_sessions", state="connected") == 0
        assert value(before, "relay_realtime_connections_open", endpoint="/v1/gateway") == 0
        assert value(before, "process_resident_memory_bytes") > 0

        alice, channel = await owner_with_channel(server)
        messages = f"/v1/api/channels/{channel}/messages"
        async with open_gateway(server.ws_url) as gw:
            await gw.identify(alice.token)
            first = await alice.client.call("POST", messages, {"content": "one"})
            assert (await gw.dispatch("MESSAGE_CREATE"))["d"]["id"] == first["id"]
            await alice.client.call("POST", messages, {"content": "two"})
            await gw.dispatch("MESSAGE_CREATE")
            refused = await alice.client.request("POST", messages, json={"content": "three"})
            assert refused.status_code == 429  # message_rate: 2 per minute

            room = await alice.client.call(
                "POST", "/v1/api/rooms", {"max_clients": 8, "protocol": "peer"}
            )
            host, port = rt.relay_addresses[0]
            relayd = RelaydClient(await trio.open_tcp_stream(host, port))
            async with relayd.stream:
                await relayd.login(b"metrics")  # sends itself one frame and waits for it

                during = await scrape(url)
                assert value(during, "relay_gateway_sessions", state="connected") == 1
                assert value(during, "relay_realtime_connections_open", endpoint="/v1/gateway") == 1
                assert value(during, "relay_connections_open", listener="realtime") == 1
                assert value(during, "relay_connections_open", listener="relay") == 1
                assert value(during, "relay_byterelay_clients") == 1
                assert value(during, "relay_actors_running", kind="channel") == 1
                assert (
                    value(
                        during,
                        "relay_realtime_outbox_fill_ratio_bucket",
                        endpoint="/v1/gateway",
                        le="+Inf",
                    )
                    == 1
                )

        # A channel actor that crashes is restarted by its registry (after 0.1 s).
        await rt.hub.inject_fault(int(channel))
        await wait_for(url, "relay_actor_restarts_total", 1, kind="channel")
        after = await wait_for(
            url, "relay_realtime_closes_total", 1, endpoint="/v1/gateway", code="1000"
        )
        delta = {
            key: after.get(key, 0.0) - before.get(key, 0.0) for key in after.keys() | before.keys()
        }

        def moved(name: str, **labels: str) -> float:
            return delta.get((name, frozenset(labels.items())), 0.0)

        route = "/v1/api/channels/<channel_id>/messages"
        posts = "relay_http_request_duration_seconds_count"
        assert moved(posts, route=route, method="POST", status="201") == 2
        assert moved(posts, route=route, method="POST", status="429") == 1
        assert moved("relay_rate_limited_total", limit="message_rate") == 1
        assert moved("relay_realtime_connections_total", endpoint="/v1/gateway") == 1
        assert value(after, "relay_realtime_connections_open", endpoint="/v1/gateway") == 0
        # READY and two MESSAGE_CREATEs at least (presence updates may add some).
        assert moved("relay_gateway_events_total") >= 3
        assert moved("relay_realtime_frames_sent_total", endpoint="/v1/gateway") >= 4  # + HELLO
        assert moved("relay_realtime_messages_received_total", endpoint="/v1/gateway") == 1
        # Registration, login, the server and two messages at least, in transactions of 1+.
        assert moved("relay_storage_write_batch_size_sum") >= 5
        batches = moved("relay_storage_write_batch_size_count")
        assert 1 <= batches <= moved("relay_storage_write_batch_size_sum")
        assert moved("relay_storage_write_transaction_seconds_count") == batches
        assert moved("relay_actor_starts_total", kind="channel") == 1
        assert moved("relay_actor_restarts_total", kind="channel") == 1
        assert moved("relay_actor_give_ups_total", kind="channel") == 0
        assert moved("relay_actor_starts_total", kind="room") == 1
        assert value(after, "relay_rooms", protocol="peer") == 1
        assert value(after, "relay_room_committed_clients", protocol="peer") == room["max_clients"]
        assert moved("relay_byterelay_logins_total") == 1
        assert moved("relay_byterelay_frames_total") == 1
        assert moved("relay_connections_accepted_total", listener="relay") == 1
        assert moved("relay_connections_accepted_total", listener="http") >= 1

        # Only /metrics, and not on the REST port without a metrics_token.
        async with httpx.AsyncClient() as http:
            assert (await http.get(url.replace("/metrics", "/"))).status_code == 404
            assert (await http.post(url)).status_code == 405
            assert (await http.get(f"{server.url}/metrics")).status_code == 404
    await shutdown()


async def test_metrics_token_on_the_rest_port(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, metrics_token=TOKEN)
    server, shutdown = await start_server(nursery, settings)
    url = f"{server.url}/metrics"
    assert server.runtime.metrics_urls == []  # no metrics_port: no listener of its own
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                refused = await http.get(url, headers=headers)
                assert refused.status_code == 401
                assert refused.json()["error"]["code"] == "bad_metrics_token"
                assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            # The API's document leaves the Prometheus page out (it failed to build with it).
            assert (await http.get(f"{server.url}/v1/api/openapi.json")).status_code == 200
        samples = await scrape(url, TOKEN)
        # The refused scrapes are REST requests like any other.
        status = {"route": "/metrics", "method": "GET", "status": "401"}
        assert value(samples, "relay_http_request_duration_seconds_count", **status) == 3
    await shutdown()


async def test_a_slow_consumer_close_is_counted(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A gateway client that stops reading is cut with 4010, and /metrics says so."""
    settings = settings_for(tmp_path, metrics_token=TOKEN, outbox_frames=1)
    server, shutdown = await start_server(nursery, settings)
    url = f"{server.url}/metrics"
    alice, channel = await owner_with_channel(server)
    with trio.fail_after(20):
        # A tiny receive buffer and no reading: the server's socket buffer fills soon.
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(split_url(server.ws_url))
        slow = RawClient(trio.SocketStream(sock))
        async with slow.stream:
            assert isinstance(await slow.handshake("/v1/gateway"), AcceptConnection)
            assert isinstance(await slow.next_event(), TextMessage)  # HELLO
            identify = json.dumps({"op": 2, "d": {"token": alice.token}}).encode()
            await slow.send(masked(TEXT, identify))
            assert isinstance(await slow.next_event(), TextMessage)  # READY
            messages = f"/v1/api/channels/{channel}/messages"
            resumable = 0.0
            while not resumable:  # until the outbox overflows: the session lost its connection
                await alice.client.call("POST", messages, {"content": "x" * 4000})
                samples = await scrape(url, TOKEN)
                resumable = value(samples, "relay_gateway_sessions", state="resumable")
            while not isinstance(event := await slow.next_event(), CloseConnection):
                assert event is not None, "closed without a close frame"
            assert event.code == 4010
        samples = await wait_for(
            url, "relay_realtime_closes_total", 1, TOKEN, endpoint="/v1/gateway", code="4010"
        )
        assert value(samples, "relay_realtime_frames_dropped_total", endpoint="/v1/gateway") >= 1
        assert value(samples, "relay_gateway_sessions", state="resumable") == 1
    await shutdown()


@pytest.mark.parametrize("value_", ["short", "has a space in it"])
def test_a_weak_metrics_token_is_refused(tmp_path: Path, value_: str) -> None:
    with pytest.raises(ConfigError, match="metrics_token"):
        settings_for(tmp_path, metrics_token=value_)
