"""`three_nodes`: scripts/cluster run as it is, for the three-process cluster tests.

scripts/cluster starts its own Redis and PostgreSQL (Debian's packages), three `relay serve`
processes sharing both, and nginx in front of them (docs/deploy/nginx-cluster.conf). The
fixture waits for the cluster.json it writes (URLs and process ids), hands that to the tests,
and stops the script with SIGINT as Ctrl-C would; `stop()` says whether that went cleanly.
Starting takes a few seconds (initdb, three processes), so it is done once per module.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.client import RelayClient
from tests.realservers import free_port, unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster"
START_TIMEOUT_S = 90.0

# Every node gets these (scripts/cluster passes RELAY_* through): tests register and post fast,
# and a user is shown offline soon after their last session goes.
NODE_SETTINGS = {
    "RELAY_REGISTER_PER_IP": "1000",
    "RELAY_LOGIN_PER_IP": "1000",
    "RELAY_LOGIN_PER_USERNAME": "1000",
    "RELAY_HTTP_PER_IP": "1000000",
    "RELAY_MESSAGE_RATE": "100000",
    "RELAY_ACTION_RATE": "100000",
    "RELAY_PRESENCE_GRACE_S": "0.2",
    "RELAY_SHUTDOWN_GRACE_S": "2",
    "RELAY_LOG_LEVEL": "warning",
    "RELAY_LEASE_TTL_S": "1",  # a dead node's sessions and channels are taken over within 1 s
}


@dataclass
class ClusterNode:
    name: str
    pid: int
    http: str  # http://127.0.0.1:PORT
    realtime: str  # ws://127.0.0.1:PORT

    def client(self) -> RelayClient:
        return RelayClient(self.http)

    def kill(self) -> None:
        """kill -9: no shutdown, no lease released, connections cut."""
        os.kill(self.pid, signal.SIGKILL)

    def alive(self) -> bool:
        return alive(self.pid)


def alive(pid: int) -> bool:
    """Running: a process that ended but was not yet reaped by scripts/cluster (a zombie,
    state Z) is not (Linux's /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class ThreeNodes:
    def __init__(self, proc: subprocess.Popen[bytes], data: Path, described: dict[str, Any]):
        self.proc = proc
        self.data = data
        self.url: str = described["url"]  # nginx: what a user opens
        self.ws_url = self.url.replace("http://", "ws://")
        self.database: str = described["database"]
        self.broker: str = described["broker"]
        # redis, postgres, nginx (as root, postgres's is runuser's: it ends with the server)
        self.servers: dict[str, int] = described["servers"]
        self.nodes = [
            ClusterNode(n["name"], n["pid"], n["http"], n["realtime"]) for n in described["nodes"]
        ]

    def client(self) -> RelayClient:
        """A client of the load balancer (any node)."""
        return RelayClient(self.url)

    def output(self) -> str:
        return (self.data / "script.log").read_text()

    def stop(self) -> int:
        """Ctrl-C: the script's exit status, once it and every node have ended."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _stop_with_parent() -> None:
    """In the child: Ctrl-C (SIGINT) when this test process dies, so a crashed or killed
    pytest worker leaves no cluster running (scripts/cluster then stops everything)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


def start_three_nodes() -> tuple[ThreeNodes, Path]:
    for needed in ("redis-server", "nginx"):
        if not (shutil.which(needed) or os.access(f"/usr/sbin/{needed}", os.X_OK)):
            unavailable(needed)
    if not glob.glob("/usr/lib/postgresql/*/bin/postgres") and not shutil.which("postgres"):
        unavailable("PostgreSQL")
    # Not under pytest's tmp_path: as root PostgreSQL runs as `postgres`, which must reach it.
    data = Path(tempfile.mkdtemp(prefix="relay-cluster-"))
    data.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(NODE_SETTINGS)
    log = open(data / "script.log", "wb")  # noqa: SIM115  (closed when the script ends)
    proc = subprocess.Popen(
        [str(SCRIPT), "--data", str(data), "--port", str(free_port())],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=_stop_with_parent,
    )  # fmt: skip
    log.close()  # the child holds its own copy
    described = data / "cluster.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not described.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            text = (data / "script.log").read_text()
            for log_file in sorted((data / "logs").glob("node*.log")):  # why a node exited
                text += f"\n--- {log_file.name}:\n{log_file.read_text()[-3000:]}"
            shutil.rmtree(data, ignore_errors=True)
            raise RuntimeError(f"scripts/cluster did not start:\n{text}")
        time.sleep(0.1)
    return ThreeNodes(proc, data, json.loads(described.read_text())), data
