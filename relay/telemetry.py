"""What /metrics reads from the running server, and the `metrics_port` listener that serves it.

`collect_runtime(rt)` is the scrape-time source (`Metrics.add_source`): it turns the plain
counters the components keep (the listeners' gates, the realtime listener's `ListenerStats`,
the gateway hub's sessions, the actor registries, the byte relay's `RelayStatistics`, the room
manager's summary, the store's queue) into metric families. Nothing it reads is counted per
frame or per event by a prometheus-client object: the hot paths only add to ints they already
had, and the cost of a scrape is a walk over the open connections and sessions on the Trio
thread (2.5 to 4 ms in all with 1000 gateway sessions). docs/metrics.md lists every family.

`serve_metrics` is the separate listener: plain HTTP/1.1 (h11), `GET /metrics` only, no
authentication (the operator keeps the port private), its connections capped by their own
small `Gate`.

Resource handling: `serve_metrics` owns its listening sockets and, through
trio.serve_listeners, one task per connection; each connection gets REQUEST_TIMEOUT_S for
each request (and the idle wait before it), then is closed. Cancelling it closes them all.

Error handling: a malformed request gets 400 and its connection is closed; resets and
timeouts end only their connection.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

import h11
import trio
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
)

from relay.metrics import CONTENT_TYPE
from relay.runtime import NotStarted

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric

    from actors import Registry
    from relay.byterelay import ByteRelay
    from relay.chat.previews import LinkPreviews
    from relay.chat.push import PushNotifier
    from relay.chat.rooms import RoomManager
    from relay.cluster.stats import BrokerHealth
    from relay.gateway.hub import Hub
    from relay.metrics import Metrics
    from relay.realtime.gate import Gate
    from relay.realtime.listener import ListenerStats
    from relay.runtime import Runtime
    from relay.storage.sqlite.db import Store
    from relay.voice.service import VoiceService

log = logging.getLogger("relay.metrics")

METRICS_PATH = "/metrics"
MAX_CONNECTIONS = 64  # the metrics listener's, in all (Prometheus keeps one open per target)
MAX_CONNECTIONS_PER_IP = 16
REQUEST_TIMEOUT_S = 10.0
MAX_REQUEST_HEAD_BYTES = 16 * 1024
# Outbox fill (queued frames / outbox_frames) of each open realtime connection, at scrape time.
OUTBOX_FILL_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def collect_runtime(rt: Runtime) -> Iterator[Metric]:
    """Every metric family read from live state (what is not running yet is left out)."""
    yield from _listeners(rt.gates)
    if rt.realtime_stats is not None:
        yield from _realtime(rt.realtime_stats)
    hub = _running(lambda: rt.hub)
    if hub is not None:
        yield from _gateway(hub)
    store = _running(lambda: rt.store)
    if store is not None:
        yield from _storage(store)
    chat = _running(lambda: rt.chat)
    if chat is not None and chat.link_previews is not None:
        yield from _previews(chat.link_previews)
    rooms = _running(lambda: rt.rooms)
    yield from _actors(hub, rooms, rt.voice)
    if rooms is not None:
        yield from _rooms(rooms)
    if rt.byte_relay is not None:
        yield from _byte_relay(rt.byte_relay)
    push = _running(lambda: rt.chat.push)
    if push is not None:
        yield from _push(push)
    if rt.voice is not None:
        yield from _voice(rt.voice)
    if rt.broker_health is not None:
        yield from _broker(rt.broker_health())


def _running(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except NotStarted:  # starting up or shutting down
        return None


def _listeners(gates: dict[str, Gate]) -> Iterator[Metric]:
    labels = ["listener"]
    open_ = GaugeMetricFamily(
        "relay_connections_open",
        "Open connections per listener (http, realtime, relay: the byte relay's TCP, metrics)",
        labels=labels,
    )
    accepted = CounterMetricFamily(
        "relay_connections_accepted", "Connections admitted per listener", labels=labels
    )
    refused = CounterMetricFamily(
        "relay_connections_refused",
        "Connections refused per listener: over max_connections or max_connections_per_ip",
        labels=labels,
    )
    for name, gate in sorted(gates.items()):
        open_.add_metric([name], gate.total)
        accepted.add_metric([name], gate.admitted)
        refused.add_metric([name], gate.refused)
    yield from (open_, accepted, refused)


def _realtime(stats: ListenerStats) -> Iterator[Metric]:
    labels = ["endpoint"]
    open_ = GaugeMetricFamily(
        "relay_realtime_connections_open",
        "Open WebSocket connections per realtime endpoint",
        labels=labels,
    )
    opened = CounterMetricFamily(
        "relay_realtime_connections",
        "WebSocket connections accepted per realtime endpoint",
        labels=labels,
    )
    closes = CounterMetricFamily(
        "relay_realtime_closes",
        "Ended WebSocket connections per endpoint and close code (4010: slow consumer; 1006: "
        "gone without a close)",
        labels=["endpoint", "code"],
    )
    frames = CounterMetricFamily(
        "relay_realtime_frames_sent", "Frames written per endpoint", labels=labels
    )
    sent = CounterMetricFamily(
        "relay_realtime_sent_bytes", "Bytes written per endpoint", labels=labels
    )
    dropped = CounterMetricFamily(
        "relay_realtime_frames_dropped",
        "Frames refused by a full or closing outbox per endpoint",
        labels=labels,
    )
    received = CounterMetricFamily(
        "relay_realtime_messages_received", "Messages received per endpoint", labels=labels
    )
    queued = GaugeMetricFamily(
        "relay_realtime_outbox_frames",
        "Frames waiting in the outboxes of an endpoint's open connections",
        labels=labels,
    )
    fill = GaugeHistogramMetricFamily(
        "relay_realtime_outbox_fill_ratio",
        "Open connections by how full their outbox is (queued / outbox size), sampled at the "
        "scrape; a full one is cut as a slow consumer",
        labels=labels,
    )
    for path, endpoint in sorted(stats.endpoints.items()):
        open_.add_metric([path], len(endpoint.open))
        opened.add_metric([path], endpoint.opened)
        for code, count in sorted(endpoint.closes.items()):
            closes.add_metric([path, str(code)], count)
        now = endpoint.sample(OUTBOX_FILL_BUCKETS)
        frames.add_metric([path], now.frames_sent)
        sent.add_metric([path], now.bytes_sent)
        dropped.add_metric([path], now.frames_dropped)
        received.add_metric([path], now.messages_received)
        queued.add_metric([path], now.queued)
        bounds = zip(OUTBOX_FILL_BUCKETS, now.fill_buckets, strict=True)
        buckets = [(str(bound), count) for bound, count in bounds]
        buckets.append(("+Inf", len(endpoint.open)))
        fill.add_metric([path], buckets, now.fill_sum)
    handshakes = CounterMetricFamily(
        "relay_realtime_handshakes_failed",
        "Connections admitted by the realtime listener that never reached an endpoint (not a "
        "WebSocket upgrade, unknown path, timeout, gone)",
    )
    handshakes.add_metric([], stats.handshakes_failed)
    yield from (open_, opened, closes, frames, sent, dropped, received, queued, fill, handshakes)


def _gateway(hub: Hub) -> Iterator[Metric]:
    sessions = GaugeMetricFamily(
        "relay_gateway_sessions",
        "Gateway sessions: connected, or resumable (no connection, within resume_window_s)",
        labels=["state"],
    )
    connected, resumable, events = hub.session_counts()
    sessions.add_metric(["connected"], connected)
    sessions.add_metric(["resumable"], resumable)
    yield sessions
    yield CounterMetricFamily(
        "relay_gateway_events",
        "Events delivered to gateway sessions (READY, dispatches), connected or buffered for "
        "a RESUME",
        value=events,
    )


def _previews(previews: LinkPreviews) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "relay_link_previews_queued", "Messages waiting for a preview worker", value=previews.queued
    )
    yield CounterMetricFamily(
        "relay_link_previews_dropped",
        "Messages that got no preview because the queue was full (drop newest)",
        value=previews.dropped,
    )
    fetches = CounterMetricFamily(
        "relay_link_preview_fetches",
        "Links fetched for previews, by result: preview, none, or the refusal's reason",
        labels=["result"],
    )
    for result, count in sorted(previews.fetches.items()):
        fetches.add_metric([result], count)
    yield fetches
    yield CounterMetricFamily(
        "relay_link_preview_cache_hits",
        "Links whose preview (or lack of one) came from the cache",
        value=previews.cache_hits,
    )


def _storage(store: Store) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "relay_storage_writes_queued",
        "Write requests waiting for the writer (the queue holds 1024; then writers wait)",
        value=store.queued,
    )


def _actors(
    hub: Hub | None, rooms: RoomManager | None, voice: VoiceService | None
) -> Iterator[Metric]:
    labels = ["kind"]
    running = GaugeMetricFamily("relay_actors_running", "Running actors by kind", labels=labels)
    starts = CounterMetricFamily(
        "relay_actor_starts", "Actors started on demand by kind", labels=labels
    )
    restarts = CounterMetricFamily(
        "relay_actor_restarts", "Actors restarted after a crash by kind", labels=labels
    )
    give_ups = CounterMetricFamily(
        "relay_actor_give_ups",
        "Actor keys given up after too many crashes (5 in 60 s) by kind",
        labels=labels,
    )
    registries: list[tuple[str, Registry[Any]]] = []
    if hub is not None:
        registries += [("channel", hub.channels), ("presence", hub.presence)]
    if rooms is not None:
        registries.append(("room", rooms.registry))
    if voice is not None:
        registries.append(("voice", voice.actors))
    for kind, registry in registries:
        running.add_metric([kind], registry.count_running())
        starts.add_metric([kind], registry.starts)
        restarts.add_metric([kind], registry.restarts)
        give_ups.add_metric([kind], registry.give_ups)
    yield from (running, starts, restarts, give_ups)


def _rooms(rooms: RoomManager) -> Iterator[Metric]:
    _, per_protocol = rooms.summary()
    labels = ["protocol"]
    count = GaugeMetricFamily("relay_rooms", "Live app rooms by protocol", labels=labels)
    clients = GaugeMetricFamily(
        "relay_room_clients",
        "Clients in app rooms by protocol (away ones within their grace included)",
        labels=labels,
    )
    committed = GaugeMetricFamily(
        "relay_room_committed_clients",
        "Sum of the rooms' max_clients by protocol (at most room_capacity in all)",
        labels=labels,
    )
    for protocol, counts in sorted(per_protocol.items()):
        count.add_metric([protocol], counts.number_of_rooms)
        clients.add_metric([protocol], counts.current_clients)
        committed.add_metric([protocol], counts.committed_clients)
    yield from (count, clients, committed)
    yield GaugeMetricFamily(
        "relay_room_capacity_clients",
        "room_capacity: the most clients all rooms may hold",
        value=rooms.capacity,
    )


def _byte_relay(relay: ByteRelay) -> Iterator[Metric]:
    stats = relay.stats
    yield GaugeMetricFamily(
        "relay_byterelay_connections_open",
        "Open byte-relay connections, TCP and /v1/relay",
        value=stats.open_connections,
    )
    yield GaugeMetricFamily(
        "relay_byterelay_clients", "Logged-in byte-relay client ids", value=len(relay.clients)
    )
    yield GaugeMetricFamily(
        "relay_byterelay_queued_bytes",
        "Bytes held for logged-in byte-relay clients (queued or being written)",
        value=sum(peer.outbox.used_bytes for peer in relay.clients.values()),
    )
    yield CounterMetricFamily("relay_byterelay_logins", "Byte-relay logins", value=stats.logins)
    yield CounterMetricFamily(
        "relay_byterelay_frames", "Transfer frames forwarded", value=stats.frames_forwarded
    )
    yield CounterMetricFamily(
        "relay_byterelay_forwarded_bytes",
        "Bytes of the transfer frames forwarded (headers included)",
        value=stats.bytes_forwarded,
    )
    yield CounterMetricFamily(
        "relay_byterelay_heartbeats", "Heartbeat frames received", value=stats.heartbeats
    )
    dropped = CounterMetricFamily(
        "relay_byterelay_dropped_frames",
        "Transfers dropped: to an id nobody is logged in as (offline), or whose receiver went "
        "while it waited for room (gone)",
        labels=["reason"],
    )
    dropped.add_metric(["offline"], stats.dropped_offline)
    dropped.add_metric(["gone"], stats.dropped_gone)
    if relay.cluster is not None:
        dropped.add_metric(["cluster"], relay.cluster.dropped)
    yield dropped
    if relay.cluster is not None:
        crossing = CounterMetricFamily(
            "relay_byterelay_cluster_frames",
            "Cluster mode: transfer frames to ids on other nodes (out), and from other nodes to "
            "ids here (in)",
            labels=["direction"],
        )
        crossing.add_metric(["out"], relay.cluster.forwarded)
        crossing.add_metric(["in"], relay.cluster.received)
        yield crossing
    closes = CounterMetricFamily(
        "relay_byterelay_closes",
        "Byte-relay connections closed by the relay, by reason (slow: a full outbox made no "
        "progress for relay_stall_s)",
        labels=["reason"],
    )
    closes.add_metric(["replaced"], stats.replaced)
    closes.add_metric(["slow"], stats.slow_disconnects)
    closes.add_metric(["idle"], stats.idle_closes)
    closes.add_metric(["violation"], stats.violations)
    yield closes


def _broker(health: BrokerHealth) -> Iterator[Metric]:
    """Cluster mode: this node's traffic through the Redis broker (docs/cluster.md)."""
    yield GaugeMetricFamily(
        "relay_broker_connected", "1 while the pub/sub connection is up", value=health.connected
    )
    yield GaugeMetricFamily(
        "relay_broker_subscriptions", "Topics subscribed to", value=health.subscriptions
    )
    yield GaugeMetricFamily(
        "relay_broker_lag_seconds",
        "How late the watchdog's latest probe came back through Redis",
        value=health.lag_s,
    )
    for name, text, count in (
        ("published", "Publications sent to the broker", health.published),
        ("publish_dropped", "Publications dropped (queue full, or Redis failed)",
         health.publish_dropped),
        ("received", "Other nodes' publications heard", health.received),
        ("delivered", "Other nodes' publications delivered here", health.delivered),
        ("resyncs", "Times this node fell behind the broker (or lost it) and resynced",
         health.resyncs),
        ("resynced_sessions", "Gateway sessions ended by those resyncs (closed with 4014)",
         health.resynced_sessions),
        ("forwarded", "Posts and channel events sent to another node's channel owner",
         health.forwarded),
        ("served", "Posts forwarded by other nodes and committed here as owner", health.served),
        ("sessions_taken_over", "Gateway sessions resumed here from another node",
         health.sessions_taken_over),
        ("caught_up", "Events from the topic logs delivered to sessions taken over here",
         health.caught_up),
        ("catch_ups_refused",
         "Takeovers refused (INVALID_SESSION): a topic log no longer held what was missed",
         health.catch_ups_refused),
    ):  # fmt: skip
        yield CounterMetricFamily(f"relay_broker_{name}", text, value=count)
    yield GaugeMetricFamily(
        "relay_broker_owned_channels", "Channels this node owns now", value=health.owned_channels
    )


# -- the metrics_port listener -----------------------------------------------------------------


async def serve_metrics(
    metrics: Metrics,
    host: str | None,
    port: int,
    gate: Gate,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve `GET /metrics` until cancelled; reports the URLs (e.g.
    ["http://127.0.0.1:9100/metrics"]) once listening. Port 0 picks a free port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    urls = [f"http://{_address(listener.socket)}{METRICS_PATH}" for listener in listeners]
    async with trio.open_nursery() as nursery:
        handler = partial(_serve_connection, metrics, gate)
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(urls)
    raise AssertionError("serve_listeners returned")  # pragma: no cover


def _address(sock: trio.socket.SocketType) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve_connection(metrics: Metrics, gate: Gate, stream: trio.SocketStream) -> None:
    """One scraper's connection: requests one after the other (keep-alive) until it closes,
    breaks HTTP or stays silent for REQUEST_TIMEOUT_S. Never raises (but Cancelled)."""
    try:
        ip = str(stream.socket.getpeername()[0])
    except OSError:  # already reset by the client
        await trio.aclose_forcefully(stream)
        return
    if not gate.admit(ip):
        await trio.aclose_forcefully(stream)
        return
    try:
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES)
        while True:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                request = await _next_request(http, stream)
                if request is None:
                    return
                await stream.send_all(_answer(http, metrics, request))
                if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                    return  # h11 wants the connection closed (HTTP/1.0, Connection: close)
                http.start_next_cycle()
                continue
            return  # timed out
    except h11.RemoteProtocolError as e:
        log.debug("bad metrics request", extra={"ip": ip, "reason": str(e)})
        body = b"bad request\n"
        response = h11.Response(
            status_code=e.error_status_hint,
            headers=[("content-length", str(len(body))), ("connection", "close")],
        )
        try:
            with trio.move_on_after(1.0):
                await stream.send_all(http.send(response) + (http.send(h11.Data(data=body)) or b""))
        except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the scraper went away
    finally:
        gate.leave(ip)
        await trio.aclose_forcefully(stream)


async def _next_request(http: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
    """The next request, its body read and discarded; None when the client closed."""
    request: h11.Request | None = None
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await stream.receive_some(MAX_REQUEST_HEAD_BYTES))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None
        # h11.Data: a body nobody asked for, dropped


def _answer(http: h11.Connection, metrics: Metrics, request: h11.Request) -> bytes:
    """The response to one request, as bytes: the metrics, or 404 / 405."""
    path = request.target.split(b"?", 1)[0]
    headers: list[tuple[str, str]] = []
    if path != METRICS_PATH.encode():
        status, body, content_type = 404, b"not found; try /metrics\n", "text/plain"
    elif request.method not in (b"GET", b"HEAD"):
        status, body, content_type = 405, b"method not allowed\n", "text/plain"
        headers.append(("allow", "GET, HEAD"))
    else:
        status, body, content_type = 200, metrics.exposition(), CONTENT_TYPE
    headers += [("content-type", content_type), ("content-length", str(len(body)))]
    out = http.send(h11.Response(status_code=status, headers=headers)) or b""
    if request.method != b"HEAD":
        out += http.send(h11.Data(data=body)) or b""
    return out + (http.send(h11.EndOfMessage()) or b"")


def _push(push: PushNotifier) -> Iterator[Metric]:
    """Web Push (relay.chat.push): its queues and what became of the pushes."""
    messages, pushes = push.queued()
    queued = GaugeMetricFamily(
        "relay_push_queued", "Waiting: messages to plan, pushes to deliver", labels=["queue"]
    )
    queued.add_metric(["messages"], messages)
    queued.add_metric(["pushes"], pushes)
    yield queued
    outcomes = CounterMetricFamily(
        "relay_push_deliveries",
        "Pushes by outcome: sent (accepted), failed (given up), pruned (404/410: the "
        "subscription was deleted), dropped (a full queue, drop newest: a push, or a message "
        "nobody was pushed about)",
        labels=["outcome"],
    )
    for outcome, count in (
        ("sent", push.sent),
        ("failed", push.failed),
        ("pruned", push.pruned),
        ("dropped", push.dropped),
    ):
        outcomes.add_metric([outcome], count)
    yield outcomes


def _voice(voice: VoiceService) -> Iterator[Metric]:
    """Voice: a walk over the identified voice sessions (one per member in voice) and the
    media path's counters (actors.voice.VoiceStats)."""
    connections = GaugeMetricFamily(
        "relay_voice_connections",
        "Identified voice sessions: connected (a /v1/voice WebSocket attached), or resumable "
        "(none attached, within voice_resume_grace_s)",
        labels=["state"],
    )
    members = GaugeMetricFamily(
        "relay_voice_members",
        "Connected voice members by media transport (none: SELECT_PROTOCOL not sent yet)",
        labels=["transport"],
    )
    by_transport = {"udp": 0, "websocket": 0, "none": 0}
    connected = queued = 0
    for session in voice.sessions.values():
        queued += len(session.lane.packets)
        if session.closer is None:
            continue
        connected += 1
        by_transport[session.protocol or "none"] += 1
    connections.add_metric(["connected"], connected)
    connections.add_metric(["resumable"], len(voice.sessions) - connected)
    for transport, count in by_transport.items():
        members.add_metric([transport], count)
    yield connections
    yield members
    yield GaugeMetricFamily(
        "relay_voice_states",
        "Voice states (members who joined a voice channel through the gateway, connected or not)",
        value=len(voice.states.by_user),
    )
    yield GaugeMetricFamily(
        "relay_voice_channels_active",
        "Voice channels with at least one voice state (at most voice_max_channels)",
        value=len(voice.states.by_channel),
    )
    yield GaugeMetricFamily(
        "relay_voice_lane_packets",
        "Packets waiting in the members' media lanes (each drops its oldest when full)",
        value=queued,
    )
    stats = voice.stats
    yield CounterMetricFamily(
        "relay_voice_packets_received",
        "Media packets (RTP and RTCP) that reached a voice actor, UDP and WebSocket",
        value=stats.received,
    )
    yield CounterMetricFamily(
        "relay_voice_received_bytes", "Their bytes", value=stats.received_bytes
    )
    yield CounterMetricFamily(
        "relay_voice_packets_forwarded",
        "Packets re-encrypted for a receiver and handed on (one per receiver)",
        value=stats.forwarded,
    )
    yield CounterMetricFamily(
        "relay_voice_forwarded_bytes", "Their bytes", value=stats.forwarded_bytes
    )
    dropped = CounterMetricFamily(
        "relay_voice_packets_dropped",
        "Media packets dropped, by reason (docs/metrics.md)",
        labels=["reason"],
    )
    for reason, count in stats.dropped.items():
        dropped.add_metric([reason], count)
    yield dropped
