"""scripts/cluster: Relay in cluster mode on one machine, behind nginx (docs/cluster.md).

Starts, each on free loopback ports: a Redis server (the broker), a PostgreSQL server (the
database; kept under the data directory between runs), N Relay processes (three by default)
sharing both and one data directory (files, keys), and nginx in front of them as the load
balancer for REST and the realtime WebSockets, its site being docs/deploy/nginx-cluster.conf
with loopback addresses and no TLS. Prints the URL to open and writes `cluster.json` in the
data directory (URLs, ports and process ids, for scripts and tests). Ctrl-C (or SIGTERM) stops
nginx, then the nodes, then Redis and PostgreSQL, and exits 0.

A node that exits (kill -9 it to watch its clients move to the others) is reported and the
rest keep running. RELAY_* variables in the environment apply to every node, except those this
script sets for the cluster (database, broker, ports, node id, data directory, public URL).
PostgreSQL refuses to run as root: as root it runs as the `postgres` user, which must be able
to reach the data directory.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "docs" / "deploy" / "nginx-cluster.conf"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1  # prctl(2)


class Failed(Exception):
    """The cluster could not start: one line saying why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> None:
    """Fail at once if nginx's port is taken (else its check would find the other listener)."""
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise Failed(
                f"port {port} is in use ({e.strerror}): choose another with --port"
            ) from None


def pg_binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise Failed(f"{name} not found: apt-get install postgresql")
    return path


def binary(*names: str, package: str) -> str:
    for name in names:
        path = shutil.which(name) or (
            f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None
        )
        if path:
            return path
    raise Failed(f"{names[0]} not found: apt-get install {package}")


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f"{what} exited with {proc.returncode} while starting (log: {log})")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return
        time.sleep(0.05)
    raise Failed(f"{what} did not listen on port {port} in {START_TIMEOUT_S:g} s (log: {log})")


@dataclass
class Node:
    name: str
    http_port: int
    realtime_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def http(self) -> str:
        return f"http://{HOST}:{self.http_port}"


@dataclass
class Cluster:
    data: Path
    port: int
    nodes_wanted: int
    logs: Path = field(init=False)
    as_postgres: list[str] = field(default_factory=list)
    redis: subprocess.Popen[bytes] | None = None
    postgres: subprocess.Popen[bytes] | None = None
    pg_data: Path | None = None
    nginx: subprocess.Popen[bytes] | None = None
    nodes: list[Node] = field(default_factory=list)
    open_logs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs = self.data / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self.as_postgres = ["runuser", "-u", "postgres", "--"]

    def popen(
        self, args: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.logs / log_name, "ab")  # noqa: SIM115  (closed in stop())
        self.open_logs.append(log)
        # A session of its own: the terminal's Ctrl-C reaches this script only, which then
        # stops everything in order (the nodes before the servers they use).
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=_end_with_parent,
        )  # fmt: skip

    # -- Redis and PostgreSQL -------------------------------------------------------------------

    def start_redis(self) -> str:
        port = free_port()
        server = binary("redis-server", "valkey-server", package="redis-server")
        # The broker holds nothing that must outlive a run: no snapshot, no append-only file.
        args = [server, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        self.redis = self.popen([*args, "--dir", str(self.data)], "redis.log")
        wait_port(port, self.redis, "redis-server", self.logs / "redis.log")
        return f"redis://{HOST}:{port}/0"

    def start_postgres(self) -> str:
        self.pg_data = self.data / "postgres"
        if not (self.pg_data / "PG_VERSION").exists():
            self.pg_data.mkdir(parents=True, exist_ok=True)
            if self.as_postgres:
                shutil.chown(self.pg_data, "postgres", "postgres")
            done = subprocess.run(
                [*self.as_postgres, pg_binary("initdb"), "-D", str(self.pg_data), "-A", "trust",
                 "-U", "relay", "-E", "UTF8", "--locale", "C.UTF-8", "--no-instructions"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            if done.returncode:
                raise Failed(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        port = free_port()
        # The socket directory is the data directory itself: nothing outside it is written.
        self.postgres = self.popen(
            [*self.as_postgres, pg_binary("postgres"), "-D", str(self.pg_data), "-p", str(port),
             "-k", str(self.pg_data), "-c", f"listen_addresses={HOST}",
             "-c", "max_connections=200"],
            "postgres.log",
        )  # fmt: skip
        wait_port(port, self.postgres, "postgres", self.logs / "postgres.log")
        dsn = f"postgresql://relay@{HOST}:{port}"
        exists = self.psql(dsn, "SELECT 1 FROM pg_database WHERE datname = 'relay'")
        if exists.strip() != "1":
            self.psql(dsn, "CREATE DATABASE relay")
        return f"{dsn}/relay"

    def psql(self, dsn: str, sql: str) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # the port opens a moment before the server takes connections
            done = subprocess.run(
                [pg_binary("psql"), "-X", "-q", "-A", "-t", "-d", f"{dsn}/postgres", "-c", sql],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return done.stdout
            if time.monotonic() > deadline:
                raise Failed(f"psql: {done.stderr.strip()}")
            time.sleep(0.1)

    # -- Relay ----------------------------------------------------------------------------------

    def start_nodes(self, database: str, broker: str) -> None:
        shared = self.data / "relay"  # every node's data_dir: files and keys, as a shared mount
        shared.mkdir(exist_ok=True)
        key_file = self.data / "media.key"
        if not key_file.exists():  # signed file URLs must check on every node: one key
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        base = dict(os.environ)
        base.update(
            RELAY_DATABASE=database,
            RELAY_BROKER=broker,
            RELAY_DATA_DIR=str(shared),
            RELAY_MEDIA_KEY=key_file.read_text().strip(),
            RELAY_PUBLIC_URL=f"http://{HOST}:{self.port}",
            RELAY_TRUSTED_PROXIES=f"{HOST} ::1",
            RELAY_RELAY_PORT="off",  # the byte relay's raw TCP listener: /v1/relay goes via nginx
            RELAY_VOICE_UDP_PORT="0",  # voice UDP goes to the node directly, on a free port
            RELAY_HOST=HOST,
        )
        base.setdefault("RELAY_LOG_FORMAT", "text")
        for n in range(1, self.nodes_wanted + 1):
            name = f"node{n}"
            http_port, realtime_port = free_port(), free_port()
            env = dict(base, RELAY_NODE_ID=name, RELAY_HTTP_PORT=str(http_port),
                       RELAY_REALTIME_PORT=str(realtime_port))  # fmt: skip
            proc = self.popen([sys.executable, "-m", "relay", "serve"], f"{name}.log", env)
            self.nodes.append(Node(name, http_port, realtime_port, proc, self.logs / f"{name}.log"))
        deadline = time.monotonic() + START_TIMEOUT_S
        for node in self.nodes:  # they start together; each is ready when /readyz says so
            while not ready(node.http):
                if node.proc.poll() is not None:
                    raise Failed(
                        f"{node.name} exited with {node.proc.returncode} (log: {node.log})"
                    )
                if time.monotonic() > deadline:
                    raise Failed(
                        f"{node.name} was not ready in {START_TIMEOUT_S:g} s (log: {node.log})"
                    )
                time.sleep(0.1)

    # -- nginx ----------------------------------------------------------------------------------

    def start_nginx(self) -> None:
        prefix = self.data / "nginx"
        prefix.mkdir(exist_ok=True)
        (prefix / "relay.conf").write_text(site_config(self.port, self.nodes))
        user = ""
        if os.geteuid() == 0:  # else its workers would switch to `nobody`
            user = (
                f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
            )
        temp = " ".join(
            f"{kind}_temp_path {prefix / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (prefix / "nginx.conf").write_text(
            f"""daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {self.logs / "nginx-error.log"} warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log {self.logs / "nginx-access.log"};
    {temp}
    include {prefix / "relay.conf"};
}}
"""
        )
        nginx = binary("nginx", package="nginx")
        check = subprocess.run(
            [nginx, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if check.returncode:
            raise Failed(f"nginx -t: {check.stderr.strip()}")
        self.nginx = self.popen(
            [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], "nginx.log"
        )
        wait_port(self.port, self.nginx, "nginx", self.logs / "nginx-error.log")

    # -- running and stopping -------------------------------------------------------------------

    def describe(self, database: str, broker: str) -> dict[str, Any]:
        return {
            "url": f"http://{HOST}:{self.port}",
            "database": database,
            "broker": broker,
            "servers": {what: proc.pid for what, proc in (("redis", self.redis),
                        ("postgres", self.postgres), ("nginx", self.nginx)) if proc is not None},
            "nodes": [
                {"name": n.name, "pid": n.proc.pid, "http": n.http,
                 "realtime": f"ws://{HOST}:{n.realtime_port}", "log": str(n.log)}
                for n in self.nodes
            ],
        }  # fmt: skip

    def watch(self, stopping: list[int]) -> None:
        """Until a signal: report nodes that exit; stop if a server they all need exits."""
        gone: set[str] = set()
        while not stopping:
            for node in self.nodes:
                if node.name not in gone and node.proc.poll() is not None:
                    gone.add(node.name)
                    say(f"{node.name} (pid {node.proc.pid}) exited with {node.proc.returncode}; "
                        f"the others keep serving (log: {node.log})")  # fmt: skip
            for what, proc in (("nginx", self.nginx), ("redis-server", self.redis),
                               ("postgres", self.postgres)):  # fmt: skip
                if proc is not None and proc.poll() is not None:
                    raise Failed(f"{what} exited with {proc.returncode} (logs: {self.logs})")
            time.sleep(0.2)

    def stop(self) -> None:
        """nginx first (no new requests), then the nodes (each shuts down gracefully), then
        Redis and PostgreSQL (a fast shutdown: open transactions are rolled back)."""
        if self.nginx is not None:
            end(self.nginx, signal.SIGQUIT)  # graceful: open requests finish
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            end(node.proc, None)
        if self.redis is not None:
            end(self.redis, signal.SIGTERM)
        if self.postgres is not None and self.postgres.poll() is None:
            assert self.pg_data is not None
            subprocess.run(
                [*self.as_postgres, pg_binary("pg_ctl"), "stop", "-D", str(self.pg_data),
                 "-m", "fast", "-w"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            end(self.postgres, None)
        for log in self.open_logs:
            log.close()


def _end_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when this script dies, even by kill -9, so
    no server outlives it (they are in sessions of their own, out of reach of the terminal)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def end(proc: subprocess.Popen[bytes], sig: signal.Signals | None, timeout_s: float = 15.0) -> None:
    """Send `sig` (if any) and wait; kill after `timeout_s`."""
    if proc.poll() is None and sig is not None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


def replace(text: str, old: str, new: str) -> str:
    """`text` with `old`, which must occur exactly once, replaced: the example stays the one
    that runs, and a change to it that this script does not know fails loudly."""
    if text.count(old) != 1:
        raise Failed(f"{old.strip()!r} is not in {SITE} exactly once")
    return text.replace(old, new)


def site_config(port: int, nodes: list[Node]) -> str:
    """docs/deploy/nginx-cluster.conf for this machine: plain HTTP on `port`, the nodes on
    loopback (as many as there are, in place of the example's three)."""
    site = SITE.read_text()
    redirect_start = site.index("server {\n    listen 80;")
    redirect_end = site.index("}\n", redirect_start) + 2
    site = site[:redirect_start] + site[redirect_end:]
    site = replace(site, "    listen 443 ssl http2;\n    listen [::]:443 ssl http2;\n",
                   f"    listen {HOST}:{port};\n")  # fmt: skip
    site = replace(site, "    server_name chat.example.com;\n", "    server_name _;\n")
    for line in (
        "    ssl_certificate     /etc/letsencrypt/live/chat.example.com/fullchain.pem;\n",
        "    ssl_certificate_key /etc/letsencrypt/live/chat.example.com/privkey.pem;\n",
        "    ssl_protocols       TLSv1.2 TLSv1.3;\n",
    ):
        site = replace(site, line, "")
    for kind, attr in (("8080", "http_port"), ("8081", "realtime_port")):
        lines = [f"    server 10.0.0.1{n}:{kind} max_fails=1 fail_timeout=5s;" for n in (1, 2, 3)]
        ours = [f"    server {HOST}:{getattr(node, attr)} max_fails=1 fail_timeout=5s;"
                for node in nodes]  # fmt: skip
        for i, line in enumerate(lines):  # each with its comment, to the end of its line
            if site.count(line) != 1:
                raise Failed(f"{line.strip()!r} is not in {SITE} exactly once")
            start = site.index(line)
            stop = site.index("\n", start) + 1
            site = site[:start] + ("\n".join(ours) + "\n" if i == 0 else "") + site[stop:]
    return site


def say(text: str) -> None:
    print(f"cluster: {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "cluster",
                        help="the data directory (default data/cluster)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="nginx's port (default 8000)")
    parser.add_argument("--nodes", type=int, default=3, choices=range(1, 10), metavar="N",
                        help="Relay processes (default 3)")  # fmt: skip
    args = parser.parse_args(argv)
    data = args.data.resolve()
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt  # out of whatever start-up step is waiting

    cluster = Cluster(data, args.port, args.nodes)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status = 0
    try:
        port_free(args.port)
        broker = cluster.start_redis()
        database = cluster.start_postgres()
        cluster.start_nodes(database, broker)
        cluster.start_nginx()
        described = cluster.describe(database, broker)
        # Written whole, then renamed: a reader never sees half of it.
        (data / "cluster.json.tmp").write_text(json.dumps(described, indent=2) + "\n")
        (data / "cluster.json.tmp").replace(data / "cluster.json")
        for node in described["nodes"]:
            say(f"{node['name']}: pid {node['pid']}, {node['http']} and {node['realtime']}")
        say(f"PostgreSQL {database}, Redis {broker}, logs in {cluster.logs}")
        say(f"open {described['url']}  (Ctrl-C stops everything)")
        cluster.watch(stopping)
    except KeyboardInterrupt:
        pass
    except Failed as e:
        print(f"cluster: {e}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("stopping")
        cluster.stop()
        with contextlib.suppress(FileNotFoundError):
            (data / "cluster.json").unlink()
        say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
