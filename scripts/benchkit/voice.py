"""Scenario `voice`: voice channels of 10 members, each member sending 120-byte Opus-sized frames
at 50 packets/s (`aead_xchacha20_poly1305_rtpsize`), Relay against the smallest honest peer: an
asyncio+uvloop forwarder that decrypts with the sender's key and encrypts for each receiver with
theirs (PyNaCl), as Relay's voice actor does, over UDP and over a WebSocket listener
(`websockets`, binary messages) for the WebSocket phase.

Relay runs the real path: users log in with Ed25519 keys, join with gateway op 4, IDENTIFY on
`/v1/voice`. UDP members do IP discovery and SELECT_PROTOCOL udp in a setup process, which then
closes its UDP socket for a load process to bind the same port (so the address Relay bound stays
the member's). WebSocket members' gateways stay in the setup process; the load processes open
their voice connections themselves (IDENTIFY with the VOICE_SERVER_UPDATE token, SELECT_PROTOCOL
websocket) with a raw client. The screen-share channel's first member announces a `screen`
source (op 12; STREAM is in @everyone's defaults) and the nine others select it (op 15). The
peer's members announce themselves with one `JOIN` datagram or binary message (channel, SSRC;
keys derived from the SSRC on both sides).

Load processes send on a fixed schedule and receive on the same sockets, decrypt every packet
with their key, and take the latency from a send timestamp inside the payload. Phases:
- fixed: `channels` x 10 members x 50 packets/s over UDP: forwarded packets/s received, p50/p99
  latency and the server's CPU per forwarded packet;
- saturation: the same members at 4x the rate;
- websocket: `channels` x 10 members x 50 packets/s as binary messages on the voice WebSocket;
- screen: one member sends 1,200-byte packets at 500 packets/s (a 1080p-like screen share) to
  the 9 others of its channel over UDP, which is under Relay's default per-sender limits
  (`voice_max_packets_per_s` 600, `voice_max_bytes_per_s` 1,000,000: 500 x 1,232 bytes).
The Relay the scenario starts raises those two limits anyway (100,000 packets/s, 100 MB/s), so
that no phase measures the limiter: a load process that stalls catches up in a burst.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import queue
import selectors
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from benchkit import wire
from benchkit.core import Bench, Row, percentile, profile_result
from benchkit.procs import CpuMeter, free_port
from benchkit.relay import HOST

if TYPE_CHECKING:
    from pathlib import Path

MEMBERS = 10
RATE_PPS = 50
FRAME_BYTES = 120
SCREEN_PPS = 500
SCREEN_BYTES = 1200
OPUS_TYPE, VIDEO_TYPE = 120, 96  # RTP payload types, as relay.voice_client sends them
MODE = "aead_xchacha20_poly1305_rtpsize"
ZEROS = bytes(20)
PHASE_MAX_S = 9.0  # the websocket and screen phases' window (warm-up included), at most

PEER = r"""
# Relay bench peer: a voice forwarder on asyncio + uvloop, per-receiver AEAD (PyNaCl), over UDP
# and over a WebSocket listener (websockets: the same packets as binary messages).
import asyncio, hashlib, sys
import uvloop
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt as dec,
    crypto_aead_xchacha20poly1305_ietf_encrypt as enc,
)
from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed
ZEROS = bytes(20)

def key_of(ssrc):
    return hashlib.sha256(b"voice-bench-%d" % ssrc).digest()

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
                self.members[addr] = [ch, ssrc, key_of(ssrc), -1, 0]
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

ws_channels = {}

async def ws_member(ws):
    # First message: JOIN (channel, SSRC); then RTP packets, forwarded to the channel's others
    # with broadcast(), which writes without waiting for a slow receiver (as Relay's lanes).
    join = await ws.recv()
    if not isinstance(join, bytes) or len(join) != 12 or join[:4] != b"JOIN":
        return
    ssrc = int.from_bytes(join[8:12], "big")
    m = [ssrc, key_of(ssrc), -1, 0, ws]  # ssrc, key, last counter in, counter out, connection
    channel = ws_channels.setdefault(int.from_bytes(join[4:8], "big"), [])
    channel.append(m)
    try:
        await ws.send(b"OK")
        async for data in ws:
            if not isinstance(data, bytes) or len(data) < 32:
                continue
            if int.from_bytes(data[8:12], "big") != ssrc:
                continue
            counter = int.from_bytes(data[-4:], "big")
            if counter <= m[2]:
                continue  # replayed
            head = data[:12]
            try:
                body = dec(data[12:-4], head, data[-4:] + ZEROS, m[1])
            except Exception:
                continue
            m[2] = counter
            for r in channel:
                if r is m:
                    continue
                r[3] += 1
                tail = (r[3] & 0xFFFFFFFF).to_bytes(4, "big")
                broadcast((r[4],), head + enc(body, head, tail + ZEROS, r[1]) + tail)
    except ConnectionClosed:
        pass  # a load process closing with data unread: a reset, not a close frame
    finally:
        channel.remove(m)

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Forwarder, local_addr=("127.0.0.1", int(sys.argv[1])))
    async with serve(
        ws_member, "127.0.0.1", int(sys.argv[2]), compression=None, ping_interval=None
    ):
        print("ready", flush=True)
        await asyncio.Event().wait()

uvloop.run(main())
"""


def peer_key(ssrc: int) -> bytes:
    return hashlib.sha256(b"voice-bench-%d" % ssrc).digest()


@dataclass
class Member:
    """One member as a load process sees it. UDP: `port` is the local port to bind, `server`
    the server's UDP address. WebSocket: `ws` says how to join (Relay: {"identify": IDENTIFY's
    d}; the peer: {"join": the JOIN bytes}) at `server` (the WebSocket listener); Relay's SSRC
    and key come from its READY and SESSION_DESCRIPTION."""

    ssrc: int
    key: bytes
    server: tuple[str, int]
    port: int = 0
    sends: bool = True
    send_ssrc: int = 0  # the SSRC its packets carry (a video source's); 0: its own
    ws: dict[str, Any] | None = None
    # Its packets' counters start above this (above the setup's): each phase moves it past
    # what the phase may have used, as the server's replay check drops a counter used before.
    counter: int = 1 << 20


@dataclass
class Load:
    """What every sending member sends."""

    rate: int = RATE_PPS
    frame_bytes: int = FRAME_BYTES
    payload_type: int = OPUS_TYPE


# -- the load processes ----------------------------------------------------------------------


class _Udp:
    def __init__(self, m: Member) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((HOST, m.port))
        s.setblocking(False)
        self.sock, self.member = s, m

    def send(self, packet: bytes) -> bool:
        try:
            self.sock.sendto(packet, self.member.server)
        except BlockingIOError:
            return False
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()

    def receive(self) -> list[bytes]:
        packets = []
        recv = self.sock.recv
        while True:
            try:
                packets.append(recv(4096))
            except BlockingIOError:
                return packets


class _Ws:
    """A minimal WebSocket client (benchkit.wire's frames): sends masked binary frames without
    blocking (what the socket does not take waits in `pending`), reads whole buffers and keeps
    the binary messages."""

    def __init__(self, m: Member) -> None:
        assert m.ws is not None
        host, port = m.server
        s = socket.create_connection((host, port), timeout=20)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.member = s, m
        self.buf = b""
        self.pending = b""
        s.sendall(wire.upgrade_request(host, port, "/v1/voice" if "identify" in m.ws else "/"))
        while (head := wire.split_upgrade_response(self.buf)) is None:
            self.buf += self._recv()
        accepted, self.buf = head
        if not accepted:
            raise RuntimeError("WebSocket upgrade refused")
        if "identify" in m.ws:
            self._control(8)  # HELLO
            self._send_control(0, m.ws["identify"])
            m.ssrc = self._control(2)["ssrc"]  # READY
            self._send_control(1, {"protocol": "websocket", "data": {"mode": MODE}})
            m.key = bytes(self._control(4)["secret_key"])  # SESSION_DESCRIPTION
        else:
            s.sendall(wire.client_frame(m.ws["join"], wire.OP_BINARY))
            while not self._messages():  # the peer's OK
                self.buf += self._recv()
        s.setblocking(False)

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed during the voice handshake")
        return data

    def _send_control(self, op: int, d: Any) -> None:
        self.sock.sendall(wire.client_frame(json.dumps({"op": op, "d": d}).encode()))

    def _control(self, op: int) -> dict[str, Any]:
        """The next control frame of `op` (earlier frames are dropped: nothing is sent yet)."""
        while True:
            frame = wire.first_frame(self.buf)
            if frame is None:
                self.buf += self._recv()
                continue
            opcode, payload, self.buf = frame
            if opcode == wire.OP_CLOSE:
                raise ConnectionError(f"closed: {wire.close_code(payload)} {payload[2:]!r}")
            if opcode == wire.OP_TEXT and (decoded := json.loads(payload))["op"] == op:
                d: dict[str, Any] = decoded["d"]
                return d

    def _messages(self) -> list[bytes]:
        pos, frames = wire.data_frames(self.buf, 0)
        self.buf = self.buf[pos:]
        out = []
        for opcode, payload in frames:
            if opcode == wire.OP_BINARY:
                out.append(payload)
            elif opcode == wire.OP_CLOSE:
                raise ConnectionError(f"closed: {wire.close_code(payload)}")
        return out

    def send(self, packet: bytes) -> bool:
        self.pending += wire.client_frame(packet, wire.OP_BINARY)
        self.flush()
        return True

    def flush(self) -> None:
        if self.pending:
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                return
            self.pending = self.pending[sent:]

    def close(self) -> None:
        """A close frame first (1000), so neither server logs a lost connection."""
        self.sock.settimeout(1)
        with contextlib.suppress(OSError):
            self.sock.sendall(self.pending + wire.client_frame(b"\x03\xe8", wire.OP_CLOSE))
        self.sock.close()

    def receive(self) -> list[bytes]:
        while True:
            try:
                data = self.sock.recv(262144)
            except BlockingIOError:
                break
            if not data:
                raise ConnectionError("closed")
            self.buf += data
            if len(data) < 262144:
                break
        return self._messages()


def _load(members: list[Member], load: Load, seconds: float, out: Any, go: Any) -> None:
    """One load process: opens its members' sockets (WebSocket members join), says ready, and
    once `go` is set every sending member sends `load.rate` packets/s for `seconds` while all
    receive."""
    sel = selectors.DefaultSelector()
    ends: list[_Udp | _Ws] = []
    try:
        for m in members:
            end = _Ws(m) if m.ws is not None else _Udp(m)
            sel.register(end.sock, selectors.EVENT_READ, end)
            ends.append(end)
    except Exception as error:
        out.put({"error": f"{type(error).__name__}: {error}"})
        return
    out.put({"ready": True})
    go.wait(120)
    senders = [e for e in ends if e.member.sends]
    received = sent = 0
    latencies: list[int] = []
    counters = {id(e): e.member.counter for e in ends}
    interval = 1.0 / load.rate
    pad = bytes(load.frame_bytes - 8)
    first = bytes([0x80, load.payload_type])
    start = time.monotonic()
    end_at = start + seconds
    next_send = start
    seq = 0
    closed = 0
    while True:
        now = time.monotonic()
        if now >= end_at:
            break
        if now >= next_send:
            seq += 1
            for e in senders:
                m = e.member
                counters[id(e)] += 1
                head = first + (seq & 0xFFFF).to_bytes(2, "big")
                head += (seq * 960 & 0xFFFFFFFF).to_bytes(4, "big")
                head += (m.send_ssrc or m.ssrc).to_bytes(4, "big")
                body = time.monotonic_ns().to_bytes(8, "big") + pad
                tail = counters[id(e)].to_bytes(4, "big")
                box = crypto_aead_xchacha20poly1305_ietf_encrypt(body, head, tail + ZEROS, m.key)
                sent += e.send(head + box + tail)
            next_send += interval
        else:
            for e in senders:
                e.flush()
        for key, _ in sel.select(max(0.0, min(next_send, end_at) - time.monotonic())):
            e = key.data
            try:
                packets = e.receive()
            except ConnectionError:
                sel.unregister(e.sock)
                closed += 1
                continue
            mkey = e.member.key
            for data in packets:
                try:
                    body = crypto_aead_xchacha20poly1305_ietf_decrypt(
                        data[12:-4], data[:12], data[-4:] + ZEROS, mkey
                    )
                except Exception:
                    continue
                received += 1
                if received % 4 == 0:
                    latencies.append(
                        (time.monotonic_ns() - int.from_bytes(body[:8], "big")) // 1000
                    )
    for e in ends:
        e.close()
    out.put({"sent": sent, "received": received, "latencies_us": latencies, "closed": closed})


def _answers(out: Any, workers: list[Any], timeout_s: float) -> list[dict[str, Any]]:
    """One answer from each load process; fails as soon as one died (not after the timeout)."""
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(answers) < len(workers):
        try:
            answers.append(out.get(timeout=1))
        except queue.Empty:
            if any(w.exitcode not in (None, 0) for w in workers):
                raise RuntimeError("a load process died (its traceback is above)") from None
            if time.monotonic() > deadline:
                raise
    return answers


def _run_load(members: list[Member], load: Load, seconds: float, pid: int) -> dict[str, Any]:
    procs = max(1, min(4, (os.cpu_count() or 2)))
    ctx = multiprocessing.get_context("fork")
    out, go = ctx.Queue(), ctx.Event()
    groups = [members[i::procs] for i in range(procs)]
    workers = [ctx.Process(target=_load, args=(g, load, seconds, out, go)) for g in groups if g]
    for w in workers:
        w.start()
    try:
        for ready in _answers(out, workers, 120):
            if "error" in ready:
                raise RuntimeError(f"a load process could not set up: {ready['error']}")
        meter = CpuMeter([pid])
        # The load processes' own CPU: when they use what the machine has left, they (not the
        # server) are the bottleneck, and their receive backlog is in the latency.
        load_meter = CpuMeter([w.pid for w in workers if w.pid is not None])
        go.set()
        meter.start()
        load_meter.start()
        results = _answers(out, workers, seconds + 60)
        cpu = meter.stop()
        load_cpu = load_meter.stop()
    finally:
        go.set()
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    for m in members:  # the counters this phase may have used: at most one per interval
        m.counter += int(load.rate * seconds) + 1000
    received = sum(r["received"] for r in results)
    sent = sum(r["sent"] for r in results)
    lat = sorted(x for r in results for x in r["latencies_us"])
    per_s = received / seconds
    expected = sent * (MEMBERS - 1)  # every packet is for the 9 others of its channel
    return {
        "sent": sent,
        "received": received,
        "forwarded_per_s": round(per_s),
        "loss_pct": round(100 * (1 - received / expected), 2) if expected else None,
        "p50_ms": round(percentile(lat, 50) / 1000, 2) if lat else None,
        "p99_ms": round(percentile(lat, 99) / 1000, 2) if lat else None,
        "cpu_pct": cpu,
        "sys_pct": meter.system_pct,  # of cpu_pct, in the kernel (the socket calls)
        "load_cpu_pct": load_cpu,
        "cpu_us_per_packet": round(cpu / 100 * 1e6 / per_s, 1) if per_s else None,
        "closed_connections": sum(r["closed"] for r in results),
    }


# -- Relay -----------------------------------------------------------------------------------

UdpFound = tuple[int, int, bytes, tuple[str, int]]  # local port, SSRC, key, server address


def _relay_setup(url: str, ws_url: str, commands: Any, answers: Any) -> None:
    """Set up voice channels of MEMBERS members on Relay on demand (in its own process: trio
    keeps their gateway and voice WebSockets open until the None command). A command is
    (kind, channels): "udp" answers the members' `UdpFound`s; "screen" (one channel) the same
    and the screen source's SSRC, which the first member announced and the others selected;
    "websocket" each member's IDENTIFY `d` for a load process to open its voice connection."""
    import trio

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            while True:
                command = await trio.to_thread.run_sync(commands.get)
                if command is None:
                    break
                kind, channels = command
                try:
                    if kind == "websocket":
                        answers.put(await _relay_ws_group(nursery, url, ws_url, channels))
                    else:
                        answers.put(await _relay_udp_group(nursery, url, ws_url, kind, channels))
                except Exception as e:
                    answers.put(RuntimeError(f"{kind} setup: {type(e).__name__}: {e}"))
            nursery.cancel_scope.cancel()

    trio.run(main)


async def _relay_channel(url: str, tag: str) -> tuple[str, str, list[tuple[str, str]]]:
    """MEMBERS users (Ed25519 logins) in a new server: (server id, its voice channel's id,
    [(user id, access token)])."""
    from nacl.signing import SigningKey

    from relay.client import RelayClient

    clients, users = [], []
    for i in range(MEMBERS):
        key = SigningKey.generate()
        client = RelayClient(url)
        name = f"vb{os.getpid()}{tag}m{i}"
        user = await client.register(name, public_key=bytes(key.verify_key))
        await client.login_with_key(name, key)
        clients.append(client)
        users.append((user["id"], client.access_token or ""))
    server = await clients[0].call("POST", "/v1/api/servers", {"name": tag})
    voice_id = next(c["id"] for c in server["channels"] if c["type"] == "voice")
    invite = await clients[0].call("POST", f"/v1/api/servers/{server['id']}/invites", {})
    for c in clients[1:]:
        await c.call("POST", f"/v1/api/invites/{invite['code']}")
    return server["id"], voice_id, users


async def _relay_udp_group(
    nursery: Any, url: str, ws_url: str, kind: str, channels: int
) -> list[UdpFound] | tuple[list[UdpFound], int]:
    import trio

    found: list[UdpFound] = []
    voices: list[Any] = []
    for ch in range(channels):
        server_id, voice_id, users = await _relay_channel(url, f"{kind[0]}{ch}")
        for user_id, token in users:
            got = trio.Event()
            who = (server_id, voice_id, user_id, token)
            nursery.start_soon(_relay_member, ws_url, who, found, voices, got)
            await got.wait()
    for v in voices:
        v.udp.close()  # for a load process to bind its port
    if kind != "screen":
        return found
    sharer, *viewers = voices
    (source,) = await sharer.announce_sources(["screen"])
    for v in viewers:
        await v.select_sources([source["ssrc"]])
        await v.heartbeat(1)  # its ack comes after the server took the selection
        await v.control(6)
    return found, source["ssrc"]


async def _relay_member(
    ws_url: str, who: tuple[str, str, str, str], found: list[UdpFound], voices: list[Any], got: Any
) -> None:
    """One UDP member: gateway, op 4, voice connection with UDP; holds them open until
    cancelled."""
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
            voices.append(v)
            got.set()
            await trio.sleep_forever()


async def _relay_ws_group(
    nursery: Any, url: str, ws_url: str, channels: int
) -> list[dict[str, str]]:
    import trio

    identifies: list[dict[str, str]] = []
    for ch in range(channels):
        server_id, voice_id, users = await _relay_channel(url, f"w{ch}")
        for user_id, token in users:
            got = trio.Event()
            who = (server_id, voice_id, user_id, token)
            nursery.start_soon(_relay_ws_member, ws_url, who, identifies, got)
            await got.wait()
    return identifies


async def _relay_ws_member(
    ws_url: str, who: tuple[str, str, str, str], identifies: list[dict[str, str]], got: Any
) -> None:
    """One WebSocket member's gateway and op 4 (the voice connection is the load process's);
    held open until cancelled."""
    import trio

    from relay.client import open_gateway
    from relay.voice_client import join_voice

    server_id, voice_id, user_id, token = who
    async with open_gateway(ws_url) as g:
        await g.identify(token)
        grant = await join_voice(g, server_id, voice_id)
        identifies.append(
            {
                "server_id": server_id,
                "user_id": user_id,
                "session_id": g.session_id or "",
                "token": grant["token"],
            }
        )
        got.set()
        await trio.sleep_forever()


def _relay_case(bench: Bench, channels: int, ws_channels: int) -> dict[str, Any]:
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
    commands, answers = ctx.Queue(), ctx.Queue()
    ws_url = f"ws://{HOST}:{relay.ws_port}"
    setup = ctx.Process(target=_relay_setup, args=(relay.url, ws_url, commands, answers))
    setup.start()

    def ask(kind: str, count: int) -> Any:
        commands.put((kind, count))
        answer = answers.get(timeout=300)
        if isinstance(answer, Exception):
            raise answer
        return answer

    try:
        found = ask("udp", channels)
        members = [Member(s, k, a, port=p) for p, s, k, a in found]
        results = _udp_phases(bench, members, relay.pid, profile=True)
        # Set up right before its phase: VOICE_SERVER_UPDATE tokens expire (voice_token_ttl_s).
        identifies = ask("websocket", ws_channels)
        ws_members = [Member(0, b"", (HOST, relay.ws_port), ws={"identify": d}) for d in identifies]
        results["websocket"] = _phase(bench, "websocket", ws_members, Load(), relay.pid, True)
        found, screen_ssrc = ask("screen", 1)
        screen = [Member(s, k, a, port=p, sends=False) for p, s, k, a in found]
        screen[0].sends, screen[0].send_ssrc = True, screen_ssrc
        load = Load(SCREEN_PPS, SCREEN_BYTES, VIDEO_TYPE)
        results["screen"] = _phase(bench, "screen", screen, load, relay.pid, True)
        return results
    finally:
        commands.put(None)
        setup.join(15)
        if setup.is_alive():
            setup.kill()
        relay.stop()


# -- the peer --------------------------------------------------------------------------------


def _peer_python(scratch: Path) -> Path:
    home = scratch / "voicepeer"
    python = home / "venv" / "bin" / "python"
    probe = [str(python), "-c", "import uvloop, nacl, websockets.asyncio.server"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home / "venv")], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "uvloop>=0.19", "pynacl>=1.5"]
        subprocess.run([*pip, "websockets>=13"], check=True)
    (home / "forwarder.py").write_text(PEER)
    return python


def _peer_udp_members(port: int, channels: range, first_ssrc: int) -> list[Member]:
    """MEMBERS members per channel, each announced with a JOIN datagram."""
    members = []
    ssrc = first_ssrc
    for ch in channels:
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
            members.append(Member(ssrc, peer_key(ssrc), (HOST, port), port=s.getsockname()[1]))
            s.close()
    return members


def _peer_case(bench: Bench, channels: int, ws_channels: int) -> dict[str, Any]:
    python = _peer_python(bench.scratch)
    port, ws_port = free_port(), free_port()
    proc = subprocess.Popen(
        [str(python), str(bench.scratch / "voicepeer" / "forwarder.py"), str(port), str(ws_port)],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # ready
        members = _peer_udp_members(port, range(channels), 1000)
        results = _udp_phases(bench, members, proc.pid)
        ws_members = []
        for i in range(ws_channels * MEMBERS):
            ssrc = 100_000 + i
            join = b"JOIN" + (i // MEMBERS).to_bytes(4, "big") + ssrc.to_bytes(4, "big")
            ws_members.append(Member(ssrc, peer_key(ssrc), (HOST, ws_port), ws={"join": join}))
        results["websocket"] = _phase(bench, "websocket", ws_members, Load(), proc.pid, False)
        screen = _peer_udp_members(port, range(channels, channels + 1), 200_000)
        for m in screen[1:]:
            m.sends = False
        load = Load(SCREEN_PPS, SCREEN_BYTES, VIDEO_TYPE)
        results["screen"] = _phase(bench, "screen", screen, load, proc.pid, False)
        return results
    finally:
        proc.terminate()
        proc.wait(10)


def _udp_phases(
    bench: Bench, members: list[Member], pid: int, *, profile: bool = False
) -> dict[str, Any]:
    """The fixed-load and saturation phases; with `profile` (Relay's) and --profile, py-spy
    records the server during each."""
    seconds = bench.config.measure_s + bench.config.warm_s
    results: dict[str, Any] = {}
    for phase, rate in (("fixed", RATE_PPS), ("saturation", RATE_PPS * 4)):
        results[phase] = _phase(bench, phase, members, Load(rate), pid, profile, seconds)
    return results


def _phase(
    bench: Bench,
    phase: str,
    members: list[Member],
    load: Load,
    pid: int,
    profile: bool,
    seconds: float | None = None,
) -> dict[str, Any]:
    if seconds is None:  # the websocket and screen phases: shorter, to keep --full near 2 min
        seconds = min(bench.config.measure_s + bench.config.warm_s, PHASE_MAX_S)
    label = {"scenario": "voice", "phase": phase}
    profiler = bench.profiler(label, pid, seconds) if profile else None
    result = _run_load(members, load, seconds, pid)
    result["seconds"] = seconds
    if profiler is not None:
        result["profile"] = profile_result(profiler)
    return result


def voice(bench: Bench) -> list[Row]:
    """Scenario `voice` (module doc)."""
    channels = {"quick": 2, "short": 5, "full": 20}[bench.config.profile]
    # WebSocket media costs either server 1.3-1.8x UDP's CPU per packet (17-20 us): at 20
    # channels (90k packets/s) neither would keep up on 2 cores beside the load processes, so
    # --full's is 10 channels, about the core the UDP fixed load takes.
    ws_channels = {"quick": 2, "short": 5, "full": 10}[bench.config.profile]
    results: dict[str, dict[str, Any]] = {}
    for server, case in (("relay", _relay_case), ("asyncio_voice", _peer_case)):
        bench.log(f"voice: {server}, {channels} channels x {MEMBERS} members")
        try:
            results[server] = case(bench, channels, ws_channels)
        except Exception as e:
            bench.fail(f"voice {server}", e)
    bench.details["voice"] = results

    def values(phase: str, key: str) -> dict[str, float | None]:
        return {s: r.get(phase, {}).get(key) for s, r in results.items()}

    def rows(case: str, phase: str, count: str) -> list[Row]:
        return [
            Row("voice", case, count, "1/s", values(phase, "forwarded_per_s")),
            Row("voice", case, "p50 latency", "ms", values(phase, "p50_ms"), better="lower"),
            Row("voice", case, "p99 latency", "ms", values(phase, "p99_ms"), better="lower"),
            Row(
                "voice",
                case,
                "server CPU per forwarded packet",
                "µs",
                values(phase, "cpu_us_per_packet"),
                better="lower",
            ),
        ]

    sat = Row(
        "voice", f"{channels} ch x {MEMBERS}, 200 pps", "forwarded packets/s", "1/s",
        values("saturation", "forwarded_per_s"), bar="≥ 1× the asyncio+uvloop forwarder",  # noqa: RUF001
    )  # fmt: skip
    if (r := sat.ratio("asyncio_voice")) is not None:
        sat.bar_met = r >= 1.0
    ws_case = f"{ws_channels} ch x {MEMBERS}, 50 pps, WebSocket"
    screen = f"screen share, 1 x {SCREEN_PPS} pps x {SCREEN_BYTES:,} B to {MEMBERS - 1}"
    return [
        *rows(f"{channels} ch x {MEMBERS}, 50 pps", "fixed", "forwarded packets/s"),
        sat,
        *rows(ws_case, "websocket", "forwarded packets/s"),
        *rows(screen, "screen", "delivered packets/s"),
        Row("voice", screen, "loss", "%", values("screen", "loss_pct"), better="lower"),
    ]
