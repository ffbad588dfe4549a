"""Processes the bench starts, and what /proc says about them (CPU time, resident memory).

Resource handling: every process is started through `Procs`, which remembers its id; `stop_all`
(called from the harness's `finally`) ends each one by its own id: SIGTERM, a grace period,
then SIGKILL. Nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import resource
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the server binds it right after), chosen below the
    kernel's ephemeral range: a port the kernel hands out (bind to 0) can be taken, before the
    server binds it, by one of the thousands of outgoing connections the load generator opens."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded machine: take what the kernel gives
        sock.bind((host, 0))
        any_port: int = sock.getsockname()[1]
        return any_port


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS  # fields 14, 15


def preemptions(pid: int) -> int:
    """How often the process's main thread (the event loop, for every server here) was switched
    out while it could still run: nonvoluntary_ctxt_switches in /proc/<pid>/status. (Summing
    over /proc/<pid>/task would not be monotonic: worker threads come and go.)"""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"nonvoluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc/<pid>/statm."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE_BYTES


class CpuMeter:
    """CPU% of some processes over an interval: `start()`, then `stop()` -> percent of one core
    (over 100 when a process runs more than one thread at once); `system_pct` is the part
    spent in the kernel (socket calls)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._user = self._system = 0.0
        self._t = 0.0
        self.system_pct = 0.0

    def _times(self) -> tuple[float, float]:
        times = [cpu_times(p) for p in self.pids]
        return sum(t[0] for t in times), sum(t[1] for t in times)

    def start(self) -> None:
        self._t = time.monotonic()
        self._user, self._system = self._times()

    def stop(self) -> float:
        wall = time.monotonic() - self._t
        user, system = self._times()
        if wall <= 0:
            return 0.0
        self.system_pct = round(100.0 * (system - self._system) / wall, 1)
        return round(100.0 * (user - self._user + system - self._system) / wall, 1)


class Worker:
    """A load-generator process: a function in `benchkit.workers` run in a fresh interpreter
    (multiprocessing "spawn"), driven by JSON-able commands over a pipe."""

    def __init__(self, process: BaseProcess, pipe: Connection, name: str) -> None:
        self.process = process
        self.pipe = pipe
        self.name = name

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def send(self, msg: dict[str, Any]) -> None:
        self.pipe.send(msg)

    def recv(self, timeout_s: float) -> dict[str, Any]:
        """The worker's next message. Raises TimeoutError, or RuntimeError if it died."""
        deadline = time.monotonic() + timeout_s
        while not self.pipe.poll(min(0.2, max(0.0, deadline - time.monotonic()))):
            if not self.process.is_alive():
                raise RuntimeError(f"{self.name} exited with code {self.process.exitcode}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} did not answer within {timeout_s:.0f} s")
        try:
            msg: dict[str, Any] = self.pipe.recv()
        except EOFError:
            self.process.join(1)
            raise RuntimeError(f"{self.name} exited with code {self.process.exitcode}") from None
        if "error" in msg:
            raise RuntimeError(f"{self.name}: {msg['error']}")
        return msg


class Procs:
    """Everything the bench started, to be stopped by process id."""

    def __init__(self) -> None:
        self._popen: list[subprocess.Popen[bytes]] = []
        self._workers: list[Worker] = []
        self._context = multiprocessing.get_context("spawn")

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, **kwargs)
        self._popen.append(proc)
        return proc

    def worker(
        self, target: Callable[[Connection, dict[str, Any]], None], job: dict[str, Any], name: str
    ) -> Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=target, args=(child, job), name=name, daemon=True)
        process.start()
        child.close()
        worker = Worker(process, parent, name)
        self._workers.append(worker)
        return worker

    def stop_worker(self, worker: Worker, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            worker.send({"cmd": "stop"})
        worker.process.join(timeout_s)
        if worker.process.is_alive():
            worker.process.kill()  # os.kill(its pid, SIGKILL)
            worker.process.join(timeout_s)
        worker.pipe.close()
        if worker in self._workers:
            self._workers.remove(worker)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if proc in self._popen:
            self._popen.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for worker in list(self._workers):
            self.stop_worker(worker, timeout_s=2.0)
        for proc in list(self._popen):
            self.stop(proc)
