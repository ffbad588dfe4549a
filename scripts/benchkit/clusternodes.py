"""Scenario `cluster`, second part: fan-out to `fanout_sessions`' largest count (1,000 by
default) of gateway sessions spread evenly over 1, 2 and 3 Relay processes that share one
PostgreSQL database and one Redis, as a real cluster runs (docs/cluster.md).

The senders (gateway op 12, as scenario `fanout`) are on node 1, which also holds its share of
the readers; every post is committed on PostgreSQL (a private server from Debian's packages,
with its default durability, as scenario `storage` starts it) and reaches the other nodes'
sessions through Redis. Figures at two fixed rates (`latency_deliveries_s` and HIGH_RATE times
it): the deliveries/s reached, p50/p99 latency from send to delivery, and CPU per delivery
(µs, every node and Redis; PostgreSQL's backends are not counted). On one machine the nodes
share its cores, so more nodes cost more CPU per delivery rather than adding capacity: what is
measured is the broker's overhead. Committed messages/s on PostgreSQL next to SQLite is
scenario `storage`'s.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from benchkit.cluster import HIGH_RATE, latency_rows, redis_server
from benchkit.core import Row
from benchkit.relay import HOST
from benchkit.scenarios import SETTLE_S, _check
from benchkit.storage import postgres

if TYPE_CHECKING:
    from benchkit.core import Bench
    from benchkit.procs import Worker
    from benchkit.relay import RelayServer

NODE_COUNTS = (1, 2, 3)


def cluster_nodes(bench: Bench) -> list[Row]:
    sessions = max(bench.config.fanout_sessions)
    results: dict[int, dict[str, Any]] = {}
    try:
        with redis_server(bench) as (url, redis_pid), postgres(bench) as dsn:
            for round_, count in enumerate(NODE_COUNTS):
                bench.log(f"cluster: {sessions} sessions over {count} node(s) on PostgreSQL")
                try:
                    results[count] = _case(bench, count, sessions, url, redis_pid, dsn, round_)
                except Exception as e:  # this case's cells stay empty; the others still run
                    bench.fail(f"cluster {count} node(s), PostgreSQL", e)
    except RuntimeError as e:
        bench.fail("cluster: redis-server or PostgreSQL", e)
    bench.details["cluster_nodes"] = results
    case = f"{sessions} sessions over N nodes, PostgreSQL"
    low = f"@{bench.config.latency_deliveries_s:,} deliveries/s"
    high = f"@{bench.config.latency_deliveries_s * HIGH_RATE:,} deliveries/s"

    def values(phase: str, figure: str, sub: str | None = None) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for count, r in results.items():
            found = r[phase].get(sub, {}) if sub else r[phase]
            out[f"nodes_{count}"] = found.get(figure) if isinstance(found, dict) else None
        return out

    def cpu_per_delivery() -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for count, r in results.items():
            rate, cpu = r["high"]["deliveries_per_s"], r["high"]["server_cpu_pct"]
            out[f"nodes_{count}"] = round(cpu / 100 * 1e6 / rate, 2) if rate else None
        return out

    return [
        Row("cluster", case, f"deliveries/s {high}", "1/s", values("high", "deliveries_per_s")),
        *latency_rows(case, low, high, values),
        Row("cluster", case, f"CPU per delivery {high} (nodes and Redis)", "µs",
            cpu_per_delivery(), better="lower"),
    ]  # fmt: skip


def _case(
    bench: Bench, count: int, sessions: int, url: str, redis_pid: int, dsn: str, round_: int
) -> dict[str, Any]:
    config = bench.config
    senders = config.fanout_senders
    started: list[Worker] = []
    nodes: list[RelayServer] = []
    try:
        # Every node on the one database and broker; their other state (files) is unused here.
        nodes = [bench.start_relay(broker=url, database=dsn) for _ in range(count)]
        first = nodes[0]
        listening = sessions - senders
        users = math.ceil(listening / config.sessions_per_user)
        # One database for every case: each case's names are its own.
        owner = first.accounts(f"c{round_}owner", 1)[0]
        readers = first.accounts(f"c{round_}reader", users)
        posters = first.accounts(f"c{round_}poster", senders)
        _, channel = first.community(owner, readers + posters)
        tokens = [readers[i // config.sessions_per_user].token for i in range(listening)]
        receivers: list[Worker] = []
        shares = [len(part) for part in _split(tokens, count)]
        procs = max(1, config.recv_procs // count)
        at = 0
        for node, share in zip(nodes, shares, strict=True):
            job = {"host": HOST, "port": node.ws_port, "path": "/v1/gateway?encoding=json",
                   "tokens": tokens[at : at + share]}  # fmt: skip
            at += share
            group = bench.ws_workers(job, share, procs, name=f"receiver-n{len(receivers)}")
            receivers += group
            started += group
        sender_job = {"host": HOST, "port": first.ws_port, "path": "/v1/gateway?encoding=json",
                      "tokens": [p.token for p in posters], "senders": senders,
                      "channel_id": channel}  # fmt: skip
        sender = bench.ws_workers(sender_job, senders, 1, name="sender")[0]
        started.append(sender)
        time.sleep(SETTLE_S)
        label = {"scenario": "cluster", "server": "relay", "sessions": sessions, "nodes": count}
        phases: dict[str, Any] = {}
        for phase, times in {"latency": 1, "high": HIGH_RATE}.items():
            rate = config.latency_deliveries_s * times / sessions / senders
            phases[phase] = bench.run_phase(
                label=dict(label, phase=f"{phase} ({count} node(s), PostgreSQL)"),
                server_pid=first.pid,
                extra_pids=[n.pid for n in nodes[1:]] + [redis_pid],
                receivers=[*receivers, sender],
                sender=sender,
                sender_cmd={"mode": "rate", "rate_per_sender": rate},
                latency=True,
            )
            _check(bench, phases[phase], f"relay ({count} node(s), PostgreSQL)")
        return phases
    finally:
        bench.stop_workers(started)
        for node in nodes:
            node.stop()


def _split(items: list[str], parts: int) -> list[list[str]]:
    size, extra = divmod(len(items), parts)
    out, at = [], 0
    for i in range(parts):
        n = size + (1 if i < extra else 0)
        out.append(items[at : at + n])
        at += n
    return out
