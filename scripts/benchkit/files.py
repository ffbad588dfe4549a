"""The `files` scenario: upload and download MB/s of 1 MiB and 25 MiB files with 1 and 10
concurrent clients, image uploads per second (cleaned, with previews), and the server's RSS
during a 25 MiB upload; downloads next to nginx (the Debian package, if installed: the bench
does not fetch it) serving the same plaintext file from disk in the same run.

Relay's downloads decrypt (XChaCha20-Poly1305, 64 KiB chunks) on its worker threads and go
through hypercorn; nginx uses sendfile. Uploads and downloads are made by
curl (one process per client, requests one after another on a kept-alive connection), so the
client costs little and the same for both servers; image uploads by httpx.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import httpx
import trio

from benchkit.core import Row
from benchkit.procs import free_port, rss_bytes
from benchkit.relay import HOST

if TYPE_CHECKING:
    from pathlib import Path

    from benchkit.core import Bench

MiB = 1024 * 1024
NGINX = "/usr/sbin/nginx"
CURL = shutil.which("curl") or "curl"
NGINX_CONF = """
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {host}:{port};
        root {root};
    }}
}}
"""


def files(bench: Bench) -> list[Row]:
    quick = bench.config.measure_s < 2
    sizes = [MiB] if quick else [MiB, 25 * MiB]
    rows: list[Row] = []
    relay = bench.start_relay(
        max_upload_bytes=str(26 * MiB),
        upload_quota_bytes=str(1 << 40),
        min_free_disk_bytes="0",
        upload_min_rate="1",
    )
    nginx = None
    try:
        (owner,) = relay.accounts("files", 1)
        _, channel = relay.community(owner, [])
        auth = {"Authorization": f"Bearer {owner.token}"}
        nginx_root = bench.scratch / "nginx-root"
        nginx_root.mkdir(parents=True, exist_ok=True)
        nginx = _start_nginx(bench, nginx_root)
        if nginx is None:
            bench.notes.append("files: nginx not installed at /usr/sbin/nginx; no nginx column")
        for size in sizes:
            data = os.urandom(size)
            file_path = nginx_root / f"f{size}"
            file_path.write_bytes(data)
            for clients in (1, 10):
                case = f"{size // MiB} MiB, {clients} client{'s' if clients > 1 else ''}"
                total = max(clients, (64 * MiB if not quick else 8 * MiB) // size)
                peak = [0]
                base = rss_bytes(relay.pid)
                stop = threading.Event()
                watcher = threading.Thread(target=_watch_rss, args=(relay.pid, peak, stop))
                watcher.start()
                try:
                    mbps = _uploads(
                        relay.url, channel, owner.token, file_path, size, clients, total
                    )
                finally:
                    stop.set()
                    watcher.join()
                rows.append(Row("files", case, "upload", "MB/s", {"relay": round(mbps, 1)}))
                if clients == 1:
                    rows.append(
                        Row(
                            "files",
                            case,
                            "server RSS growth during uploads",
                            "MiB",
                            {"relay": round((peak[0] - base) / MiB, 1)},
                            better="lower",
                            bar="flat (well under the file size)" if size > MiB else None,
                            bar_met=(peak[0] - base) < size / 2 if size > MiB else None,
                        )
                    )
                upload_id = trio.run(_one_upload, relay.url, channel, auth, data)
                url = trio.run(_claim, relay.url, channel, auth, upload_id)
                relay_mbps = _downloads(relay.url + url, size, clients, total)
                values: dict[str, float | None] = {"relay": round(relay_mbps, 1)}
                if nginx is not None:
                    nginx_url = f"http://{HOST}:{nginx[1]}/f{size}"
                    values["nginx"] = round(_downloads(nginx_url, size, clients, total), 1)
                met = None
                if values.get("nginx"):
                    met = values["relay"] >= 0.5 * values["nginx"]  # type: ignore[operator]
                rows.append(
                    Row("files", case, "download", "MB/s", values, bar=">= 0.5x nginx", bar_met=met)
                )
                bench.log(f"files {case}: {rows[-1].values}")
        per_s = trio.run(_image_uploads, relay.url, channel, auth, 4 if quick else 40)
        rows.append(
            Row(
                "files",
                "1600x1200 JPEG, 10 clients",
                "image uploads (cleaned, previews)",
                "uploads/s",
                {"relay": round(per_s, 1)},
            )
        )
    finally:
        if nginx is not None:
            bench.procs.stop(nginx[0])
        relay.stop()
    return rows


def _watch_rss(pid: int, peak: list[int], stop: threading.Event) -> None:
    while not stop.wait(0.05):
        peak[0] = max(peak[0], rss_bytes(pid))


def _start_nginx(bench: Bench, root: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    if not os.path.exists(NGINX):
        return None
    prefix = bench.scratch / "nginx"
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, host=HOST, port=port, root=root))
    with open(bench.log_path, "ab") as log:
        proc = bench.procs.popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{HOST}:{port}/", timeout=1)
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    bench.procs.stop(proc)
    return None


def _curl(clients: int, config: str, count: int) -> float:
    """Run `clients` curl processes, each doing `count` requests from `config` (a curl config
    body for one request); the wall time they took together. Any answer but 2xx fails."""
    statuses: list[str] = []

    def one() -> None:
        done = subprocess.run(
            [CURL, "-s", "--config", "-"],
            # `next` between requests: each its own options (curl joins repeated data-binary
            # values into one body otherwise); none after the last (it would want a URL).
            input="next\n".join([config + 'write-out = "%{http_code}\\n"\n'] * count).encode(),
            check=True,
            capture_output=True,
        )
        statuses.extend(done.stdout.decode().split())

    threads = [threading.Thread(target=one) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    bad = [code for code in statuses if not code.startswith("2")]
    if bad or len(statuses) != clients * count:
        raise RuntimeError(f"curl: {len(statuses)} answers, not 2xx: {sorted(set(bad))}")
    return elapsed


def _uploads(
    url: str, channel: str, token: str, path: Path, size: int, clients: int, total: int
) -> float:
    each = max(1, total // clients)
    config = (
        f'url = "{url}/v1/api/channels/{channel}/attachments?filename=bench.bin"\n'
        f'header = "Authorization: Bearer {token}"\n'
        'header = "Content-Type: application/octet-stream"\nheader = "Expect:"\n'
        f'data-binary = "@{path}"\noutput = "/dev/null"\n'
    )
    elapsed = _curl(clients, config, each)
    return each * clients * size / MiB / elapsed


def _downloads(url: str, size: int, clients: int, total: int) -> float:
    each = max(1, total // clients)
    elapsed = _curl(clients, f'url = "{url}"\noutput = "/dev/null"\n', each)
    return each * clients * size / MiB / elapsed


async def _one_upload(url: str, channel: str, auth: dict[str, str], data: bytes) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        r = await http.post(
            f"/v1/api/channels/{channel}/attachments?filename=bench.bin",
            content=data,
            headers=auth,
        )
        r.raise_for_status()
        upload_id: str = r.json()["upload_id"]
        return upload_id


async def _claim(url: str, channel: str, auth: dict[str, str], upload_id: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        r = await http.post(
            f"/v1/api/channels/{channel}/messages",
            json={"attachments": [{"id": upload_id}]},
            headers=auth,
        )
        r.raise_for_status()
        file_url: str = r.json()["attachments"][0]["url"]
        return file_url


async def _image_uploads(url: str, channel: str, auth: dict[str, str], total: int) -> float:
    from PIL import Image

    out = io.BytesIO()
    Image.effect_mandelbrot((1600, 1200), (-2.0, -1.2, 1.0, 1.2), 100).convert("RGB").save(
        out, format="JPEG", quality=90
    )
    data = out.getvalue()
    left = [total]

    async def client(http: httpx.AsyncClient) -> None:
        while left[0] > 0:
            left[0] -= 1
            r = await http.post(
                f"/v1/api/channels/{channel}/attachments?filename=photo.jpg",
                content=data,
                headers=auth,
            )
            r.raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(client, http)
        elapsed = time.perf_counter() - start
    return total / elapsed
