"""Relay's Prometheus metrics: one registry per server, the few instruments observed as things
happen, and the sources read at scrape time.

Each server builds one `Metrics` (relay.app's `create_app`) and hands it to what observes: the
store (a histogram point per write transaction), the app (one per REST request) and the edges
that refuse with `RateLimited`. Nothing registers with prometheus-client's global default
registry, so several servers in one process (the tests) never share a series.

Everything on a hot path (a gateway event to a thousand sessions, a byte-relay frame) is counted
in plain ints on the objects that already exist and turned into metric families only when
/metrics is read: `add_source` registers a function that yields them (relay.telemetry's is the
one that reads the running server). docs/metrics.md lists every metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from prometheus_client.metrics_core import Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST  # the text format, version 0.0.4
# REST answers take from well under a millisecond (a cached read) to seconds (argon2, a busy
# writer); ten buckets keep a route x method x status series small.
HTTP_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
# Requests per write transaction: 1 when idle, up to the writer's MAX_BATCH (256) under load.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WRITE_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _Source:
    """A collector made of one function; `describe` is empty, so registering never calls it."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class Metrics:
    """The registry of one server and the instruments observed directly."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)  # process_*: CPU, RSS, open files
        PlatformCollector(registry=registry)  # python_info
        GCCollector(registry=registry)  # python_gc_*
        self._http = Histogram(
            "relay_http_request_duration_seconds",
            "REST requests by route (the rule, not the path), method and status: time from the "
            "request's start to its response",
            ["route", "method", "status"],
            buckets=HTTP_SECONDS_BUCKETS,
            registry=registry,
        )
        self._rate_limited = Counter(
            "relay_rate_limited",
            "Requests and gateway sends refused by a rate limit (429 or a rate-limited ack), "
            "by the limit's setting",
            ["limit"],
            registry=registry,
        )
        self._batch_size = Histogram(
            "relay_storage_write_batch_size",
            "Write requests per transaction of the store's writer (group commit)",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self._batch_seconds = Histogram(
            "relay_storage_write_transaction_seconds",
            "Time of one writer transaction, BEGIN to COMMIT, as the writer task waits for it",
            buckets=WRITE_SECONDS_BUCKETS,
            registry=registry,
        )

    def add_source(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Have `collect()` called at every scrape for metric families read from live state."""
        self.registry.register(_Source(collect))

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._http.labels(route, method, str(status)).observe(seconds)

    def rate_limited(self, limit: str) -> None:
        self._rate_limited.labels(limit).inc()

    def write_batch(self, requests: int, seconds: float) -> None:
        self._batch_size.observe(requests)
        self._batch_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """Every metric in the text format (CONTENT_TYPE)."""
        return generate_latest(self.registry)
