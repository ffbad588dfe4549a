"""The measured scenarios: each is `(bench) -> list[Row]`, registered in SCENARIOS.

1. `fanout`: one channel (one room for the peers), 100 and 1000 subscribed sessions, 10
   senders. (a) the most deliveries/s, with each sender keeping `window` messages in flight;
   (b) p50/p99 end-to-end latency at a fixed 10k deliveries/s. Relay runs the real path: users
   logged in with Ed25519 keys, identified gateway sessions, messages POSTed over REST,
   committed, dispatched by the channel actor. The peers' senders are clients of the room; a
   sender's own copy coming back is its acknowledgement (Relay's is the 201). Relay runs a
   second time with its senders on the gateway: `senders` of the sessions are the posters'
   own, and they post with MESSAGE_SEND (op 12), acknowledged by MESSAGE_SEND_ACK (op 13).
2. `write`: committed messages/s with 50 concurrent REST senders in one channel, each waiting
   for its 201 before the next post; p50/p99 ack latency. Then the same 50 users over their
   gateway sessions (op 12, acknowledged by op 13): one send in flight each, then `window`.
   Those sessions IDENTIFY without the message intents (WRITE_SENDER_INTENTS), so they get
   their acks and not the channel's 50 MESSAGE_CREATEs per message: the write path, not fan-out.
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
4b. `relay_ws`: the same cases over Relay's `/v1/relay` WebSocket endpoint (each relayd frame
   in one binary message, client frames masked by hand), next to the TCP and asyncio figures
   of `relay` when it ran before in the same run (ratios Relay-WS / Relay-TCP and Relay-WS /
   asyncio). The asyncio peer speaks TCP only.
5. `rooms`: broadcast fan-out in one 100-client room, 10 of them sending 64-byte binary
   payloads (behind the rooms' 5-byte header, so 69 bytes per delivery on every server):
   Relay's `peer` app room over `/v1/websocket` against the peers' one broadcast room. (a) the
   most deliveries/s, each sender keeping `window` messages in flight; (b) deliveries/s and
   p50/p99 latency at fixed rates (10k deliveries/s). Every client gets every message once:
   in Relay's room, whose broadcast skips its sender, each sender sends itself a copy (see
   `workers.RoomWorker`).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from benchkit import workers
from benchkit.core import Bench, Row, profile_result, split
from benchkit.files import files
from benchkit.procs import CpuMeter, free_port, raise_nofile_limit, rss_bytes
from benchkit.relay import HOST
from benchkit.search import search_scenario
from benchkit.storage import storage
from benchkit.voice import voice
from relay.protocol.gateway import ALL_INTENTS, Intent

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from benchkit.core import Config
    from benchkit.procs import Worker
    from benchkit.relay import RelayServer

SETTLE_S = 1.0  # after connecting: presence updates and READY traffic die down
# The write path's gateway senders want every event but messages (server channels' and DMs'):
# in the window they get only their acks (op 13).
WRITE_SENDER_INTENTS = ALL_INTENTS & ~(Intent.SERVER_MESSAGES | Intent.DIRECT_MESSAGES)
WRITE_GATEWAY = "gateway op 12, no message events"


def fanout(bench: Bench) -> list[Row]:
    config = bench.config
    results: dict[int, dict[str, dict[str, Any]]] = {}
    gateway: dict[int, dict[str, Any]] = {}  # Relay again, its senders on gateway op 12
    for sessions in config.fanout_sessions:
        results[sessions] = {}
        for server in bench.servers:
            if server == "relay" and not config.fanout_rest:
                continue
            bench.log(f"fan-out: {server}, {sessions} sessions")
            try:
                results[sessions][server] = _fanout_one(bench, server, sessions)
            except Exception as e:  # this server's cells stay empty; the others still run
                bench.fail(f"fan-out {server} {sessions} sessions", e)
        if "relay" not in bench.servers:
            continue
        bench.log(f"fan-out: relay, senders on gateway op 12, {sessions} sessions")
        try:
            gateway[sessions] = _fanout_one(bench, "relay", sessions, gateway_sends=True)
        except Exception as e:
            bench.fail(f"fan-out relay gateway op 12 {sessions} sessions", e)
    bench.details["fanout"] = {str(n): r for n, r in results.items()}
    bench.details["fanout_gateway_op12"] = {str(n): r for n, r in gateway.items()}
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

        at = f"@{config.latency_deliveries_s:,} deliveries/s"
        # Relay's senders post over REST, then (second set of rows) over gateway op 12; the
        # peers' figures are the same in both.
        for via, relay_run in (
            ("REST", by_server.get("relay")),
            ("gateway op 12", gateway.get(sessions)),
        ):
            if relay_run is None and (via == "REST" or "relay" in bench.servers):
                continue  # not measured (REST: short profile), or failed
            run = by_server if relay_run is None else dict(by_server, relay=relay_run)
            peak = Row(
                "fanout",
                case,
                f"max deliveries/s (Relay senders: {via})",
                "1/s",
                values("max", "deliveries_per_s", by_server=run),
            )
            p50 = Row(
                "fanout",
                case,
                f"p50 latency {at} (Relay senders: {via})",
                "ms",
                values("latency", "p50_ms", "latency", by_server=run),
                better="lower",
            )
            p99 = Row(
                "fanout",
                case,
                f"p99 latency {at} (Relay senders: {via})",
                "ms",
                values("latency", "p99_ms", "latency", by_server=run),
                better="lower",
            )
            if big:
                peak.bar = "≥ 2× Node ws"  # noqa: RUF001
                if (r := peak.ratio("node_ws")) is not None:
                    peak.bar_met = r >= 2.0
                p99.bar = "≤ Node ws"
                if (r := p99.ratio("node_ws")) is not None:
                    p99.bar_met = r <= 1.0
            rows += [peak, p50, p99]
            if big:  # where the latency goes: before the first write, and the fan-out itself
                for key, what in (
                    ("first_receiver_p50_ms", "first"),
                    ("last_receiver_p50_ms", "last"),
                ):
                    rows.append(
                        Row(
                            "fanout",
                            case,
                            f"median over messages of their {what} receiver's latency {at} "
                            f"(Relay senders: {via})",
                            "ms",
                            values("latency", key, "latency", by_server=run),
                            better="lower",
                        )
                    )
        with_relay = by_server
        if "relay" not in by_server and sessions in gateway:
            with_relay = dict(by_server, relay=gateway[sessions])
        rss = Row(
            "fanout",
            case,
            "server RSS after the run",
            "MB",
            values("latency", "server_rss_mb", by_server=with_relay),
            better="lower",
        )
        rows.append(rss)
    return rows


def _fanout_one(
    bench: Bench, server: str, sessions: int, gateway_sends: bool = False
) -> dict[str, Any]:
    """One server's two phases. `gateway_sends` (Relay): `senders` of the sessions are the
    posters' own, and they post over them with op 12 (acknowledged by op 13), like the peers'
    senders; otherwise every session reads and the posters POST over REST."""
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
            listening = sessions - senders if gateway_sends else sessions
            users = math.ceil(listening / config.sessions_per_user)
            owner = relay.accounts("owner", 1)[0]
            readers = relay.accounts("reader", users)
            posters = relay.accounts("poster", senders)
            _, channel = relay.community(owner, readers + posters)
            tokens = [readers[i // config.sessions_per_user].token for i in range(listening)]
            job = {"host": HOST, "port": relay.ws_port, "path": "/v1/gateway?encoding=json"}
            receivers = bench.ws_workers(dict(job, tokens=tokens), listening, config.recv_procs)
            started += receivers
        if server == "relay" and gateway_sends:
            poster_tokens = [p.token for p in posters]
            sender_job = dict(job, tokens=poster_tokens, senders=senders, channel_id=channel)
            sender = bench.ws_workers(sender_job, senders, 1, name="sender")[0]
            started.append(sender)
            receivers = [*receivers, sender]
        elif server == "relay":
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
        via = " (gateway op 12)" if gateway_sends else ""
        peak = bench.run_phase(
            label=dict(label, phase="max" + via),
            server_pid=pid,
            receivers=receivers,
            sender=sender,
            sender_cmd={"mode": "closed", "window": config.window},
            latency=False,
        )
        rate_per_sender = config.latency_deliveries_s / sessions / senders
        latency = bench.run_phase(
            label=dict(label, phase="latency" + via),
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
        # The same users over their gateway sessions: MESSAGE_SEND (op 12), acknowledged by
        # op 13 after the commit. Their intents leave message events out, so, like the REST
        # posters, they do not receive the channel's messages (50 deliveries per message).
        gateway_job = {
            "host": HOST,
            "port": relay.ws_port,
            "path": "/v1/gateway?encoding=json",
            "tokens": [p.token for p in posters],
            "senders": config.write_senders,
            "channel_id": channel,
            "intents": int(WRITE_SENDER_INTENTS),
            "receives_messages": False,
        }
        started = bench.ws_workers(gateway_job, config.write_senders, 1, name="gateway-sender")
        gateway: dict[int, dict[str, Any]] = {}
        for window in sorted({1, config.window}):
            before = relay.store_counters()
            gateway[window] = bench.run_phase(
                label={
                    "scenario": "write",
                    "server": "relay",
                    "phase": f"{WRITE_GATEWAY}, {window} in flight",
                },
                server_pid=relay.pid,
                receivers=started,
                sender=started[0],
                sender_cmd={"mode": "closed", "window": window},
                latency=False,
            )
            gateway[window]["group_commit"] = _batches(before, relay.store_counters())
            _check(bench, gateway[window], "relay")
            if gateway[window]["deliveries_total"]:  # the intents did not keep them out
                note = f"write path ({WRITE_GATEWAY}): messages delivered to the senders"
                bench.notes.append(f"{note}: {gateway[window]['deliveries_total']}")
                bench.log("WARNING " + bench.notes[-1])
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
    bench.details["write"] = {
        "post": phase,
        "healthz": baseline,
        "gateway_op12": {str(w): p for w, p in gateway.items()},
    }
    case = f"{config.write_senders} senders"
    rows: list[Row] = []
    runs = [("REST", phase)]
    runs += [(f"{WRITE_GATEWAY}, {w} in flight each", p) for w, p in gateway.items()]
    for via, run in runs:
        errors = run["posts"]["errors"]
        if errors:
            bench.notes.append(f"write path ({via}): failed sends {errors}")
        acked = run["acked_per_s"]
        ack = run.get("ack_latency", {})
        rows += [
            Row(
                "write", case, f"committed messages/s ({via})", "1/s", {"relay": acked},
                bar="≥ 10k/s", bar_met=acked >= 10_000,
            ),
            Row("write", case, f"p50 ack latency ({via})", "ms", {"relay": ack.get("p50_ms")},
                "lower"),
            Row("write", case, f"p99 ack latency ({via})", "ms", {"relay": ack.get("p99_ms")},
                "lower"),
            Row(
                "write", case, f"messages per commit ({via})", "",
                {"relay": run["group_commit"].get("writes_per_batch")},
            ),
        ]  # fmt: skip
    rows.append(
        Row(
            "write", case, "GET /healthz answers/s (HTTP stack alone)", "1/s",
            {"relay": baseline["acked_per_s"]},
        )
    )  # fmt: skip
    return rows


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
            time.sleep(SETTLE_S)  # the same as after 2 s, for every server (checked)
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
    bench: Bench,
    server: str,
    pid: int,
    port: int,
    pairs: int,
    size: int,
    ws_path: str | None = None,
    counters: Callable[[], dict[str, int]] | None = None,
) -> dict[str, Any]:
    """One window: receivers log in (and are confirmed), then senders stream for warm + measure;
    the frames/s are those received in the measured window.

    With `ws_path`, the clients speak WebSocket to that endpoint (Relay's `/v1/relay`). Its
    backlog at the end (the relay queues and socket buffers) takes Relay far longer to drain
    than the bench can wait, so the receivers drain for at most RELAY_WS_DRAIN_S; frames not
    received by then are reported as still queued, and the server's own drop counters
    (`counters`: the byte relay's from /readyz) say whether any was lost."""
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
            job: dict[str, Any] = {"host": HOST, "port": port, "size": size}
            if ws_path is not None:
                job |= {"ws_path": ws_path, "drain_max_s": RELAY_WS_DRAIN_S}
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
        before = counters() if counters is not None else {}
        t0 = time.monotonic_ns() + 200_000_000
        warm = t0 + int(config.relay_warm_s * 1e9)
        end = warm + int(config.relay_measure_s * 1e9)
        for worker in started:
            worker.send({"cmd": "run", "t0": t0, "warm": warm, "end": end})
        server_cpu, lg_cpu = CpuMeter([pid]), CpuMeter([w.pid for w in started])
        scenario = "relay" if ws_path is None else "relay_ws"
        label = {"scenario": scenario, "sessions": f"{pairs} pairs", "phase": _size_label(size)}
        _sleep_until_ns(warm)
        server_cpu.start()
        lg_cpu.start()
        relay = server in ("relay", "relay_ws")  # not the asyncio relay: only Relay is profiled
        profiler = bench.profiler(label, pid, config.relay_measure_s) if relay else None
        _sleep_until_ns(end)
        cpu = {"server_cpu_pct": server_cpu.stop(), "lg_cpu_pct": lg_cpu.stop()}
        cpu["server_sys_pct"], cpu["lg_sys_pct"] = server_cpu.system_pct, lg_cpu.system_pct
        wait_s = 30 + workers.RELAYD_DRAIN_MAX_NS / 1e9
        sent = [w.recv(wait_s) for w in senders]
        got = [w.recv(wait_s) for w in receivers]
        after = counters() if counters is not None else {}
    finally:
        bench.stop_workers(started)
    if ws_path is not None:
        _wait_idle(pid)  # the reset connections' leftovers are gone before the next case
    frame_bytes = len(workers.relayd_transfer(ids[0][0].encode(), ids[0][1].encode(), b"")) + size
    sent_bytes = received_bytes = frame_bytes  # per frame, as written and as read
    if ws_path is not None:
        sent_bytes += workers.ws_header_len(frame_bytes, masked=True)
        received_bytes = workers.relayd_received_len(frame_bytes, ws=True)
    in_window = sum(g["marks"][1] - g["marks"][0] for g in got) / received_bytes
    sent_frames = sum(n // sent_bytes for s in sent for n in s["sent_bytes"])
    received = sum(n // received_bytes for g in got for n in g["received_bytes"])
    closed = sum(g["closed"] for g in got)
    close_codes: dict[str, int] = {}
    for g in got:
        for code, n in g.get("close_codes", {}).items():
            close_codes[code] = close_codes.get(code, 0) + n
    frames_per_s = in_window / config.relay_measure_s
    missing = sent_frames - received
    extra: dict[str, Any] = {}
    if counters is not None:
        counted = {k: after.get(k, 0) - before.get(k, 0) for k in RELAY_LOSS_COUNTERS}
        extra["server_counters"] = counted
        if not all(g.get("drained", True) for g in got):
            # Not lost: still queued when the drain stopped. Losses are what the server counted.
            extra["queued_at_end"] = missing
            missing = counted["dropped_offline"] + counted["dropped_gone"]
    result: dict[str, Any] = {
        **label,
        "server": server,
        "window_s": config.relay_measure_s,
        "frames_per_s": round(frames_per_s, 1),
        "mb_per_s": round(frames_per_s * size / 1e6, 1),
        "deliveries_per_s": round(frames_per_s, 1),
        "messages_sent": sent_frames,
        "deliveries_total": received,
        "missing_deliveries": missing,
        "closed_connections": close_codes or ({"receivers": closed} if closed else {}),
        "server_rss_mb": round(rss_bytes(pid) / 2**20, 1),
        **cpu,
        "lg_processes": len(started),
        **extra,
    }
    if profiler is not None:
        result["profile"] = profile_result(profiler)
    bench.phases.append(result)
    _check(bench, result, server)
    return result


RELAY_WS_PATH = "/v1/relay"
RELAY_WS_DRAIN_S = 0.5
RELAY_LOSS_COUNTERS = (
    "frames_forwarded",
    "dropped_offline",
    "dropped_gone",
    "slow_disconnects",
    "violations",
)


def _serving(relay: RelayServer) -> bool:
    """Whether Relay still runs and its realtime listener accepts (a crash of the listener's
    tasks can end it while the process lives on, serving HTTP)."""
    if relay.proc.poll() is not None:
        return False
    try:
        with socket.create_connection((HOST, relay.ws_port), timeout=2):
            return True
    except OSError:
        return False


def _relay_died(bench: Bench, relay: RelayServer) -> None:
    """Relay (or its realtime listener) ended by itself: a failure of the run, said loudly."""
    code = relay.stop()
    error = RuntimeError(
        f"Relay's realtime listener ended during the last case (exit code {code}); see "
        f"{bench.log_path}"
    )
    bench.fail("byte relay over WebSocket", error)


def _wait_idle(pid: int, timeout_s: float = 15.0) -> None:
    """Until the process uses under a tenth of a core over 0.2 s (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meter = CpuMeter([pid])
        meter.start()
        time.sleep(0.2)
        if meter.stop() < 10:
            return


def byte_relay_ws(bench: Bench) -> list[Row]:
    """Scenario 4b: the byte relay over `/v1/relay` WebSockets, next to `relay`'s figures."""
    config = bench.config
    cases = [(p, s) for p in config.relay_pairs for s in config.relay_sizes]
    results: dict[tuple[int, int], dict[str, Any]] = {}
    relay: RelayServer | None = None
    try:
        for pairs, size in cases:
            bench.log(f"byte relay over {RELAY_WS_PATH}: {pairs} pairs, {_size_label(size)}")
            try:
                if relay is not None and not _serving(relay):
                    _relay_died(bench, relay)
                    relay = None  # another one for this case
                if relay is None:
                    relay = bench.start_relay(relay_port=str(free_port()))
                results[(pairs, size)] = _relay_case(
                    bench,
                    "relay_ws",
                    relay.pid,
                    relay.ws_port,
                    pairs,
                    size,
                    RELAY_WS_PATH,
                    relay.byte_relay_counters,
                )
            except Exception as e:  # this cell stays empty; the others still run
                bench.fail(f"byte relay over WebSocket {pairs} pairs {size} B", e)
    finally:
        if relay is not None and not _serving(relay):
            _relay_died(bench, relay)
        elif relay is not None:
            relay.stop()
    bench.details["relay_ws"] = {
        f"{pairs} pairs, {size} B": result for (pairs, size), result in results.items()
    }
    tcp: dict[str, dict[str, Any]] = bench.details.get("relay", {})
    rows: list[Row] = []
    for pairs, size in cases:
        # "relay" is the WebSocket figure (the ratios' numerator); the TCP listener's and the
        # asyncio relay's come from scenario `relay` in this run, if it ran.
        same = tcp.get(f"{pairs} pairs, {size} B", {})
        shown = {"relay": results.get((pairs, size), {})}
        shown |= {"relay_tcp" if s == "relay" else s: r for s, r in same.items()}
        case = f"{pairs} pairs, {_size_label(size)}"
        rows.append(
            Row(
                "relay_ws", case, "frames/s", "1/s",
                {s: r.get("frames_per_s") for s, r in shown.items()},
            )
        )  # fmt: skip
        rows.append(
            Row(
                "relay_ws", case, "payload MB/s", "MB/s",
                {s: r.get("mb_per_s") for s, r in shown.items()},
            )
        )  # fmt: skip
    return rows


# Relay's per-client room limits would throttle the bench's senders (100 messages/s each).
ROOM_SETTINGS = {"room_message_rate": "100000000"}


def rooms(bench: Bench) -> list[Row]:
    """Scenario 5: broadcast fan-out in one room of `rooms_clients` clients."""
    config = bench.config
    results: dict[str, dict[str, Any]] = {}
    for server in bench.servers:
        bench.log(f"rooms: {server}, {config.rooms_clients} clients")
        try:
            results[server] = _rooms_one(bench, server)
        except Exception as e:  # this server's cells stay empty; the others still run
            bench.fail(f"rooms {server}", e)
    bench.details["rooms"] = results
    case = (
        f"{config.rooms_clients} clients, {config.rooms_senders} senders, "
        f"{config.rooms_payload_bytes} B"
    )

    def values(phase: str, key: str, sub: str | None = None) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for server, r in results.items():
            figure = r.get(phase, {})
            figure = figure.get(sub, {}) if sub else figure
            out[server] = figure.get(key)
        return out

    rows = [Row("rooms", case, "max deliveries/s", "1/s", values("max", "deliveries_per_s"))]
    for rate in config.rooms_rates:
        phase, at = _rate_phase(rate), f"@{rate:,} deliveries/s"
        rows += [
            Row("rooms", case, f"deliveries/s {at}", "1/s", values(phase, "deliveries_per_s")),
            Row(
                "rooms", case, f"p50 latency {at}", "ms",
                values(phase, "p50_ms", "latency"), better="lower",
            ),
            Row(
                "rooms", case, f"p99 latency {at}", "ms",
                values(phase, "p99_ms", "latency"), better="lower",
            ),
        ]  # fmt: skip
    return rows


def _rate_phase(rate: int) -> str:
    return f"{rate / 1000:g}k/s" if rate >= 1000 else f"{rate}/s"


def _rooms_one(bench: Bench, server: str) -> dict[str, Any]:
    config = bench.config
    clients, senders = config.rooms_clients, config.rooms_senders
    started: list[Worker] = []
    if server == "relay":
        relay = bench.start_relay(**ROOM_SETTINGS)
        stop: Callable[[], Any] = relay.stop
        pid = relay.pid
    else:
        peer = bench.start_peer(server)
        stop, pid = peer.stop, peer.pid
    try:
        job: dict[str, Any] = {"host": HOST, "message_bytes": config.rooms_payload_bytes}
        if server == "relay":
            room_id, secret = relay.room(relay.accounts("roomhost", 1)[0], clients)
            job |= {"port": relay.ws_port, "path": "/v1/websocket"}
            job |= {"room_id": room_id, "secret": secret}
        else:
            job |= {"port": peer.port, "path": "/"}
        target = workers.room_worker
        receivers = bench.ws_workers(
            job, clients - senders, config.recv_procs, "room-receiver", target
        )
        started += receivers
        # Senders join last, so a peer's sender gets its own copy after every other client.
        sender_job = dict(job, senders=senders)
        sender = bench.ws_workers(sender_job, senders, 1, "room-sender", target)[0]
        started.append(sender)
        receivers = [*receivers, sender]
        time.sleep(SETTLE_S)
        label = {"scenario": "rooms", "server": server, "sessions": clients}
        out = {
            "max": bench.run_phase(
                label=dict(label, phase="max"),
                server_pid=pid,
                receivers=receivers,
                sender=sender,
                sender_cmd={"mode": "closed", "window": config.window},
                latency=False,
                warm_s=config.rooms_warm_s,
                measure_s=config.rooms_measure_s,
            )
        }
        for rate in config.rooms_rates:
            phase = _rate_phase(rate)
            out[phase] = bench.run_phase(
                label=dict(label, phase=phase),
                server_pid=pid,
                receivers=receivers,
                sender=sender,
                sender_cmd={"mode": "rate", "rate_per_sender": rate / clients / senders},
                latency=True,
                warm_s=config.rooms_warm_s,
                measure_s=config.rooms_measure_s,
            )
        for result in out.values():
            _check(bench, result, server)
        return out
    finally:
        bench.stop_workers(started)
        stop()


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


def _cluster(bench: Bench) -> list[Row]:
    from benchkit.cluster import cluster
    from benchkit.clusternodes import cluster_nodes

    # The broker against in-process, then 1, 2 and 3 nodes sharing PostgreSQL and Redis.
    return cluster(bench) + cluster_nodes(bench)


SCENARIOS: dict[str, Callable[[Bench], list[Row]]] = {
    "fanout": fanout,
    "write": write_path,
    "idle": idle,
    "relay": byte_relay,
    "relay_ws": byte_relay_ws,
    "rooms": rooms,
    "search": search_scenario,
    "files": files,
    "voice": voice,
    "cluster": _cluster,
    "storage": storage,
}


def run_relay_alone(root: Path, config: Config, names: list[str], label: str) -> tuple[Bench, Path]:
    """Run scenarios `names` against Relay alone (no peers), for the one-scenario wrappers
    (scripts/bench_relay.py, scripts/bench_rooms.py): their progress lines go to stderr, since
    stdout is their table. Returns the bench (phases, notes, failures) and the server log."""
    scratch = root / ".bench"
    scratch.mkdir(exist_ok=True)
    log_path = scratch / f"servers-{label}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    raise_nofile_limit()
    bench = Bench(root, scratch, config, [], log_path)
    with contextlib.redirect_stdout(sys.stderr):
        try:
            for name in names:
                SCENARIOS[name](bench)
        finally:
            bench.procs.stop_all()
    return bench, log_path
