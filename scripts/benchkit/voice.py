"""Scenario `voice`: voice channels of 10 members over UDP, each member sending 120-byte Opus-sized
frames at 50 packets/s (`aead_xchacha20_poly1305_rtpsize`), Relay against the smallest honest
peer: an asyncio+uvloop UDP forwarder that decrypts with the sender's key and encrypts for each
receiver with theirs (PyNaCl), as Relay's voice actor does.

Relay runs the real path: users log in with Ed25519 keys, join with gateway op 4, IDENTIFY on
`/v1/voice`, do IP discovery and SELECT_PROTOCOL udp; then the setup closes its UDP socket and a
load process binds the same port, so the address Relay bound stays the member's. The peer's
members announce themselves with one `JOIN` datagram (channel, SSRC; keys derived from the
SSRC on both sides).

Load processes send on a fixed schedule and receive on the same sockets, decrypt every packet
with their key, and take the latency from a send timestamp inside the payload. Phases: the fixed
load (`channels` x 10 members x 50 packets/s): forwarded packets/s received, p50/p99 latency and
the server's CPU per forwarded packet; then saturation (4x the rate per sender).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import selectors
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from benchkit.core import Bench, Row, percentile, profile_result
from benchkit.procs import CpuMeter, free_port
from benchkit.relay import HOST

if TYPE_CHECKING:
    from pathlib import Path

MEMBERS = 10
RATE_PPS = 50
FRAME_BYTES = 120
ZEROS = bytes(20)

PEER = r"""
# Relay bench peer: a UDP voice forwarder on asyncio + uvloop, per-receiver AEAD (PyNaCl).
import asyncio, hashlib, sys
import uvloop
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt as dec,
    crypto_aead_xchacha20poly1305_ietf_encrypt as enc,
)
ZEROS = bytes(20)

class Forwarder(asyncio.DatagramProtocol):
    def __init__(self):
        self.members = {}  # addr -> [channel, ssrc, key, last counter in, counter out]
        self.channels = {}

    def connection_made(self, transport):
        self.t = transport

    def datagram_received(self, data, addr):
        m = self.members.get(addr)
        if m is None:
            if len(data) == 12 and data[:4] == b"JOIN":
                ch, ssrc = int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big")
                key = hashlib.sha256(b"voice-bench-%d" % ssrc).digest()
                self.members[addr] = [ch, ssrc, key, -1, 0]
                self.channels.setdefault(ch, []).append(addr)
                self.t.sendto(b"OK", addr)
            return
        if data[:4] == b"JOIN":  # a repeat: our OK was lost
            self.t.sendto(b"OK", addr)
            return
        if len(data) < 32 or int.from_bytes(data[8:12], "big") != m[1]:
            return
        counter = int.from_bytes(data[-4:], "big")
        if counter <= m[3]:
            return  # replayed
        head = data[:12]
        try:
            body = dec(data[12:-4], head, data[-4:] + ZEROS, m[2])
        except Exception:
            return
        m[3] = counter
        members, send = self.members, self.t.sendto
        for a in self.channels[m[0]]:
            if a == addr:
                continue
            r = members[a]
            r[4] += 1
            tail = (r[4] & 0xFFFFFFFF).to_bytes(4, "big")
            send(head + enc(body, head, tail + ZEROS, r[2]) + tail, a)

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Forwarder, local_addr=("127.0.0.1", int(sys.argv[1])))
    print("ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def peer_key(ssrc: int) -> bytes:
    return hashlib.sha256(b"voice-bench-%d" % ssrc).digest()


class Member:
    def __init__(self, port: int, ssrc: int, key: bytes, server: tuple[str, int]) -> None:
        self.port, self.ssrc, self.key, self.server = port, ssrc, key, server


def _load(members: list[Member], rate: int, seconds: float, out: Any) -> None:
    """One load process: every member sends `rate` packets/s for `seconds` and receives."""
    sel = selectors.DefaultSelector()
    socks = []
    for m in members:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((HOST, m.port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, m)
        socks.append((s, m))
    received = sent = 0
    latencies: list[int] = []
    counters = {m.ssrc: 1 << 20 for m in members}  # above what the setup may have used
    interval = 1.0 / rate
    start = time.monotonic()
    end = start + seconds
    next_send = start
    seq = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_send:
            seq += 1
            for s, m in socks:
                counters[m.ssrc] += 1
                c = counters[m.ssrc]
                head = bytes([0x80, 120]) + (seq & 0xFFFF).to_bytes(2, "big")
                head += (seq * 960 & 0xFFFFFFFF).to_bytes(4, "big") + m.ssrc.to_bytes(4, "big")
                body = time.monotonic_ns().to_bytes(8, "big") + bytes(FRAME_BYTES - 8)
                tail = c.to_bytes(4, "big")
                box = crypto_aead_xchacha20poly1305_ietf_encrypt(body, head, tail + ZEROS, m.key)
                try:
                    s.sendto(head + box + tail, m.server)
                    sent += 1
                except BlockingIOError:
                    pass
            next_send += interval
        for key, _ in sel.select(max(0.0, min(next_send, end) - time.monotonic())):
            rs, m = key.fileobj, key.data
            assert isinstance(rs, socket.socket)
            while True:
                try:
                    data = rs.recv(4096)
                except BlockingIOError:
                    break
                try:
                    body = crypto_aead_xchacha20poly1305_ietf_decrypt(
                        data[12:-4], data[:12], data[-4:] + ZEROS, m.key
                    )
                except Exception:
                    continue
                received += 1
                if received % 4 == 0:
                    latencies.append(
                        (time.monotonic_ns() - int.from_bytes(body[:8], "big")) // 1000
                    )
    for s, _ in socks:
        s.close()
    out.put({"sent": sent, "received": received, "latencies_us": latencies})


def _run_load(members: list[Member], rate: int, seconds: float, pid: int) -> dict[str, Any]:
    procs = max(1, min(4, (os.cpu_count() or 2)))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    groups = [members[i::procs] for i in range(procs)]
    workers = [ctx.Process(target=_load, args=(g, rate, seconds, out)) for g in groups if g]
    meter = CpuMeter([pid])
    for w in workers:
        w.start()
    # The load processes' own CPU: when they use what the machine has left, they (not the
    # server) are the bottleneck, and their receive backlog is in the latency.
    load_meter = CpuMeter([w.pid for w in workers if w.pid is not None])
    meter.start()
    load_meter.start()
    results = [out.get(timeout=seconds + 60) for _ in workers]
    cpu = meter.stop()
    load_cpu = load_meter.stop()
    for w in workers:
        w.join(10)
    received = sum(r["received"] for r in results)
    lat = sorted(x for r in results for x in r["latencies_us"])
    per_s = received / seconds
    return {
        "sent": sum(r["sent"] for r in results),
        "received": received,
        "forwarded_per_s": round(per_s),
        "p50_ms": round(percentile(lat, 50) / 1000, 2) if lat else None,
        "p99_ms": round(percentile(lat, 99) / 1000, 2) if lat else None,
        "cpu_pct": cpu,
        "load_cpu_pct": load_cpu,
        "cpu_us_per_packet": round(cpu / 100 * 1e6 / per_s, 1) if per_s else None,
    }


# -- Relay -----------------------------------------------------------------------------------


def _relay_members(url: str, ws_url: str, channels: int, hold: Any, ready: Any) -> None:
    """Set up `channels` voice channels of MEMBERS members on Relay (in its own process: trio
    keeps their gateway and voice WebSockets open until `hold` is set)."""
    import trio
    from nacl.signing import SigningKey

    from relay.client import RelayClient

    async def main() -> None:
        found: list[tuple[int, int, bytes, tuple[str, int]]] = []
        sockets: list[Any] = []
        async with trio.open_nursery() as nursery:
            for ch in range(channels):
                clients, ids, tokens = [], [], []
                for i in range(MEMBERS):
                    key = SigningKey.generate()
                    client = RelayClient(url)
                    name = f"vb{os.getpid()}c{ch}m{i}"
                    user = await client.register(name, public_key=bytes(key.verify_key))
                    await client.login_with_key(name, key)
                    clients.append(client)
                    ids.append(user["id"])
                    tokens.append(client.access_token)
                server = await clients[0].call("POST", "/v1/api/servers", {"name": f"v{ch}"})
                voice_id = next(c["id"] for c in server["channels"] if c["type"] == "voice")
                invite = await clients[0].call(
                    "POST", f"/v1/api/servers/{server['id']}/invites", {}
                )
                for c in clients[1:]:
                    await c.call("POST", f"/v1/api/invites/{invite['code']}")
                for i in range(MEMBERS):
                    got = trio.Event()
                    who = (server["id"], voice_id, ids[i], tokens[i] or "")
                    nursery.start_soon(_relay_member, ws_url, who, found, sockets, got)
                    await got.wait()
            for sock in sockets:
                sock.close()
            ready.put(found)
            await trio.to_thread.run_sync(hold.wait)
            nursery.cancel_scope.cancel()

    trio.run(main)


async def _relay_member(
    ws_url: str,
    who: tuple[str, str, str, str],
    found: list[tuple[int, int, bytes, tuple[str, int]]],
    sockets: list[Any],
    got: Any,
) -> None:
    """One member: gateway, op 4, voice connection with UDP; holds them open until cancelled."""
    import trio

    from relay.client import open_gateway
    from relay.voice_client import join_voice, open_voice

    server_id, voice_id, user_id, token = who
    async with open_gateway(ws_url) as g:
        await g.identify(token)
        grant = await join_voice(g, server_id, voice_id)
        async with open_voice(
            ws_url,
            server_id=server_id,
            user_id=user_id,
            session_id=g.session_id or "",
            token=grant["token"],
        ) as v:
            assert v.udp is not None
            assert v.server_addr is not None
            port = v.udp.getsockname()[1]
            # Kept open until every member is set up (so no later member's socket gets the
            # port), then closed for a load process to bind.
            found.append((port, v.ssrc, v.key, v.server_addr))
            sockets.append(v.udp)
            got.set()
            await trio.sleep_forever()


def _relay_case(bench: Bench, channels: int) -> dict[str, Any]:
    udp_port = free_port()
    relay = bench.start_relay(
        voice_udp_port=str(udp_port),
        voice_max_packets_per_s="100000",
        voice_max_bytes_per_s="100000000",
        heartbeat_interval_s="600",
        voice_lane_packets="256",
        http_per_ip="1000000",
        register_per_ip="100000",
        login_per_ip="100000",
    )
    ctx = multiprocessing.get_context("fork")
    hold, ready = ctx.Event(), ctx.Queue()
    setup = ctx.Process(
        target=_relay_members,
        args=(relay.url, f"ws://{HOST}:{relay.ws_port}", channels, hold, ready),
    )
    setup.start()
    try:
        found = ready.get(timeout=300)
        members = [Member(p, s, k, a) for p, s, k, a in found]
        return _phases(bench, members, relay.pid, profile=True)
    finally:
        hold.set()
        setup.join(15)
        relay.stop()


# -- the peer --------------------------------------------------------------------------------


def _peer_python(scratch: Path) -> Path:
    home = scratch / "voicepeer"
    python = home / "venv" / "bin" / "python"
    probe = [str(python), "-c", "import uvloop, nacl"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home / "venv")], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "uvloop>=0.19", "pynacl>=1.5"]
        subprocess.run(pip, check=True)
    (home / "forwarder.py").write_text(PEER)
    return python


def _peer_case(bench: Bench, channels: int) -> dict[str, Any]:
    python = _peer_python(bench.scratch)
    port = free_port()
    proc = subprocess.Popen(
        [str(python), str(bench.scratch / "voicepeer" / "forwarder.py"), str(port)],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # ready
        members = []
        ssrc = 1000
        for ch in range(channels):
            for _ in range(MEMBERS):
                ssrc += 1
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((HOST, 0))
                s.settimeout(0.5)
                join = b"JOIN" + ch.to_bytes(4, "big") + ssrc.to_bytes(4, "big")
                for attempt in range(10):  # UDP: a JOIN or its answer may be lost
                    s.sendto(join, (HOST, port))
                    try:
                        s.recv(16)
                        break
                    except TimeoutError:
                        if attempt == 9:
                            raise
                members.append(Member(s.getsockname()[1], ssrc, peer_key(ssrc), (HOST, port)))
                s.close()
        return _phases(bench, members, proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def _phases(
    bench: Bench, members: list[Member], pid: int, *, profile: bool = False
) -> dict[str, Any]:
    """The fixed-load and saturation phases; with `profile` (Relay's) and --profile, py-spy
    records the server during each."""
    seconds = bench.config.measure_s + bench.config.warm_s
    results: dict[str, Any] = {}
    for phase, rate in (("fixed", RATE_PPS), ("saturation", RATE_PPS * 4)):
        label = {"scenario": "voice", "phase": phase}
        profiler = bench.profiler(label, pid, seconds) if profile else None
        results[phase] = _run_load(members, rate, seconds, pid)
        if profiler is not None:
            results[phase]["profile"] = profile_result(profiler)
    return results


def voice(bench: Bench) -> list[Row]:
    """Scenario `voice` (module doc)."""
    channels = {"quick": 2, "short": 5, "full": 20}[bench.config.profile]
    results: dict[str, dict[str, Any]] = {}
    for server, case in (("relay", _relay_case), ("asyncio_voice", _peer_case)):
        bench.log(f"voice: {server}, {channels} channels x {MEMBERS} members")
        try:
            results[server] = case(bench, channels)
        except Exception as e:
            bench.fail(f"voice {server}", e)
    bench.details["voice"] = results
    label = f"{channels} ch x {MEMBERS}, 50 pps"

    def values(phase: str, key: str) -> dict[str, float | None]:
        return {s: r[phase][key] for s, r in results.items()}

    sat = Row(
        "voice", f"{channels} ch x {MEMBERS}, 200 pps", "forwarded packets/s", "1/s",
        values("saturation", "forwarded_per_s"), bar="≥ 1× the asyncio+uvloop forwarder",  # noqa: RUF001
    )  # fmt: skip
    if (r := sat.ratio("asyncio_voice")) is not None:
        sat.bar_met = r >= 1.0
    return [
        Row("voice", label, "forwarded packets/s", "1/s", values("fixed", "forwarded_per_s")),
        Row("voice", label, "p50 latency", "ms", values("fixed", "p50_ms"), better="lower"),
        Row("voice", label, "p99 latency", "ms", values("fixed", "p99_ms"), better="lower"),
        Row(
            "voice",
            label,
            "server CPU per forwarded packet",
            "µs",
            values("fixed", "cpu_us_per_packet"),
            better="lower",
        ),
        sat,
    ]
