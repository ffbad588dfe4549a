"""Everything that runs beside the HTTP server: the store, the account service, the gateway hub
(with its channel actors), the relayd byte relay (unless relay_port is off), the metrics
listener (if metrics_port is set) and maintenance jobs.

Resource handling: `run_services` owns one nursery for all of them and keeps it open until it
is cancelled (the app's after_serving hook does that); the store closes last, after every task
that could write to it has ended.

Error handling: a crash in any of these tasks propagates and stops the process; individual actors
are supervised by the registry and do not get this far.
"""

from __future__ import annotations

import gc
import logging
import resource
import ssl
import sys
from contextlib import AbstractAsyncContextManager, contextmanager
from functools import partial
from typing import TYPE_CHECKING

import certifi
import trio

from relay.accounts import Accounts, now_ms
from relay.byterelay import ByteRelay, RelayEndpoint, serve_byte_relay
from relay.chat.context import Chat
from relay.chat.fanout import LoginRevoked
from relay.chat.previews import LinkPreviews
from relay.chat.push import PushNotifier, load_vapid
from relay.chat.rooms import RoomManager
from relay.chat.rooms import summary as room_summary
from relay.chat.views import Views
from relay.errors import ListenError
from relay.forwarded import TrustedProxies
from relay.gateway.endpoint import gateway_endpoint
from relay.gateway.hub import Hub
from relay.gateway.session import HeldFrames
from relay.ids import Snowflakes
from relay.media.service import Media
from relay.netfetch import FetchPolicy
from relay.protocol.gateway import Close
from relay.realtime.echo import echo
from relay.realtime.gate import Gate
from relay.realtime.listener import ListenerStats, serve_realtime
from relay.rooms.endpoint import room_endpoint
from relay.storage import audience, audit, files, invites, users
from relay.storage.areas import POSTGRES, SQLITE
from relay.storage.sqlite.db import open_store
from relay.telemetry import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, serve_metrics
from relay.voice.endpoint import endpoint_for as voice_endpoint_for
from relay.voice.service import VoiceService

if TYPE_CHECKING:
    from collections.abc import Iterator

    from relay.byterelay.cluster import ClusterRelay
    from relay.chat.fanout import Fanout
    from relay.cluster.node import Node
    from relay.cluster.places import NodeUrls, Place
    from relay.cluster.rooms import RoomPlaces
    from relay.cluster.topiclog import Mark
    from relay.cluster.voice import ClusterVoice
    from relay.config import Settings
    from relay.realtime.listener import Endpoint
    from relay.runtime import Runtime
    from relay.storage.sqlite.db import Store

log = logging.getLogger("relay.services")
PRUNE_EVERY_S = 600
ORPHAN_AGE_S = 3600.0  # a blob is an orphan only once older than any upload in progress
NOFILE_WANTED = 1 << 20  # the soft open-files limit asked for when the hard one is unlimited


def raise_open_files_limit(settings: Settings) -> int:
    """Raise the soft open-files limit to the hard one and return it: every connection is a
    descriptor, and the usual soft limit (1024) is far below `max_connections`. Logs a warning
    when that is more than the limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # e.g. over the kernel's nr_open: keep what we have
            log.warning("could not raise the open-files limit", extra={"limit": soft})
    if soft != resource.RLIM_INFINITY and soft < settings.max_connections + 256:
        log.warning(
            "the open-files limit is below what max_connections allows",
            extra={"limit": soft, "max_connections": settings.max_connections},
        )
    return soft


def tune_gc() -> None:
    """Make CPython's cyclic GC (and GIL hand-offs) fit a server that holds many long-lived
    objects.

    A thousand gateway connections keep ~260k tracked objects (tasks, cancel scopes, channels);
    with the default thresholds a full collection ran about once a second and took ~200 ms
    (scripts/bench: 10 s of a 25 s run), and those pauses made the p99. Objects made during
    start-up are frozen out of collection, and the older generations are collected rarely.
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    # The store's writer thread runs many short SQLite calls, each giving up and retaking the
    # GIL; behind a busy event loop each retake waited up to the 5 ms default interval, which
    # stalled group commit (the fan-out's publisher waits for those commits). Measured with
    # scripts/bench fanout, 1000 sessions, op 12 senders: 148-164k -> 178-185k deliveries/s.
    sys.setswitchinterval(0.001)


def open_database(settings: Settings, rt: Runtime) -> AbstractAsyncContextManager[Store]:
    """The store of `database`: the SQLite file (the default), or PostgreSQL for a
    postgresql:// DSN (docs/postgresql.md; psycopg is imported only then)."""
    if settings.postgres_dsn is None:
        return open_store(settings.db_path, readers=settings.db_readers, metrics=rt.metrics)
    from relay.storage.postgres.db import open_pg_store

    return open_pg_store(settings.postgres_dsn, readers=settings.db_readers, metrics=rt.metrics)


async def run_services(
    rt: Runtime, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    settings = rt.settings
    tune_gc()
    raise_open_files_limit(settings)
    async with (
        open_database(settings, rt) as store,
        trio.open_nursery() as nursery,
    ):
        node = await start_cluster(nursery, settings, store)
        accounts = await Accounts.open(store, settings)
        views = Views(partial(store.read, audience.server_snapshot))
        hub = (rt.hub_type or Hub)(store, settings, views)
        media = await trio.to_thread.run_sync(Media.open, settings)
        hub.file_urls = media
        fanout: Fanout = hub if node is None else await node.start_fanout(hub, store)
        areas = SQLITE if settings.postgres_dsn is None else POSTGRES
        chat = Chat(store, fanout, views, settings, areas, media=media)
        if node is not None:
            node.share_limits(chat)
            rt.broker_health = node.health
            rt.shared_caps = node.caps
            if settings.resume_anywhere:
                await start_cluster_sessions(nursery, rt, node, hub)
        chat.bots.update(accounts.bot_ids())
        accounts.on_revoke.append(lambda login: fanout.announce(LoginRevoked(login)))
        await nursery.start(hub.run)
        hub.on_session_end.append(lambda session: chat.voice.session_ended(session.id))
        urls = None if node is None else node_urls(node)
        cluster_voice = None if node is None or urls is None else node_voice(node, urls, chat)
        rt.voice = VoiceService(settings, chat.voice, chat, cluster_voice)
        if cluster_voice is not None:
            cluster_voice.service = rt.voice
            cluster_voice.tell_here = hub.to_server
        hub.on_permissions_changed.append(rt.voice.permissions_changed)
        with listening("voice_udp_port", settings.host, settings.voice_udp_port):
            await nursery.start(rt.voice.run)
        keep_audit_ms = settings.audit_log_days * 86_400_000
        nursery.start_soon(prune_forever, store, settings.access_token_ttl_s * 1000, keep_audit_ms)
        nursery.start_soon(prune_files_forever, store, media)
        nursery.start_soon(accounts.follow_revocations)
        rt.attach(store, accounts, hub, chat)
        if settings.link_previews:
            previews = LinkPreviews(chat, FetchPolicy.from_settings(settings), settings)
            chat.link_previews = previews
            hub.on_created.append(previews.submit)
            await nursery.start(previews.run)
        if settings.push_notifications:
            await nursery.start(run_push, settings, chat, hub, accounts)
        rooms = RoomManager(settings, store.ids)
        await nursery.start(rooms.run)
        if node is not None and urls is not None:
            rooms.cluster = places = node_rooms(node, urls)
            places.on_lost = rooms.lost
            places.own_summary = partial(room_summary, rooms)
            await nursery.start(places.run)
        rt.attach_rooms(rooms)
        if settings.relay_port is not None:
            rt.byte_relay = ByteRelay.from_settings(settings)
            if node is not None:
                await nursery.start(node_byte_relay(node, rt.byte_relay).run)
            rt.gates["relay"] = rt.byte_relay.gate
            with listening("relay_port", settings.host, settings.relay_port):
                rt.relay_addresses = await nursery.start(
                    serve_byte_relay, rt.byte_relay, settings.host, settings.relay_port
                )
            tcp = " ".join(f"{host}:{port}" for host, port in rt.relay_addresses)
            log.info("byte relay listening", extra={"tcp": tcp})
        rt.realtime_stats = ListenerStats()
        rt.gates["realtime"] = gate = Gate(
            settings.max_connections, settings.max_connections_per_ip
        )
        with listening("realtime_port", settings.host, settings.realtime_port):
            rt.realtime_urls = await nursery.start(
                partial(
                    serve_realtime,
                    realtime_endpoints(rt),
                    settings.host,
                    settings.realtime_port,
                    ssl_context=tls_context(settings),
                    max_message_bytes=settings.max_frame_bytes,
                    outbox_frames=settings.outbox_frames,
                    gate=gate,
                    proxies=TrustedProxies(settings.trusted_proxies),
                    stats=rt.realtime_stats,
                )
            )
        log.info("realtime listening", extra={"ws": " ".join(rt.realtime_urls)})
        if urls is not None:
            await nursery.start(urls.run, own_place(settings, rt))
        if cluster_voice is not None:
            await nursery.start(cluster_voice.run)
        if settings.metrics_port is not None:
            host = settings.metrics_host or settings.host
            rt.gates["metrics"] = gate = Gate(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP)
            with listening("metrics_port", host, settings.metrics_port):
                rt.metrics_urls = await nursery.start(
                    serve_metrics, rt.metrics, host, settings.metrics_port, gate
                )
            log.info("metrics listening", extra={"url": " ".join(rt.metrics_urls)})
        where = "postgresql" if settings.postgres_dsn else str(settings.db_path)  # no password
        log.info("services started", extra={"database": where})
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            rt.detach()
            hub.close()
            rooms.close()
            if rt.voice is not None:
                rt.voice.close()


async def start_cluster(nursery: trio.Nursery, settings: Settings, store: Store) -> Node | None:
    """With a broker: this process as a node of a cluster (relay.cluster, imported only then),
    its store making ids with the worker id it leased. Without: None, and the configured worker
    id (default 0)."""
    if settings.broker is None:
        store.ids = Snowflakes(settings.worker_id or 0)
        return None
    from relay.cluster.node import run_node

    node: Node = await nursery.start(run_node, settings)
    store.ids = Snowflakes(node.worker_id)
    log.info("cluster node", extra={"node": node.broker.node_id, "worker_id": node.worker_id})
    return node


async def start_cluster_sessions(nursery: trio.Nursery, rt: Runtime, node: Node, hub: Hub) -> None:
    """Cluster mode: gateway sessions resumable on any node (relay.cluster.sessions): their
    replay buffers in Redis, and their frames held until written there."""
    from relay.cluster.envelope import server_topic, user_topic

    sessions = await node.start_sessions()
    fanout = node.fanout
    assert fanout is not None
    # The topic logs (relay.cluster.topiclog): each state written carries its topics' marks; a
    # topic whose count starts here has its sessions' states written again (now with it).
    sessions.catch_up = fanout.catch_up

    def marks_of(session_id: str) -> dict[str, Mark]:
        session = hub.sessions.get(session_id)
        if session is None:
            return {}
        user_id = session.user_id
        servers = hub.servers_of.get(user_id, ())
        return fanout.marks([user_topic(user_id), *(server_topic(s) for s in servers)])

    def synced(topic: str) -> None:
        kind, _, key = topic.removeprefix("relay:").partition(":")
        if kind == "s":
            touched = hub.server_sessions(int(key))
        else:
            touched = list(hub.user_sessions(int(key)))
        for session in touched:
            sessions.log.touch(session.id)

    sessions.log.marks_of = marks_of
    fanout.on_synced = synced
    held = HeldFrames(sessions.log)
    await nursery.start(held.run)
    rt.cluster_sessions, rt.held_frames = sessions, held
    hub.pace = held.room
    hub.on_session_end.append(lambda session: sessions.ended(session.id))

    def lost(session_id: str) -> None:
        # Another node writes it now (or Redis was unreachable past the lease): not here.
        session = hub.sessions.get(session_id)
        if session is not None:
            hub.close_sessions([session], int(Close.RESYNC), "session moved to another node")

    sessions.on_lost = lost


async def run_push(
    settings: Settings,
    chat: Chat,
    hub: Hub,
    accounts: Accounts,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Web Push (relay.chat.push): the VAPID key (made on first start), the notifier fed by
    every committed message, and revoked logins' subscriptions dropped."""
    vapid = await trio.to_thread.run_sync(load_vapid, settings)
    context = ssl.create_default_context(cafile=certifi.where())
    if settings.push_ca_file is not None:
        context.load_verify_locations(settings.push_ca_file)
    policy = FetchPolicy(
        ports=frozenset(settings.fetch_ports),
        allow_test_loopback=settings.fetch_allow_test_loopback,
        ssl_context=context,
    )
    idle_after_s = settings.push_idle_after_s
    push = PushNotifier(
        chat.store,
        chat.q,
        settings,
        vapid,
        policy,
        lambda user_id: hub.attentive(user_id, idle_after_s),
    )
    chat.push = push
    hub.on_created.append(push.submit)
    accounts.on_revoke.append(push.forget_login)
    await push.run(task_status=task_status)


@contextmanager
def listening(key: str, host: str, port: int) -> Iterator[None]:
    """Turn a failure to bind (e.g. a port in use) into a ListenError naming the setting.

    Raises:
        ListenError: "cannot listen on HOST:PORT (KEY, RELAY_KEY): the system's reason".
    """
    try:
        yield
    except OSError as e:
        where = f"{host}:{port} ({key}, RELAY_{key.upper()})"
        raise ListenError(f"cannot listen on {where}: {e.strerror or e}") from None


def realtime_endpoints(rt: Runtime) -> dict[str, Endpoint]:
    """Path -> endpoint on the realtime listener."""
    endpoints: dict[str, Endpoint] = {"/v1/gateway": partial(gateway_endpoint, rt)}
    endpoints["/v1/websocket"] = partial(room_endpoint, rt.rooms)
    if rt.voice is not None:
        endpoints["/v1/voice"] = voice_endpoint_for(rt.settings, rt.voice, rt.chat.voice)
    if rt.settings.echo_endpoint:
        endpoints["/v1/echo"] = echo
    if rt.byte_relay is not None:
        endpoints["/v1/relay"] = RelayEndpoint(rt.byte_relay)
    return endpoints


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def prune_forever(store: Store, keep_revoked_ms: int, keep_audit_ms: int) -> None:
    """Delete expired challenges, long-dead sessions, spent invites and old audit entries every
    few minutes (the audit log in batches, each its own short transaction)."""
    while True:
        deleted = await store.write(users.prune, now_ms(), keep_revoked_ms)
        if deleted:
            log.info("pruned expired auth rows", extra={"rows": deleted})
        deleted = await store.write(invites.prune_invites, now_ms())
        if deleted:
            log.info("pruned spent invites", extra={"rows": deleted})
        deleted = 0
        while batch := await store.write(audit.prune, now_ms() - keep_audit_ms):
            deleted += batch
        if deleted:
            log.info("pruned old audit entries", extra={"rows": deleted})
        await trio.sleep(PRUNE_EVERY_S)


async def prune_files(store: Store, media: Media, orphan_age_s: float = ORPHAN_AGE_S) -> None:
    """Delete uploads no message claimed within an hour and stored images no message shows,
    then blobs no row names (written
    more than `orphan_age_s` ago) and temp files a crash left."""
    deleted = await store.write(files.prune_unclaimed, now_ms())
    if deleted:
        log.info("pruned unclaimed uploads", extra={"rows": deleted})
    images = await store.write(files.prune_images, now_ms())
    if images:
        log.info("pruned stored images no message shows", extra={"rows": images})
    blobs = await media.sweep(partial(store.read, files.unreferenced), orphan_age_s)
    if blobs:
        log.info("pruned orphan blobs", extra={"blobs": blobs})


async def prune_files_forever(store: Store, media: Media) -> None:
    while True:
        await prune_files(store, media)
        await trio.sleep(PRUNE_EVERY_S)


# -- cluster mode: where voice channels, app rooms and byte-relay ids live (docs/cluster.md)


def node_urls(node: Node) -> NodeUrls:
    """Where this node is reached directly, for the other nodes (relay.cluster.places)."""
    from relay.cluster.places import NodeUrls

    return NodeUrls(node.redis, node.broker.node_id, node.settings.worker_lease_s)


def own_place(settings: Settings, rt: Runtime) -> Place:
    """This node's URLs for the others: the settings, else its listeners' own addresses."""
    from relay.cluster.places import Place

    ws = settings.node_realtime_url or rt.realtime_urls[0]
    place = Place(ws, settings.node_http_url or (rt.http_urls or ["http://" + settings.host])[0])
    if any(wild in url for url in (place.ws, place.http) for wild in ("//0.0.0.0", "//[::]")):
        log.warning(
            "set node_realtime_url and node_http_url: other nodes send clients to this one",
            extra={"ws": place.ws, "http": place.http},
        )
    return place


def node_voice(node: Node, urls: NodeUrls, chat: Chat) -> ClusterVoice:
    """Voice channels served by one node of the cluster at a time (relay.cluster.voice)."""
    from relay.cluster.voice import ClusterVoice

    return ClusterVoice(
        node.redis, node.broker, node.settings, chat.voice, urls, instance=node.caps.instance
    )


def node_rooms(node: Node, urls: NodeUrls) -> RoomPlaces:
    """App rooms on the node that made them, found from the others (relay.cluster.rooms)."""
    from relay.cluster.rooms import RoomPlaces

    s = node.settings
    return RoomPlaces(
        node.redis,
        node.broker.node_id,
        urls,
        s.lease_ttl_s,
        keep_s=s.room_empty_grace_s,
        instance=node.caps.instance,
    )


def node_byte_relay(node: Node, relay: ByteRelay) -> ClusterRelay:
    """Byte-relay ids logged in on one node at a time, transfers forwarded between nodes
    (relay.byterelay.cluster)."""
    from relay.byterelay.cluster import ClusterRelay

    return ClusterRelay(node.redis, node.broker, relay, node.settings)
