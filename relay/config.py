"""Settings: defaults that work with zero config, then an optional TOML file, then RELAY_* env vars.

Every key has one name in TOML (`http_port`) and one in the environment (`RELAY_HTTP_PORT`).
Values are decoded and validated by msgspec; a bad value raises ConfigError with one line that
names the key, which the CLI prints before exiting.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from relay.errors import ConfigError
from relay.forwarded import parse_networks, split_list

if TYPE_CHECKING:
    from collections.abc import Mapping

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0, le=86_400)]  # finite: inf would break timers
FilePath = Annotated[str, msgspec.Meta(min_length=1)]
PublicUrl = Annotated[
    str, msgspec.Meta(pattern=r"^(https?|wss?)://[A-Za-z0-9.\-\[\]:]+(/[\x21-\x7e]*)?$")
]
Secret = Annotated[str, msgspec.Meta(min_length=16, pattern=r"^[\x21-\x7e]+$")]
BrokerUrl = Annotated[str, msgspec.Meta(pattern=r"^(redis|rediss|unix)://\S+$")]
NodeId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
WorkerId = Annotated[int, msgspec.Meta(ge=0, le=1023)]  # relay.ids: 10 bits of worker

ENV_PREFIX = "RELAY_"
# Read by the `relay rooms` commands (relay/roomctl.py), not settings: skipped here, so a shell
# that exports them for those commands can still start the server or run any other command.
CLIENT_VARS = frozenset(
    {"RELAY_URL", "RELAY_REALTIME_URL", "RELAY_TOKEN", "RELAY_USERNAME", "RELAY_PASSWORD"}
)
# Keys whose value may be the word "off" to turn a listener off.
_SWITCHABLE = {"relay_port", "metrics_port"}
# Keys that hold a list: in the environment, entries separated by commas or white space.
_LISTS = {"trusted_proxies", "fetch_ports"}


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything an operator can set. Field names are the TOML keys; RELAY_<NAME> in env."""

    data_dir: str = "./data"
    # defaults to <data_dir>/relay.db; a postgresql:// DSN stores on PostgreSQL instead
    database: str | None = None
    host: str = "127.0.0.1"
    http_port: Port = 8080
    realtime_port: Port = 8081
    # Open connections per listener (REST, realtime, byte relay), in all and from one address.
    max_connections: Positive = 10_000
    max_connections_per_ip: Positive = 1_000
    # Reverse proxies (addresses or networks) whose X-Forwarded-For and X-Request-Id are
    # believed: the client address every per-IP limit and cap uses (relay/forwarded.py).
    trusted_proxies: tuple[str, ...] = ()
    # The address browsers reach Relay at behind a reverse proxy ("https://chat.example.com"):
    # the web client's gateway is then wss://chat.example.com/v1/gateway (GET /v1/api/gateway).
    # Unset: the host the page was loaded from, on the realtime listener's port.
    public_url: PublicUrl | None = None
    audit_log_days: Positive = 90  # audit entries older than this are deleted
    relay_port: Port | None = 33333  # None (env/TOML "off") disables the byte relay
    relay_max_payload_bytes: Annotated[int, msgspec.Meta(ge=1, le=0xFFFF_FFFF)] = 8 * 1024 * 1024
    relay_idle_s: PositiveFloat = 120.0  # a relay connection silent this long is closed
    relay_queue_bytes: Positive = 1024 * 1024  # bytes queued per receiver before senders wait
    relay_stall_s: PositiveFloat = 2.0  # a full receiver making no progress this long is cut
    # Cluster mode: transfers to ids on other nodes waiting to be published (and, apart,
    # those received waiting for their connection), per node; over it dropped and counted.
    relay_forward_queue_bytes: Positive = 16 * 1024 * 1024
    # Prometheus /metrics (docs/metrics.md). On its own listener, without authentication: an
    # operator who sets metrics_port keeps that port from strangers (metrics_host: its address,
    # default `host`). Or on the REST port behind `Authorization: Bearer <metrics_token>`
    # (at least 16 printable characters, no spaces). Either, both, or (the default) neither.
    metrics_port: Port | None = None  # None (env/TOML "off"): no metrics listener
    metrics_host: str | None = None
    metrics_token: Secret | None = None
    tls_cert: FilePath | None = None
    tls_key: FilePath | None = None
    # "auto": text when stderr is a terminal, else one JSON object per line (journald, files).
    log_format: Literal["auto", "text", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: Positive = 1024 * 1024
    body_timeout_s: PositiveFloat = 10.0  # a REST request body must arrive whole within this
    secret_key: str | None = None  # token signing key; generated and stored in the DB if unset
    access_token_ttl_s: Positive = 15 * 60
    refresh_token_ttl_s: Positive = 30 * 24 * 3600
    challenge_ttl_s: Positive = 60
    max_keys_per_user: Positive = 10
    # Live logins (refresh sessions) per user; a new login revokes the least recently used
    # beyond this many.
    max_logins_per_user: Positive = 100
    # Rate limits: N attempts per window, per key (username or client IP).
    login_per_username: Positive = 10
    login_per_ip: Positive = 30
    register_per_ip: Positive = 10
    rate_window_s: PositiveFloat = 60.0
    http_per_ip: Positive = 200  # REST requests per client IP per second, in bursts of as many
    actor_idle_s: PositiveFloat = 300.0
    # Gateway (realtime listener)
    heartbeat_interval_s: PositiveFloat = 41.25
    heartbeat_grace_s: PositiveFloat = 5.0
    resume_window_s: PositiveFloat = 60.0  # a dropped session can RESUME this long
    replay_size: Positive = 1000  # events kept per session for RESUME (up to 1/8 more)
    replay_age_s: PositiveFloat = 120.0
    outbox_frames: Positive = 256  # per connection; full = slow consumer, closed with 4010
    max_frame_bytes: Positive = 64 * 1024  # client frames over this close the socket (1009)
    gateway_rate: Positive = 120  # client frames per rate window (60 s); over it: close 4008
    # Messages one user may send, REST posts and gateway sends (op 12) together: a burst of
    # this many, refilled over the window (default 1 a second); over it: 429 or a rate_limited
    # ack.
    message_rate: Positive = 10
    action_rate: Positive = 30  # message edits, reaction changes, DM opens per message_window_s
    message_window_s: PositiveFloat = 10.0
    # Bots (docs/bots.md): applications one user may own; REST requests (and gateway IDENTIFYs)
    # one bot may make per second; messages one bot may send per message_window_s (REST and
    # gateway together; instead of message_rate).
    max_applications_per_user: Positive = 25
    bot_requests_per_s: Positive = 50
    bot_message_rate: Positive = 50
    # Incoming webhooks (docs/bots.md): per channel, and messages each may post per window.
    max_webhooks_per_channel: Positive = 15
    webhook_rate: Positive = 30
    webhook_window_s: PositiveFloat = 60.0
    search_rate: Positive = 20  # message searches per message_window_s (relay.chat.search)
    gateway_max_inflight_sends: Positive = 16  # per connection; more and the reader waits
    send_timeout_s: PositiveFloat = 10.0  # a new message's wait for its channel and its commit
    # Cluster mode (docs/ownership.md): how long a dead node's channels (and other owned
    # things) wait for a new owner; the owner renews its leases every third of it.
    lease_ttl_s: PositiveFloat = 5.0
    typing_interval_s: PositiveFloat = 5.0  # a user's typing in a channel is sent this often
    max_pins: Positive = 50  # pinned messages per channel
    # Servers and what they hold; over a limit the change is refused with 422.
    max_servers_owned: Positive = 100  # servers one user may own (too_many_servers)
    max_servers_joined: Positive = 200  # memberships one user may have (too_many_servers_joined)
    max_channels_per_server: Positive = 500  # channels, threads not counted (too_many_channels)
    max_threads_per_channel: Positive = 1000  # threads of one text channel, archived too
    max_group_dm_recipients: Annotated[int, msgspec.Meta(ge=3, le=100)] = 10  # the owner included
    max_invites_per_server: Positive = 1000  # usable invites; spent ones are pruned
    max_roles_per_server: Positive = 250  # @everyone included (too_many_roles)
    # Overwrites one channel may have, set one by one (too_many_overwrites); a new channel's
    # body takes at most 100.
    max_overwrites_per_channel: Positive = 100
    # Gateway sessions per user, connected or waiting for a RESUME; the oldest waiting ones make
    # way for a new IDENTIFY, and with this many connected it is refused (4011).
    max_sessions_per_user: Positive = 32
    presence_grace_s: PositiveFloat = 5.0  # offline only after the last session is gone this long
    # App rooms (/v1/api/rooms, /v1/websocket)
    room_capacity: Positive = 10_000  # clients in all rooms; also caps the sum of max_clients
    room_max_clients: Positive = 1000  # the largest max_clients of one room
    rooms_per_user: Positive = 10  # live rooms one account may have created
    room_metadata_bytes: Positive = 4096  # a room's metadata, as JSON
    room_message_bytes: Positive = 16 * 1024  # per room message; over it: close 1009
    room_message_rate: Positive = 100  # messages per second per client (burst the same)
    room_reconnect_grace_s: PositiveFloat = 30.0  # a dropped client keeps its slot this long
    room_empty_grace_s: PositiveFloat = 60.0  # a room without clients closes after this long
    # Voice (docs/voice.md)
    voice_udp_port: Port = 50000  # the one UDP socket of all voice media; 0: any free port
    voice_public_address: str | None = None  # advertised in voice READY (behind NAT); else host
    voice_token_ttl_s: PositiveFloat = 60.0  # a VOICE_SERVER_UPDATE token must be used this soon
    voice_resume_grace_s: PositiveFloat = 10.0  # a dropped voice connection may RESUME this long
    voice_max_members_per_channel: Positive = 99  # connected members of one voice channel
    voice_max_channels: Positive = 1000  # voice channels with someone in them, in the process
    voice_max_packet_bytes: Positive = 1500  # a media packet over this is dropped
    voice_max_packets_per_s: Positive = 600  # per sender (all its sources); excess dropped
    voice_max_bytes_per_s: Positive = 1_000_000  # per sender; excess dropped
    voice_max_delay_ms: Positive = 60  # a UDP packet that waited longer in the server is dropped
    # The voice UDP socket's SO_RCVBUF (the kernel doubles it, caps it at net.core.rmem_max):
    # about voice_max_delay_ms of a busy server's packets, so overload is dropped by the kernel.
    voice_udp_receive_buffer_bytes: Positive = 262_144
    voice_lane_packets: Positive = 64  # per receiver; when full its oldest packets are dropped
    voice_control_rate: Positive = 120  # control frames per 60 s per voice connection (4008)
    echo_endpoint: bool = False  # /v1/echo on the realtime listener, for the Autobahn suite
    # Outgoing requests to URLs users chose (link previews; relay/netfetch, docs/embeds.md):
    # the ports they may reach. fetch_allow_test_loopback lets them reach 127.0.0.1 (and only
    # it): for tests' local servers, never in production.
    fetch_ports: tuple[Port, ...] = (80, 443)
    fetch_allow_test_loopback: bool = False
    # Link previews (docs/embeds.md): fetch tasks, jobs waiting for them (full: the newest job
    # is dropped), and URLs whose preview is remembered, each for preview_cache_ttl_s.
    link_previews: bool = True
    preview_workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    preview_queue: Positive = 256
    preview_cache_entries: Positive = 10_000
    preview_cache_ttl_s: PositiveFloat = 3600.0
    # Web Push (docs/push.md). The VAPID key: a PEM file (push_vapid_key), else
    # <data_dir>/vapid.pem made on first start. Who gets a push: users with no connected
    # gateway session, or all of theirs idle longer than push_idle_after_s.
    push_notifications: bool = True
    push_vapid_key: str | None = None
    push_vapid_subject: Annotated[str, msgspec.Meta(pattern=r"^(mailto:|https://)\S+$")] = (
        "mailto:postmaster@localhost"
    )
    push_ca_file: str | None = None  # extra CAs (PEM) trusted for push services, e.g. tests'
    push_idle_after_s: PositiveFloat = 600.0
    push_workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    push_queue: Positive = 1024  # messages and notifications waiting (full: newest dropped)
    push_coalesce_s: PositiveFloat = 30.0  # one push per user and channel per this long
    push_ttl_s: Annotated[int, msgspec.Meta(ge=0, le=2_419_200)] = 86_400
    push_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 4
    push_retry_max_s: PositiveFloat = 60.0  # the longest wait before a retry (Retry-After too)
    push_message_text: bool = True  # False: pushes never carry message text
    push_subscriptions_per_session: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    max_notification_settings: Positive = 500  # server and channel entries per user
    # Files (docs/files.md). Bodies stream to disk; each limit is checked as bytes arrive.
    max_upload_bytes: Positive = 25 * 1024 * 1024  # one file; over it: 413 file_too_large
    upload_quota_bytes: Positive = 1024 * 1024 * 1024  # per user per UTC day (upload_quota)
    # An upload averaging fewer bytes per second than this, after upload_grace_s, is cut (408).
    upload_min_rate: Positive = 16 * 1024
    upload_grace_s: PositiveFloat = 10.0
    min_free_disk_bytes: Annotated[int, msgspec.Meta(ge=0)] = 256 * 1024 * 1024  # else 507
    file_url_ttl_s: Positive = 24 * 3600  # signed file URLs expire after this
    media_key: Secret | None = None  # 64 hex digits; else <data_dir>/media.key, made on start
    image_threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2  # image decoding at once
    db_readers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    # Cluster mode (docs/cluster.md): a Redis broker between Relay processes; unset, events go
    # only to this process's sessions (the one-process default).
    broker: BrokerUrl | None = None
    node_id: NodeId | None = None  # this process's name on the broker; default host-pid-random
    # Cluster mode: the URLs clients reach THIS node at directly (not the load balancer's):
    # voice and app-room clients are sent there (docs/cluster.md). Unset: the listeners' own.
    node_realtime_url: PublicUrl | None = None  # ws:// or wss://
    node_http_url: PublicUrl | None = None  # http:// or https://
    worker_id: WorkerId | None = None  # the snowflake worker; unset: 0, or leased via the broker
    worker_lease_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0  # the lease's expiry
    broker_queue: Positive = 10_000  # broker messages waiting to be fanned out; full = resync
    broker_publish_queue: Positive = 10_000  # publications waiting to be sent; full = dropped
    broker_max_lag_s: PositiveFloat = 5.0  # a broker message waiting longer = resync
    # Cluster mode: gateway sessions' replay buffers also in Redis, so a RESUME works on any
    # node (docs/cluster.md); off: a session resumes on its own node only, at no cost.
    resume_anywhere: bool = True
    # Cluster mode with resume_anywhere: publications kept per server and user topic in Redis,
    # so a RESUME on another node gets what was published while no node served the session.
    broker_topic_log: Annotated[int, msgspec.Meta(ge=10, le=1_000_000)] = 1000
    shutdown_grace_s: PositiveFloat = 5.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        for name in ("tls_cert", "tls_key", "push_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file {path!r}")
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as e:
            raise ValueError(f"trusted_proxies (RELAY_TRUSTED_PROXIES): {e}") from None

    @property
    def postgres_dsn(self) -> str | None:
        """The PostgreSQL DSN if `database` is one (docs/postgresql.md), else None (SQLite)."""
        if self.database and self.database.startswith(("postgresql://", "postgres://")):
            return self.database
        return None

    @property
    def db_path(self) -> Path:
        return Path(self.database) if self.database else Path(self.data_dir) / "relay.db"


_FIELDS = set(Settings.__struct_fields__)
_PATH_RE = re.compile(r" - at `\$\.(\w+)`")


def load_settings(
    env: Mapping[str, str], config_file: str | Path | None = None, **overrides: Any
) -> Settings:
    """Merge TOML file, then env vars, then keyword overrides; validate once.

    Raises:
        ConfigError: one line naming the bad key (TOML name and env name).
    """
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file, "rb") as f:
                raw.update(tomllib.load(f))
        except OSError as e:
            raise ConfigError(f"config file {config_file}: {e.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:  # tomllib wants UTF-8
            raise ConfigError(f"config file {config_file}: {e}") from None
        for key in raw:
            if key not in _FIELDS:
                raise ConfigError(f"config file {config_file}: unknown key {key!r}")
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in CLIENT_VARS:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {name} (see docs/configuration.md for the list)")
        raw[key] = split_list(value) if key in _LISTS else value
    raw.update(overrides)
    for key in _SWITCHABLE:
        if isinstance(raw.get(key), str) and raw[key].strip().lower() == "off":
            raw[key] = None
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(_describe(str(e))) from None


def _describe(message: str) -> str:
    """Turn msgspec's "Expected int - at `$.http_port`" into a line naming both spellings."""
    match = _PATH_RE.search(message)
    if match is None:
        key = message.partition(" ")[0]
        if key in _FIELDS:  # from __post_init__: "trusted_proxies (RELAY_TRUSTED_PROXIES): ..."
            return f"invalid setting {message}"
        return f"invalid settings: {message}"
    key = match.group(1)
    reason = message[: match.start()]
    return f"invalid setting {key} ({ENV_PREFIX}{key.upper()}): {reason}"
