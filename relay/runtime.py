"""Runtime: the explicit dependencies that routes and listeners are built with.

Created by `create_app` before the server runs, with the server's `Metrics`; `services.run`
fills in the parts that need I/O (the store, the account service, the gateway hub, the chat
layer's `Chat`) during start-up, and each listener adds its `Gate` to `gates`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.accounts import Accounts
    from relay.byterelay import ByteRelay
    from relay.chat.context import Chat
    from relay.chat.rooms import RoomManager
    from relay.cluster.caps import SharedCaps
    from relay.cluster.sessions import ClusterSessions
    from relay.cluster.stats import BrokerHealth
    from relay.config import Settings
    from relay.gateway.hub import Hub
    from relay.gateway.session import HeldFrames
    from relay.metrics import Metrics
    from relay.realtime.gate import Gate
    from relay.realtime.listener import ListenerStats
    from relay.storage.sqlite.db import Store
    from relay.voice.service import VoiceService


class NotStarted(RuntimeError):
    """A route ran before start-up finished (it cannot, under hypercorn's lifespan)."""


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._store: Store | None = None
        self._accounts: Accounts | None = None
        self._hub: Hub | None = None
        self._chat: Chat | None = None
        # The fan-out's implementation (a subclass of the in-process hub); tests swap in one
        # that sends every crossing through msgpack, as a broker between processes would.
        self.hub_type: type[Hub] | None = None
        self.realtime_urls: list[str] = []  # e.g. ["ws://127.0.0.1:8081"], once listening
        self.http_urls: list[str] = []  # e.g. ["http://127.0.0.1:8080"], once bound
        self.byte_relay: ByteRelay | None = None  # the relayd hub, unless relay_port is off
        self.relay_addresses: list[tuple[str, int]] = []  # the relayd TCP listener's, once bound
        self._rooms: RoomManager | None = None
        # For /metrics: each listener's connection caps and counts, by listener name ("http",
        # "realtime", "relay", "metrics"), and the realtime listener's counts by endpoint.
        self.gates: dict[str, Gate] = {}
        self.realtime_stats: ListenerStats | None = None
        self.voice: VoiceService | None = None  # voice actors and the UDP socket, once started
        self.metrics_urls: list[str] = []  # the metrics_port listener's, once listening
        # Cluster mode: the broker node's figures for /readyz (relay.cluster.node.Node.health).
        self.broker_health: Callable[[], BrokerHealth] | None = None
        # Cluster mode: the gateway's connection caps shared through Redis (relay.cluster.caps).
        self.shared_caps: SharedCaps | None = None
        # Cluster mode: gateway sessions' leases and replay buffers in Redis, and the frames
        # waiting for them (relay.cluster.sessions, relay.gateway.session.HeldFrames).
        self.cluster_sessions: ClusterSessions | None = None
        self.held_frames: HeldFrames | None = None

    def attach(self, store: Store, accounts: Accounts, hub: Hub, chat: Chat) -> None:
        self._store, self._accounts, self._hub, self._chat = store, accounts, hub, chat

    def attach_rooms(self, rooms: RoomManager) -> None:
        self._rooms = rooms

    def detach(self) -> None:
        self._store = self._accounts = self._hub = self._chat = None
        self._rooms = None

    @property
    def ready(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise NotStarted("the store is not open")
        return self._store

    @property
    def accounts(self) -> Accounts:
        if self._accounts is None:
            raise NotStarted("the account service is not running")
        return self._accounts

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise NotStarted("the gateway hub is not running")
        return self._hub

    @property
    def chat(self) -> Chat:
        if self._chat is None:
            raise NotStarted("the chat layer is not running")
        return self._chat

    @property
    def rooms(self) -> RoomManager:
        if self._rooms is None:
            raise NotStarted("the room manager is not running")
        return self._rooms
