"""What every scenario gets and gives: the `Bench` context (configuration, the servers it may
start, the load-generator workers) and the `Row`s of the results table.

A scenario is a function `(bench: Bench) -> list[Row]`. It starts what it needs through the
context (so everything is stopped by process id when the run ends, whatever happens), runs its
load, and returns rows whose `values` are keyed by server name ("relay", "node_ws", ...). Raw
figures go into `bench.details[scenario]` and measured phases into `bench.phases`; both end up in
the JSON file.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from benchkit import peers, workers
from benchkit.procs import CpuMeter, Procs, Worker, preemptions, rss_bytes
from benchkit.relay import start_relay

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from pathlib import Path

    from benchkit.peers import PeerServer
    from benchkit.relay import RelayServer


@dataclass
class Row:
    scenario: str
    case: str
    metric: str
    unit: str
    values: dict[str, float | None]
    better: str = "higher"  # or "lower": how ratios read
    bar: str | None = None  # the target Relay should meet, in words
    bar_met: bool | None = None

    def ratio(self, peer: str) -> float | None:
        """Relay / peer (for "lower" metrics too: below 1 is then better)."""
        mine, theirs = self.values.get("relay"), self.values.get(peer)
        if mine is None or not theirs:
            return None
        return mine / theirs

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = {
            p: None if (r := self.ratio(p)) is None else round(r, 3)
            for p in self.values
            if p != "relay"
        }
        return data


@dataclass
class Config:
    profile: str  # quick | short | full
    warm_s: float
    measure_s: float
    fanout_sessions: list[int]
    fanout_senders: int
    window: int  # messages (peers) or concurrent posts (Relay) in flight per sender
    latency_deliveries_s: int
    write_senders: int
    idle_sessions: list[int]
    sessions_per_user: int
    recv_procs: int
    peer_message_bytes: int
    # The byte relay (scenario `relay`): sender/receiver pairs, payload sizes, its own windows
    # (it has 12 cases, so they are shorter than the others).
    relay_pairs: list[int] = field(default_factory=lambda: [1, 10, 50])
    relay_sizes: list[int] = field(default_factory=lambda: [100, 65536])
    relay_warm_s: float = 0.5
    relay_measure_s: float = 1.5
    # App rooms (scenario `rooms`): one broadcast room of `rooms_clients`, `rooms_senders` of
    # which send binary messages of `rooms_payload_bytes` (behind the 5-byte room header); the
    # fixed rates of its latency phases, in deliveries/s; its own (shorter) windows.
    rooms_clients: int = 100
    rooms_senders: int = 10
    rooms_payload_bytes: int = 64
    rooms_rates: list[int] = field(default_factory=lambda: [10_000])
    rooms_warm_s: float = 0.5
    rooms_measure_s: float = 2.0
    # Fan-out with Relay's senders on REST as well as on gateway op 12 (the short profile
    # measures op 12 only, to stay near three minutes; the REST figures are in --full).
    fanout_rest: bool = True

    @classmethod
    def for_profile(cls, profile: str) -> Config:
        if profile == "quick":
            config = cls(profile, 0.3, 1.0, [20], 2, 2, 400, 4, [20, 40], 5, 1, PEER_MESSAGE_BYTES)
            config.relay_pairs, config.relay_warm_s, config.relay_measure_s = [2], 0.2, 0.5
            config.rooms_clients, config.rooms_senders, config.rooms_rates = 10, 2, [400]
            config.rooms_warm_s, config.rooms_measure_s = 0.3, 1.0
            return config
        if profile == "full":
            config = cls(
                profile, 2.0, 15.0, [100, 1000], 10, 4, 10_000, 50, [1000, 5000], 10, 2,
                PEER_MESSAGE_BYTES,
            )  # fmt: skip
            config.relay_warm_s, config.relay_measure_s = 1.0, 8.0
            config.rooms_warm_s, config.rooms_measure_s = 1.0, 8.0
            return config
        config = cls(
            profile, 1.0, 3.0, [100, 1000], 10, 4, 10_000, 50, [1000, 5000], 10, 2,
            PEER_MESSAGE_BYTES,
        )  # fmt: skip
        config.fanout_rest = False
        return config


# About the size of Relay's MESSAGE_CREATE frame for a bench message, so peers move as many bytes.
PEER_MESSAGE_BYTES = 380


@dataclass
class Bench:
    root: Path
    scratch: Path
    config: Config
    peers: list[str]  # peers installed and wanted in this run
    log_path: Path
    procs: Procs = field(default_factory=Procs)
    phases: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    relay_src: Path | None = None  # run Relay from this source tree instead of the checkout
    profile_dir: Path | None = None  # py-spy Relay's measured windows into this directory
    relay_settings: dict[str, str] = field(default_factory=dict)  # for every Relay started

    @property
    def servers(self) -> list[str]:
        return ["relay", *self.peers]

    failed: bool = False

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def fail(self, what: str, error: Exception) -> None:
        """Record a part of the run that failed: its figures stay empty, the run goes on, and
        the script exits non-zero."""
        self.failed = True
        self.notes.append(f"FAILED {what}: {type(error).__name__}: {error}")
        print(f"[bench] FAILED {what}:", file=sys.stderr)
        traceback.print_exception(error, file=sys.stderr)

    def start_relay(self, **settings: str) -> RelayServer:
        return start_relay(
            self.procs,
            self.scratch / "run",
            self.log_path,
            self.relay_src,
            **(self.relay_settings | settings),
        )

    def start_peer(self, name: str) -> PeerServer:
        return peers.start(self.procs, name, self.scratch, self.log_path)

    # -- load-generator workers ----------------------------------------------------------------

    def ws_workers(
        self,
        job: dict[str, Any],
        count: int,
        procs: int,
        name: str = "receiver",
        target: Callable[[Connection, dict[str, Any]], None] = workers.ws_worker,
    ) -> list[Worker]:
        """`count` WebSocket connections (job["tokens"] split too, if given) over `procs`
        processes running `target` (e.g. `workers.room_worker`); waits until every connection
        is open (and identified)."""
        tokens: list[str] | None = job.get("tokens")
        shares = split(count, procs)
        started: list[Worker] = []
        at = 0
        for i, share in enumerate(shares):
            part = dict(job, count=share)
            if tokens is not None:
                part["tokens"] = tokens[at : at + share]
            at += share
            started.append(self.procs.worker(target, part, f"{name}-{i}"))
        self.wait_ready(started, share_counts=shares)
        return started

    def http_worker(self, job: dict[str, Any]) -> Worker:
        worker = self.procs.worker(workers.http_worker, job, "http-worker")
        self.wait_ready([worker], share_counts=None)
        return worker

    def wait_ready(self, started: list[Worker], share_counts: list[int] | None) -> None:
        timeout_s = 60 + 0.05 * sum(share_counts or [0])
        for i, worker in enumerate(started):
            ready = worker.recv(timeout_s)
            if share_counts is not None and ready["open"] != share_counts[i]:
                raise RuntimeError(
                    f"{worker.name}: {ready['open']} of {share_counts[i]} connections opened "
                    f"({ready['failed']})"
                )

    def stop_workers(self, started: list[Worker]) -> None:
        for worker in started:
            self.procs.stop_worker(worker)

    # -- a measured phase ----------------------------------------------------------------------

    def run_phase(
        self,
        *,
        label: dict[str, Any],
        server_pid: int,
        receivers: list[Worker],
        sender: Worker | None,
        sender_cmd: dict[str, Any],
        latency: bool,
        warm_s: float | None = None,
        measure_s: float | None = None,
        extra_pids: list[int] | None = None,
    ) -> dict[str, Any]:
        """One measured window: start the senders at t0, count from `warm` to `end`, then wait
        until every connection has every message. Returns the figures (and records them).
        `warm_s` and `measure_s` default to the configuration's; `extra_pids`: more server-side
        processes whose CPU counts as the server's (a cluster's other nodes, its broker)."""
        config = self.config
        warm_s = config.warm_s if warm_s is None else warm_s
        measure_s = config.measure_s if measure_s is None else measure_s
        t0 = time.monotonic_ns() + 300_000_000
        warm = t0 + int(warm_s * 1e9)
        end = warm + int(measure_s * 1e9)
        base = {"cmd": "run", "t0": t0, "warm": warm, "end": end, "latency": latency}
        ws_sender = sender is not None and sender in receivers
        for worker in receivers:
            worker.send(dict(base, **sender_cmd) if worker is sender else dict(base, mode="none"))
        if sender is not None and not ws_sender:
            sender.send(dict(base, **sender_cmd))
        lg = [w.pid for w in receivers] + ([sender.pid] if sender and not ws_sender else [])
        server_cpu, lg_cpu = CpuMeter([server_pid, *(extra_pids or ())]), CpuMeter(lg)
        _sleep_until(warm)
        server_cpu.start()
        lg_cpu.start()
        preempted = preemptions(server_pid)
        profiler = (
            self.profiler(label, server_pid, measure_s) if label["server"] == "relay" else None
        )
        _sleep_until(end)
        cpu = {"server_cpu_pct": server_cpu.stop(), "lg_cpu_pct": lg_cpu.stop()}
        cpu["server_sys_pct"], cpu["lg_sys_pct"] = server_cpu.system_pct, lg_cpu.system_pct
        # How often the server was switched out while runnable: on this 2-core machine, by the
        # load generator's processes, woken by its writes (a stretch of the latency).
        cpu["server_preempted_per_s"] = round((preemptions(server_pid) - preempted) / measure_s, 1)
        answers = [w.recv(60) for w in receivers]
        post = sender.recv(60) if sender is not None and not ws_sender else None
        if sender is not None and ws_sender:
            own = answers[receivers.index(sender)]
            if "acked" in own:  # Relay's gateway senders: acknowledged by op 13, as posts
                post = own
        if post is not None:
            expected = post["acked"]
            late_us = post["late_max_us"]
        else:
            expected = sum(a["sent"] for a in answers)
            late_us = max((a["late_max_us"] for a in answers), default=0)
        for worker in receivers:
            worker.send({"cmd": "collect", "expected": expected, "timeout_s": 30})
        reports = [w.recv(60) for w in receivers]
        window_s = measure_s
        delivered = sum(r["counts_at_marks"][1] - r["counts_at_marks"][0] for r in reports)
        total = sum(r["total"] for r in reports)
        samples = sorted(s for r in reports for s in r["samples_us"])
        closed: dict[str, int] = {}
        for r in reports:
            for code, n in r["closed"].items():
                closed[code] = closed.get(code, 0) + n
        result: dict[str, Any] = {
            **label,
            "window_s": window_s,
            "deliveries_per_s": round(delivered / window_s, 1),
            "messages_sent": expected,
            "deliveries_total": total,
            "missing_deliveries": sum(r["missing"] for r in reports),
            "closed_connections": closed,
            "bytes_per_delivery": round(sum(r["bytes"] for r in reports) / total, 1)
            if total
            else None,
            "sender_late_max_ms": round(late_us / 1000, 1),
            "server_rss_mb": round(rss_bytes(server_pid) / 2**20, 1),
            **cpu,
            "lg_processes": len(lg),
        }
        if post is not None:
            result["posts"] = {k: v for k, v in post.items() if k != "samples_us"}
            result["acked_per_s"] = round(post["acked_in_window"] / window_s, 1)
            if post["samples_us"]:
                result["ack_latency"] = latency_summary(sorted(post["samples_us"]))
        if samples:
            result["latency"] = latency_summary(samples)
            result["latency"].update(spread_summary([r.get("spread_us", {}) for r in reports]))
        if profiler is not None:
            result["profile"] = profile_result(profiler)
        self.phases.append(result)
        return result

    def profiler(
        self, label: dict[str, Any], pid: int, measure_s: float
    ) -> tuple[subprocess.Popen[bytes], Path] | None:
        """py-spy (sampling, from outside the process) over this window, if asked for."""
        if self.profile_dir is None:
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        name = "-".join(str(label[k]) for k in ("scenario", "sessions", "phase") if k in label)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        path = self.profile_dir / f"relay-{name}.txt"
        py_spy = self.root / ".venv" / "bin" / "py-spy"
        args = [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--output"]
        args += [str(path), "--duration", str(max(1, int(measure_s))), "--nonblocking"]
        args += ["--rate", "500"]  # py-spy's default 100 Hz gives too few samples in 3 s
        process = self.procs.popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return process, path


def profile_result(profiler: tuple[subprocess.Popen[bytes], Path]) -> dict[str, Any]:
    """Wait for a `Bench.profiler` to finish; its file and summary, for a phase's JSON."""
    process, path = profiler
    process.wait(30)
    return {"file": str(path), **profile_summary(path)}


def profile_summary(path: Path, top: int = 15) -> dict[str, Any]:
    """The functions with the most samples in a py-spy raw (collapsed stacks) file: on top of
    the stack (self) and anywhere in it (total), as percentages of all samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"samples": 0}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count

    def ranked(counts: dict[str, int]) -> list[list[Any]]:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [[name, round(100 * n / samples, 1)] for name, n in best]

    return {"samples": samples, "self_pct": ranked(own), "total_pct": ranked(total)}


def split(count: int, parts: int) -> list[int]:
    """`count` as `parts` near-equal shares (no empty share)."""
    parts = max(1, min(parts, count))
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def percentile(sorted_samples: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return float(sorted_samples[rank - 1])


def latency_summary(sorted_us: list[int]) -> dict[str, Any]:
    return {
        "samples": len(sorted_us),
        "p50_ms": round(percentile(sorted_us, 50) / 1000, 2),
        "p99_ms": round(percentile(sorted_us, 99) / 1000, 2),
        "max_ms": round(sorted_us[-1] / 1000, 2),
    }


def spread_summary(reports: list[dict[int, list[int]]]) -> dict[str, Any]:
    """Per message, when its first and its last receiver got it (across every worker): the
    medians say how much of the latency comes before the server's first write and how long
    its fan-out takes."""
    firsts: dict[int, int] = {}
    lasts: dict[int, int] = {}
    for report in reports:
        for sent, (first_us, last_us) in report.items():
            firsts[sent] = min(first_us, firsts.get(sent, first_us))
            lasts[sent] = max(last_us, lasts.get(sent, last_us))
    if not firsts:
        return {}
    first, last = sorted(firsts.values()), sorted(lasts.values())
    return {
        "messages": len(first),
        "first_receiver_p50_ms": round(percentile(first, 50) / 1000, 2),
        "last_receiver_p50_ms": round(percentile(last, 50) / 1000, 2),
        "last_receiver_p90_ms": round(percentile(last, 90) / 1000, 2),
    }


def _sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)
