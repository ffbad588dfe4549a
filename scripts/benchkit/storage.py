"""Scenario `storage`: committed messages/s with Relay on PostgreSQL next to Relay on SQLite, in
the same run, on the same machine.

For each database, a fresh Relay (a fresh SQLite file; a fresh PostgreSQL database), 50 users in
one channel, and the `write` scenario's two ways of posting: REST (one post in flight per
sender) and gateway op 12 with `window` sends in flight per sender (acknowledged by op 13 after
the commit, no message events). PostgreSQL is a private server started here from Debian's
packages (`apt-get install postgresql`), on loopback, with its default durability (fsync and
synchronous_commit on): each committed batch waits for its WAL flush, as a production server
would. SQLite runs as Relay always does (WAL, synchronous=NORMAL).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, Any

from benchkit.core import Bench, Row
from benchkit.procs import free_port
from benchkit.relay import HOST

if TYPE_CHECKING:
    from collections.abc import Iterator

    from benchkit.procs import Worker

START_TIMEOUT_S = 60.0
GATEWAY = "gateway op 12"


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextlib.contextmanager
def postgres(bench: Bench) -> Iterator[str]:
    """A private PostgreSQL cluster for this run; yields the DSN of an empty database."""
    initdb, server, psql = _binary("initdb"), _binary("postgres"), _binary("psql")
    if initdb is None or server is None or psql is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    workdir = tempfile.mkdtemp(prefix="relay-bench-pg-", dir=bench.scratch)
    try:
        if as_user:
            shutil.chown(workdir, "postgres", "postgres")
        data = os.path.join(workdir, "data")
        subprocess.run(
            [*as_user, initdb, "-D", data, "-A", "trust", "-U", "relay", "-E", "UTF8",
             "--locale", "C.UTF-8"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        port = free_port()
        proc = bench.procs.popen(
            [*as_user, server, "-D", data, "-p", str(port), "-k", workdir,
             "-c", f"listen_addresses={HOST}", "-c", "max_connections=50"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            dsn = f"postgresql://relay@{HOST}:{port}"
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
                    done = subprocess.run(
                        [psql, "-X", "-q", "-d", f"{dsn}/postgres", "-c", "CREATE DATABASE bench"],
                        capture_output=True, timeout=30,
                    )  # fmt: skip
                    if done.returncode == 0:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start")
                time.sleep(0.1)
            yield f"{dsn}/bench"
        finally:
            bench.procs.stop(proc, timeout_s=30.0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(bench: Bench, database: str, label: str) -> dict[str, dict[str, Any]]:
    """The REST and gateway posting phases on a fresh Relay storing in `database` ("" is the
    default SQLite file)."""
    config = bench.config
    relay = bench.start_relay(database=database) if database else bench.start_relay()
    started: list[Worker] = []
    runs: dict[str, dict[str, Any]] = {}
    try:
        owner = relay.accounts("owner", 1)[0]
        posters = relay.accounts("poster", config.write_senders)
        _, channel = relay.community(owner, posters)
        started = [
            bench.http_worker(
                {
                    "host": HOST,
                    "port": relay.http_port,
                    "path": f"/v1/api/channels/{channel}/messages",
                    "tokens": [p.token for p in posters],
                    "per_sender": 1,
                }
            )
        ]
        runs["REST"] = bench.run_phase(
            label={"scenario": "storage", "server": label, "phase": "REST"},
            server_pid=relay.pid,
            receivers=[],
            sender=started[0],
            sender_cmd={"mode": "closed"},
            latency=False,
        )
        bench.stop_workers(started)
        from benchkit.scenarios import WRITE_SENDER_INTENTS

        job = {
            "host": HOST,
            "port": relay.ws_port,
            "path": "/v1/gateway?encoding=json",
            "tokens": [p.token for p in posters],
            "senders": config.write_senders,
            "channel_id": channel,
            "intents": int(WRITE_SENDER_INTENTS),
            "receives_messages": False,
        }
        started = bench.ws_workers(job, config.write_senders, 1, name="gateway-sender")
        before = relay.store_counters()
        via = f"{GATEWAY}, {config.window} in flight each"
        runs[via] = bench.run_phase(
            label={"scenario": "storage", "server": label, "phase": via},
            server_pid=relay.pid,
            receivers=started,
            sender=started[0],
            sender_cmd={"mode": "closed", "window": config.window},
            latency=False,
        )
        after = relay.store_counters()
        batches = after.get("write_batches", 0) - before.get("write_batches", 0)
        writes = after.get("writes_committed", 0) - before.get("writes_committed", 0)
        runs[via]["writes_per_batch"] = round(writes / batches, 1) if batches else None
    finally:
        bench.stop_workers(started)
        relay.stop()
    return runs


def storage(bench: Bench) -> list[Row]:
    config = bench.config
    bench.log(f"storage: SQLite, then PostgreSQL; {config.write_senders} senders")
    sqlite = _measure(bench, "", "relay (SQLite)")
    with postgres(bench) as dsn:
        pg = _measure(bench, dsn, "relay (PostgreSQL)")
    bench.details["storage"] = {"sqlite": sqlite, "postgresql": pg}
    case = f"{config.write_senders} senders"
    rows = []
    for via in sqlite:
        for name, run in (("SQLite", sqlite[via]), ("PostgreSQL", pg[via])):
            if run["posts"]["errors"]:
                bench.notes.append(
                    f"storage ({name}, {via}): failed sends {run['posts']['errors']}"
                )
        rows.append(
            Row(
                "storage", case, f"committed messages/s ({via})", "1/s",
                {"relay": sqlite[via]["acked_per_s"], "postgresql": pg[via]["acked_per_s"]},
            )
        )  # fmt: skip
        if "writes_per_batch" in sqlite[via]:
            rows.append(
                Row(
                    "storage", case, f"messages per commit ({via})", "",
                    {"relay": sqlite[via]["writes_per_batch"],
                     "postgresql": pg[via]["writes_per_batch"]},
                )
            )  # fmt: skip
    return rows
