"""The measured scenarios (issue 6): each is `(bench) -> list[Row]`, registered in SCENARIOS.

1. `fanout`: one channel (one room for the peers), 100 and 1000 subscribed sessions, 10
   senders. (a) the most deliveries/s, with each sender keeping `window` messages in flight;
   (b) p50/p99 end-to-end latency at a fixed 10k deliveries/s. Relay runs the real path: users
   logged in with Ed25519 keys, identified gateway sessions, messages POSTed over REST,
   committed, dispatched by the channel actor. The peers' senders are clients of the room; a
   sender's own copy coming back is its acknowledgement (Relay's is the 201).
2. `write`: committed messages/s with 50 concurrent REST senders in one channel, each waiting
   for its 201 before the next post; p50/p99 ack latency.
3. `idle`: resident memory per idle gateway session at 1k and 5k sessions (Relay: identified
   sessions of users that share no server, so no presence traffic fills their replay buffers
   while they connect; peers: open WebSockets).
4. `relay`: the relayd byte relay, frames/s and MB/s (payload) with 1, 10 and 50
   sender/receiver pairs at 100 B and 64 KiB, Relay's TCP listener vs the asyncio+uvloop relay
   peer (run when the `websockets` peer is, since it uses that peer's virtualenv). Each pair is
   one sender streaming pre-built batches of frames to its own receiver; every receiver has
   logged in and seen its own frame come back before the senders start. A case's figures are
   the bytes received in the window over the frame length; after the window the senders stop,
   the receivers drain, and frames sent but never received are reported as missing.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from benchkit import workers
from benchkit.core import Row, split
from benchkit.procs import CpuMeter, free_port, rss_bytes
from benchkit.relay import HOST

if TYPE_CHECKING:
    from collections.abc import Callable

    from benchkit.core import Bench
    from benchkit.procs import Worker

SETTLE_S = 1.0  # after connecting: presence updates and READY traffic die down


def fanout(bench: Bench) -> list[Row]:
    config = bench.config
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for sessions in config.fanout_sessions:
        results[sessions] = {}
        for server in bench.servers:
            bench.log(f"fan-out: {server}, {sessions} sessions")
            try:
                results[sessions][server] = _fanout_one(bench, server, sessions)
            except Exception as e:  # this server's cells stay empty; the others still run
                bench.fail(f"fan-out {server} {sessions} sessions", e)
    bench.details["fanout"] = {str(n): r for n, r in results.items()}
    rows: list[Row] = []
    for sessions, by_server in results.items():
        case = f"{sessions} sessions"
        big = sessions >= 1000

        def values(
            phase: str, key: str, sub: str | None = None, by_server: dict[str, Any] = by_server
        ) -> dict[str, float | None]:
            out: dict[str, float | None] = {}
            for server, r in by_server.items():
                figure = r[phase].get(sub, {}) if sub else r[phase]
                out[server] = figure.get(key) if isinstance(figure, dict) else None
            return out

        peak = Row("fanout", case, "max deliveries/s", "1/s", values("max", "deliveries_per_s"))
        at = f"@{config.latency_deliveries_s:,} deliveries/s"
        p50 = Row(
            "fanout",
            case,
            f"p50 latency {at}",
            "ms",
            values("latency", "p50_ms", "latency"),
            better="lower",
        )
        p99 = Row(
            "fanout",
            case,
            f"p99 latency {at}",
            "ms",
            values("latency", "p99_ms", "latency"),
            better="lower",
        )
        if big:
            peak.bar = "≥ 2× Node ws"  # noqa: RUF001
            if (r := peak.ratio("node_ws")) is not None:
                peak.bar_met = r >= 2.0
            p99.bar = "≤ Node ws"
            if (r := p99.ratio("node_ws")) is not None:
                p99.bar_met = r <= 1.0
        rss = Row(
            "fanout",
            case,
            "server RSS after the run",
            "MB",
            values("latency", "server_rss_mb"),
            better="lower",
        )
        rows += [peak, p50, p99, rss]
    return rows


def _fanout_one(bench: Bench, server: str, sessions: int) -> dict[str, Any]:
    config = bench.config
    senders = config.fanout_senders
    started: list[Worker] = []
    if server == "relay":
        relay = bench.start_relay()
        stop: Callable[[], Any] = relay.stop
        pid = relay.pid
    else:
        peer = bench.start_peer(server)
        stop, pid = peer.stop, peer.pid
    try:
        if server == "relay":
            users = math.ceil(sessions / config.sessions_per_user)
            owner = relay.accounts("owner", 1)[0]
            readers = relay.accounts("reader", users)
            posters = relay.accounts("poster", senders)
            _, channel = relay.community(owner, readers + posters)
            tokens = [readers[i // config.sessions_per_user].token for i in range(sessions)]
            job = {"host": HOST, "port": relay.ws_port, "path": "/v1/gateway?encoding=json"}
            receivers = bench.ws_workers(dict(job, tokens=tokens), sessions, config.recv_procs)
            started += receivers
            sender = bench.http_worker(
                {
                    "host": HOST,
                    "port": relay.http_port,
                    "path": f"/v1/api/channels/{channel}/messages",
                    "tokens": [p.token for p in posters],
                    "per_sender": config.window,
                }
            )
            started.append(sender)
        else:
            job = {"host": HOST, "port": peer.port, "path": "/"}
            receivers = bench.ws_workers(job, sessions - senders, config.recv_procs)
            started += receivers
            # Senders join last, so a sender's own copy comes back after every other client's.
            sender_job = dict(
                job, senders=senders, message_bytes=config.peer_message_bytes, count=senders
            )
            sender = bench.ws_workers(sender_job, senders, 1, name="sender")[0]
            started.append(sender)
            receivers = [*receivers, sender]
        time.sleep(SETTLE_S)
        before = relay.store_counters() if server == "relay" else {}
        label = {"scenario": "fanout", "server": server, "sessions": sessions}
        peak = bench.run_phase(
            label=dict(label, phase="max"),
            server_pid=pid,
            receivers=receivers,
            sender=sender,
            sender_cmd={"mode": "closed", "window": config.window},
            latency=False,
        )
        rate_per_sender = config.latency_deliveries_s / sessions / senders
        latency = bench.run_phase(
            label=dict(label, phase="latency"),
            server_pid=pid,
            receivers=receivers,
            sender=sender,
            sender_cmd={"mode": "rate", "rate_per_sender": rate_per_sender},
            latency=True,
        )
        if server == "relay":
            peak["group_commit"] = _batches(before, relay.store_counters())
        _check(bench, peak, server)
        _check(bench, latency, server)
        return {"max": peak, "latency": latency}
    finally:
        bench.stop_workers(started)
        stop()


def _check(bench: Bench, phase: dict[str, Any], server: str) -> None:
    """Lost deliveries or closed connections make a figure meaningless: say so loudly."""
    if phase["missing_deliveries"] or phase["closed_connections"]:
        note = (
            f"{phase['scenario']} {server} {phase.get('sessions')} sessions {phase['phase']}: "
            f"{phase['missing_deliveries']} deliveries missing, connections closed "
            f"{phase['closed_connections']}"
        )
        bench.notes.append(note)
        bench.log("WARNING " + note)


def write_path(bench: Bench) -> list[Row]:
    config = bench.config
    bench.log(f"write path: {config.write_senders} senders")
    relay = bench.start_relay()
    started: list[Worker] = []
    try:
        owner = relay.accounts("owner", 1)[0]
        posters = relay.accounts("poster", config.write_senders)
        _, channel = relay.community(owner, posters)
        sender = bench.http_worker(
            {
                "host": HOST,
                "port": relay.http_port,
                "path": f"/v1/api/channels/{channel}/messages",
                "tokens": [p.token for p in posters],
                "per_sender": 1,
            }
        )
        started.append(sender)
        before = relay.store_counters()
        phase = bench.run_phase(
            label={"scenario": "write", "server": "relay", "phase": "post"},
            server_pid=relay.pid,
            receivers=[],
            sender=sender,
            sender_cmd={"mode": "closed"},
            latency=False,
        )
        phase["group_commit"] = _batches(before, relay.store_counters())
        bench.stop_workers(started)
        # The same connections GETting /healthz: what hypercorn + Quart alone answer here.
        started = [
            bench.http_worker(
                {
                    "host": HOST,
                    "port": relay.http_port,
                    "path": "/healthz",
                    "method": "GET",
                    "tokens": [p.token for p in posters],
                    "per_sender": 1,
                }
            )
        ]
        baseline = bench.run_phase(
            label={"scenario": "write", "server": "relay", "phase": "GET /healthz"},
            server_pid=relay.pid,
            receivers=[],
            sender=started[0],
            sender_cmd={"mode": "closed"},
            latency=False,
        )
    finally:
        bench.stop_workers(started)
        relay.stop()
    bench.details["write"] = {"post": phase, "healthz": baseline}
    errors = phase["posts"]["errors"]
    if errors:
        bench.notes.append(f"write path: failed posts {errors}")
    case = f"{config.write_senders} senders"
    acked = phase["acked_per_s"]
    ack = phase.get("ack_latency", {})
    return [
        Row(
            "write", case, "committed messages/s", "1/s", {"relay": acked},
            bar="≥ 10k/s", bar_met=acked >= 10_000,
        ),
        Row("write", case, "p50 ack latency", "ms", {"relay": ack.get("p50_ms")}, "lower"),
        Row("write", case, "p99 ack latency", "ms", {"relay": ack.get("p99_ms")}, "lower"),
        Row(
            "write", case, "messages per commit (group commit)", "",
            {"relay": phase["group_commit"].get("writes_per_batch")},
        ),
        Row(
            "write", case, "GET /healthz answers/s (HTTP stack alone)", "1/s",
            {"relay": baseline["acked_per_s"]},
        ),
    ]  # fmt: skip


def _batches(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """Writes and transactions committed between two /readyz readings."""
    if not before or not after:
        return {}
    writes = after["writes_committed"] - before["writes_committed"]
    batches = after["write_batches"] - before["write_batches"]
    return {
        "writes": writes,
        "batches": batches,
        "writes_per_batch": round(writes / batches, 2) if batches else None,
    }


def idle(bench: Bench) -> list[Row]:
    config = bench.config
    results: dict[str, list[dict[str, Any]]] = {}
    for server in bench.servers:
        bench.log(f"idle: {server}, {config.idle_sessions} sessions")
        try:
            results[server] = _idle_one(bench, server)
        except Exception as e:  # this server's cells stay empty; the others still run
            bench.fail(f"idle {server}", e)
    bench.details["idle"] = results
    rows = []
    for i, sessions in enumerate(config.idle_sessions):
        per = {s: r[i]["kb_per_session"] for s, r in results.items()}
        row = Row("idle", f"{sessions} sessions", "memory per idle session", "KB", per, "lower")
        row.bar = "≤ 20 KB"
        if per.get("relay") is not None:
            row.bar_met = per["relay"] <= 20
        rows.append(row)
    return rows


def _idle_one(bench: Bench, server: str) -> list[dict[str, Any]]:
    config = bench.config
    started: list[Worker] = []
    tokens: list[str] = []
    if server == "relay":
        relay = bench.start_relay()
        stop: Callable[[], Any] = relay.stop
        pid = relay.pid
        job: dict[str, Any] = {
            "host": HOST,
            "port": relay.ws_port,
            "path": "/v1/gateway?encoding=json",
        }
    else:
        peer = bench.start_peer(server)
        stop, pid = peer.stop, peer.pid
        job = {"host": HOST, "port": peer.port, "path": "/"}
    out = []
    try:
        if server == "relay":
            most = max(config.idle_sessions)
            users = relay.accounts("idle", math.ceil(most / config.sessions_per_user))
            tokens = [users[i // config.sessions_per_user].token for i in range(most)]
        time.sleep(SETTLE_S)
        base = rss_bytes(pid)
        connected = 0
        for sessions in config.idle_sessions:
            more = sessions - connected
            part = dict(job)
            if tokens:
                part["tokens"] = tokens[connected:sessions]
            started += bench.ws_workers(part, more, config.recv_procs)
            connected = sessions
            time.sleep(SETTLE_S * 2)
            rss = rss_bytes(pid)
            out.append(
                {
                    "sessions": sessions,
                    "server_rss_mb": round(rss / 2**20, 1),
                    "baseline_rss_mb": round(base / 2**20, 1),
                    "kb_per_session": round((rss - base) / sessions / 1024, 2),
                }
            )
        return out
    finally:
        bench.stop_workers(started)
        stop()


def byte_relay(bench: Bench) -> list[Row]:
    config = bench.config
    servers = ["relay"] + (["asyncio_relay"] if "websockets" in bench.peers else [])
    cases = [(p, s) for p in config.relay_pairs for s in config.relay_sizes]
    results: dict[tuple[int, int], dict[str, dict[str, Any]]] = {c: {} for c in cases}
    for server in servers:
        try:
            if server == "relay":
                port = free_port()
                relay = bench.start_relay(relay_port=str(port))
                stop: Callable[[], Any] = relay.stop
                pid = relay.pid
                _wait_accepts(port)
            else:
                peer = bench.start_peer(server)
                stop, pid, port = peer.stop, peer.pid, peer.port
        except Exception as e:
            bench.fail(f"byte relay: start {server}", e)
            continue
        try:
            for pairs, size in cases:
                bench.log(f"byte relay: {server}, {pairs} pairs, {_size_label(size)}")
                try:
                    results[(pairs, size)][server] = _relay_case(
                        bench, server, pid, port, pairs, size
                    )
                except Exception as e:  # this cell stays empty; the others still run
                    bench.fail(f"byte relay {server} {pairs} pairs {size} B", e)
        finally:
            stop()
    bench.details["relay"] = {
        f"{pairs} pairs, {size} B": by_server for (pairs, size), by_server in results.items()
    }
    rows: list[Row] = []
    for (pairs, size), by_server in results.items():
        case = f"{pairs} pairs, {_size_label(size)}"
        frames = Row(
            "relay", case, "frames/s", "1/s",
            {s: r["frames_per_s"] for s, r in by_server.items()},
            bar="≥ 1× the asyncio+uvloop relay",  # noqa: RUF001
        )  # fmt: skip
        if (r := frames.ratio("asyncio_relay")) is not None:
            frames.bar_met = r >= 1.0
        megabytes = Row(
            "relay", case, "payload MB/s", "MB/s", {s: r["mb_per_s"] for s, r in by_server.items()}
        )
        rows += [frames, megabytes]
    return rows


def _relay_case(
    bench: Bench, server: str, pid: int, port: int, pairs: int, size: int
) -> dict[str, Any]:
    """One window: receivers log in (and are confirmed), then senders stream for warm + measure;
    the frames/s are those received in the measured window."""
    config = bench.config
    procs = max(1, min(pairs, (os.cpu_count() or 2) // 2))
    tag = f"{server}-{pairs}-{size}"
    ids = [(f"s{i}-{tag}", f"r{i}-{tag}") for i in range(pairs)]
    started: list[Worker] = []
    try:
        receivers, senders = [], []
        at = 0
        shares = split(pairs, procs)
        for i, share in enumerate(shares):
            part = ids[at : at + share]
            at += share
            job = {"host": HOST, "port": port, "size": size}
            receivers.append(
                bench.procs.worker(
                    workers.relayd_worker,
                    dict(job, role="receiver", pairs=[[r, s] for s, r in part]),
                    f"relayd-receiver-{i}",
                )
            )
            senders.append(
                bench.procs.worker(
                    workers.relayd_worker,
                    dict(job, role="sender", pairs=[[s, r] for s, r in part]),
                    f"relayd-sender-{i}",
                )
            )
        started = receivers + senders
        bench.wait_ready(receivers, share_counts=shares)
        bench.wait_ready(senders, share_counts=shares)
        t0 = time.monotonic_ns() + 200_000_000
        warm = t0 + int(config.relay_warm_s * 1e9)
        end = warm + int(config.relay_measure_s * 1e9)
        for worker in started:
            worker.send({"cmd": "run", "t0": t0, "warm": warm, "end": end})
        server_cpu, lg_cpu = CpuMeter([pid]), CpuMeter([w.pid for w in started])
        _sleep_until_ns(warm)
        server_cpu.start()
        lg_cpu.start()
        _sleep_until_ns(end)
        cpu = {"server_cpu_pct": server_cpu.stop(), "lg_cpu_pct": lg_cpu.stop()}
        cpu["server_sys_pct"], cpu["lg_sys_pct"] = server_cpu.system_pct, lg_cpu.system_pct
        wait_s = 30 + workers.RELAYD_DRAIN_MAX_NS / 1e9
        sent = [w.recv(wait_s) for w in senders]
        got = [w.recv(wait_s) for w in receivers]
    finally:
        bench.stop_workers(started)
    frame_bytes = len(workers.relayd_transfer(ids[0][0].encode(), ids[0][1].encode(), b"")) + size
    in_window = sum(g["marks"][1] - g["marks"][0] for g in got) / frame_bytes
    sent_frames = sum(n // frame_bytes for s in sent for n in s["sent_bytes"])
    received = sum(n // frame_bytes for g in got for n in g["received_bytes"])
    frames_per_s = in_window / config.relay_measure_s
    result: dict[str, Any] = {
        "scenario": "relay",
        "server": server,
        "sessions": f"{pairs} pairs",
        "phase": _size_label(size),
        "window_s": config.relay_measure_s,
        "frames_per_s": round(frames_per_s, 1),
        "mb_per_s": round(frames_per_s * size / 1e6, 1),
        "deliveries_per_s": round(frames_per_s, 1),
        "messages_sent": sent_frames,
        "deliveries_total": received,
        "missing_deliveries": sent_frames - received,
        "closed_connections": {"receivers": closed}
        if (closed := sum(g["closed"] for g in got))
        else {},
        "server_rss_mb": round(rss_bytes(pid) / 2**20, 1),
        **cpu,
        "lg_processes": len(started),
    }
    bench.phases.append(result)
    _check(bench, result, server)
    return result


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def _wait_accepts(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _sleep_until_ns(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


SCENARIOS: dict[str, Callable[[Bench], list[Row]]] = {
    "fanout": fanout,
    "write": write_path,
    "idle": idle,
    "relay": byte_relay,
}
