"""Scenario `cluster`: gateway fan-out through the Redis broker (docs/cluster.md) against the
in-process fan-out, Relay alone, never in the default list (it starts a private redis-server).

One channel, `fanout_sessions`' largest (1,000 by default) gateway sessions, `fanout_senders`
of them posting with op 12, as scenario `fanout`'s gateway run:
- `in-process`: one Relay without a broker (today's default);
- `broker, 1 node`: the same with `RELAY_BROKER`: every event is also published to Redis and
  heard back (and skipped) by the node: the broker's cost on a node's own traffic;
- `broker, 2 nodes`: the senders on one node, every reader on another, on copies of one
  database (made while the first was stopped; until PostgreSQL storage lands nodes cannot share
  one): every delivery crosses Redis. CPU is both nodes' and Redis's. The posting node owns
  the channel (it posted first): posts commit where they are sent;
- `broker, 2 nodes, forwarded`: the same nodes, but the readers' node owns the channel (one post
  was sent there first): every post is forwarded to it through Redis (docs/ownership.md),
  committed there and delivered to its own sessions; the ack comes back through Redis. Against
  the case above: the cost of a send that reaches another node than the channel's owner.
Figures: the most deliveries/s (one node, and the forwarded case, whose acks come from the
readers' node: senders on one node and readers on another
have no backpressure between them, so a closed-loop sender outruns the readers' node, which
then falls behind and resyncs); p50/p99 latency at a fixed rate (`latency_deliveries_s`) and at
HIGH_RATE times it, and CPU per delivery at that higher rate (µs of CPU, every process of the
case: the nodes and, with a broker, Redis).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

from benchkit.core import Row
from benchkit.procs import free_port
from benchkit.relay import HOST
from benchkit.scenarios import SETTLE_S, _check, _wait_accepts

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from benchkit.core import Bench
    from benchkit.procs import Worker
    from benchkit.relay import RelayServer

CASES = ("in-process", "broker, 1 node", "broker, 2 nodes", "broker, 2 nodes, forwarded")
HIGH_RATE = 5  # the second fixed rate, in multiples of latency_deliveries_s


@contextlib.contextmanager
def redis_server(bench: Bench) -> Iterator[tuple[str, int]]:
    """A private redis-server (Debian's package) on a free port: (its URL, its pid)."""
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = bench.scratch / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    proc = bench.procs.popen([*args, "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    try:
        _wait_accepts(port)
        yield f"redis://{HOST}:{port}/0", proc.pid
    finally:
        bench.procs.stop(proc)


def latency_rows(
    case: str, low: str, high: str, values: Callable[[str, str, str], dict[str, float | None]]
) -> list[Row]:
    """p50 and p99 at the two fixed rates (`low`, `high`: their labels), from each case's
    `values(phase, figure, "latency")`; shared with benchkit.clusternodes."""
    return [
        Row("cluster", case, f"p{q} latency {label}", "ms", values(phase, f"p{q}_ms", "latency"),
            better="lower")
        for label, phase in ((low, "latency"), (high, "high"))
        for q in (50, 99)
    ]  # fmt: skip


def cluster(bench: Bench) -> list[Row]:
    sessions = max(bench.config.fanout_sessions)
    results: dict[str, dict[str, Any]] = {}
    try:
        with redis_server(bench) as (url, redis_pid):
            for case in CASES:
                bench.log(f"cluster: {case}, {sessions} sessions")
                try:
                    results[case] = _case(bench, case, sessions, url, redis_pid)
                except Exception as e:  # this case's cells stay empty; the others still run
                    bench.fail(f"cluster {case}", e)
    except RuntimeError as e:
        bench.fail("cluster: redis-server", e)
    bench.details["cluster"] = results
    key = {
        "in-process": "relay",
        "broker, 1 node": "broker_1",
        "broker, 2 nodes": "broker_2",
        "broker, 2 nodes, forwarded": "broker_2_forwarded",
    }
    case = f"{sessions} sessions"

    def values(phase: str, figure: str, sub: str | None = None) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, r in results.items():
            found = r[phase].get(sub, {}) if sub else r[phase]
            out[key[name]] = found.get(figure) if isinstance(found, dict) else None
        return out

    def acks(phase: str, figure: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, r in results.items():
            found = r[phase].get("ack_latency", {})
            out[key[name]] = found.get(figure) if found else None
        return out

    def cpu_per_delivery() -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, r in results.items():
            rate, cpu = r["high"]["deliveries_per_s"], r["high"]["server_cpu_pct"]
            out[key[name]] = round(cpu / 100 * 1e6 / rate, 2) if rate else None
        return out

    low = f"@{bench.config.latency_deliveries_s:,} deliveries/s"
    high = f"@{bench.config.latency_deliveries_s * HIGH_RATE:,} deliveries/s"
    return [
        Row("cluster", case, "max deliveries/s (one node)", "1/s",
            values("max", "deliveries_per_s")),
        *latency_rows(case, low, high, values),
        Row("cluster", case, f"CPU per delivery {high} (all processes)", "µs",
            cpu_per_delivery(), better="lower"),
        Row("cluster", case, f"p50 ack latency {low}", "ms", acks("latency", "p50_ms"),
            better="lower"),
        Row("cluster", case, f"p99 ack latency {low}", "ms", acks("latency", "p99_ms"),
            better="lower"),
        Row("cluster", case, f"p50 ack latency {high}", "ms", acks("high", "p50_ms"),
            better="lower"),
        Row("cluster", case, "max acked posts/s", "1/s", values("max", "acked_per_s")),
    ]  # fmt: skip


def _case(bench: Bench, case: str, sessions: int, url: str, redis_pid: int) -> dict[str, Any]:
    config = bench.config
    senders = config.fanout_senders
    started: list[Worker] = []
    nodes: list[RelayServer] = []
    dirs: list[str] = []
    try:
        settings = {} if case == "in-process" else {"broker": url}
        first = bench.start_relay(**settings)
        nodes.append(first)
        listening = sessions - senders
        users = math.ceil(listening / config.sessions_per_user)
        owner = first.accounts("owner", 1)[0]
        readers = first.accounts("reader", users)
        posters = first.accounts("poster", senders)
        _, channel = first.community(owner, readers + posters)
        reading, posting = first, first
        extra_pids: list[int] = []
        if case.startswith("broker, 2 nodes"):
            # The second node runs on a copy of the database, made with the first stopped.
            source = first.data_dir
            first.proc.terminate()
            first.proc.wait(15)
            for n in range(2):
                copy = bench.scratch / f"cluster-node-{n}-{time.monotonic_ns()}"
                shutil.copytree(source, copy)
                dirs.append(str(copy))
            nodes.remove(first)
            first.stop()
            posting = bench.start_relay(broker=url, data_dir=dirs[0])
            nodes.append(posting)
            reading = bench.start_relay(broker=url, data_dir=dirs[1])
            nodes.append(reading)
            extra_pids = [posting.pid, redis_pid]
            if case.endswith("forwarded"):
                reading.post(owner, channel, "the readers' node owns the channel")
        elif case == "broker, 1 node":
            extra_pids = [redis_pid]
        tokens = [readers[i // config.sessions_per_user].token for i in range(listening)]
        job = {"host": HOST, "port": reading.ws_port, "path": "/v1/gateway?encoding=json"}
        receivers = bench.ws_workers(dict(job, tokens=tokens), listening, config.recv_procs)
        started += receivers
        sender_job = dict(
            job,
            port=posting.ws_port,
            tokens=[p.token for p in posters],
            senders=senders,
            channel_id=channel,
        )
        sender = bench.ws_workers(sender_job, senders, 1, name="sender")[0]
        started.append(sender)
        receivers = [*receivers, sender]
        time.sleep(SETTLE_S)
        label = {"scenario": "cluster", "server": "relay", "sessions": sessions}
        phases: dict[str, Any] = {"max": {}}
        rates = {"latency": 1, "high": HIGH_RATE}
        if reading is posting or case.endswith("forwarded"):
            rates = {"max": 0, **rates}
        for phase, times in rates.items():
            if times:
                rate = config.latency_deliveries_s * times / sessions / senders
                command: dict[str, Any] = {"mode": "rate", "rate_per_sender": rate}
            else:
                command = {"mode": "closed", "window": config.window}
            phases[phase] = bench.run_phase(
                label=dict(label, phase=f"{phase} ({case})"),
                server_pid=reading.pid,  # the node that fans out (py-spy samples it)
                extra_pids=extra_pids,
                receivers=receivers,
                sender=sender,
                sender_cmd=command,
                latency=bool(times),
            )
            _check(bench, phases[phase], f"relay ({case})")
        return phases
    finally:
        bench.stop_workers(started)
        for node in nodes:
            node.stop()
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
