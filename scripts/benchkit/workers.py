"""The load-generator processes: WebSocket clients (`ws_worker`) and REST posters
(`http_worker`), each a plain `selectors` loop over raw non-blocking sockets.

No async framework and no WebSocket or HTTP library run here: per received frame the hot path
is a header walk and one `bytes.find` (`wire.scan`), so one process keeps up with several
hundred thousand deliveries a second. The harness reports these processes' CPU next to the
server's so a saturated generator shows.

A worker is driven over its pipe. It first opens its connections and answers `ready`; then:
- `run` {mode, t0, warm, end, ...}: from t0 its senders send (mode "closed": each keeps
  `window` messages in flight; "rate": a fixed rate; "none": no sending). Everything received
  is counted from the command on; the totals at `warm` and `end` give the rate of the measured
  window, and with `latency` every bench message stamped within it gives a latency sample. The
  answer comes at `end` (after the last answers, for the poster).
- `collect` {expected, timeout_s}: keep reading until every connection has `expected` bench
  messages (or the timeout), then answer with the counts and samples.
- `stop`: close everything and exit.

Error handling: anything unexpected is sent back as {"error": ...} and the process exits; the
harness raises it.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import time
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any

from benchkit import wire

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

RECV_BYTES = 256 * 1024
MAX_OPENING = 64  # connections in their handshake at once (servers' accept backlogs are small)
READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
IDLE_RECONNECT_NS = 2_000_000_000  # hypercorn drops idle keep-alive connections after 5 s

CONNECTING, UPGRADING, HELLO, IDENTIFYING, OPEN, CLOSED = range(6)


def _guard(pipe: Connection, body: Any) -> None:
    from benchkit.procs import raise_nofile_limit

    raise_nofile_limit()
    try:
        body()
    except (KeyboardInterrupt, BrokenPipeError, EOFError):
        pass
    except Exception:
        with contextlib.suppress(OSError):
            pipe.send({"error": traceback.format_exc()})


def ws_worker(pipe: Connection, job: dict[str, Any]) -> None:
    """Entry point: WebSocket subscribers, the first `senders` of which also send."""
    _guard(pipe, lambda: WsWorker(pipe, job).serve())


def http_worker(pipe: Connection, job: dict[str, Any]) -> None:
    """Entry point: REST posters (raw HTTP/1.1 keep-alive connections)."""
    _guard(pipe, lambda: HttpWorker(pipe, job).serve())


class Phase:
    """What one `run` measures: counts at the marks, latency samples, sends."""

    def __init__(self, cmd: dict[str, Any]) -> None:
        self.mode: str = cmd.get("mode", "none")
        self.t0: int = cmd["t0"]
        self.warm: int = cmd["warm"]
        self.end: int = cmd["end"]
        self.latency: bool = cmd.get("latency", False)
        self.window: int = cmd.get("window", 1)
        rate = cmd.get("rate_per_sender", 0.0)
        self.interval_ns = int(1e9 / rate) if rate else 0
        self.marks = [self.warm, self.end]
        self.mark_counts: list[int] = []
        self.samples_us: list[int] = []
        self.started = False
        self.answered = False
        self.sent = 0
        self.late_max_ns = 0

    def tick_marks(self, now: int, total: int) -> None:
        while len(self.mark_counts) < len(self.marks) and now >= self.marks[len(self.mark_counts)]:
            self.mark_counts.append(total)


class WsConn:
    __slots__ = (
        "buf",
        "close_code",
        "count",
        "due_ns",
        "inflight",
        "out",
        "sender",
        "seq",
        "sock",
        "state",
        "token",
    )

    def __init__(self, token: str | None, sender: int | None) -> None:
        self.sock: socket.socket | None = None
        self.state = CONNECTING
        self.buf = b""
        self.out = b""
        self.token = token
        self.sender = sender  # global sender number, or None for a pure subscriber
        self.count = 0  # bench messages received since the last `run`
        self.inflight = 0
        self.seq = 0
        self.due_ns = 0
        self.close_code: int | None = None


class WsWorker:
    def __init__(self, pipe: Connection, job: dict[str, Any]) -> None:
        self.pipe = pipe
        self.host: str = job["host"]
        self.port: int = job["port"]
        self.path: str = job["path"]
        tokens: list[str] | None = job.get("tokens")
        count: int = len(tokens) if tokens is not None else job["count"]
        senders: int = job.get("senders", 0)
        base: int = job.get("sender_base", 0)
        self.message_bytes: int = job.get("message_bytes", 0)
        self.conns = [
            WsConn(tokens[i] if tokens else None, base + i if i < senders else None)
            for i in range(count)
        ]
        self.senders = [c for c in self.conns if c.sender is not None]
        self.sel = selectors.DefaultSelector()
        self.sel.register(pipe.fileno(), READ, None)
        self.phase: Phase | None = None
        self.total = 0
        self.bytes = 0
        self.collect: tuple[int, int] | None = None  # (expected, deadline)
        self.stopping = False
        self.opening: deque[WsConn] = deque(self.conns)
        self.in_handshake = 0
        self.failed: dict[str, int] = {}
        self.ready_sent = False

    # -- the loop ------------------------------------------------------------------------------

    def serve(self) -> None:
        self._open_more()
        while not self.stopping:
            timeout = self._timeout()
            for key, mask in self.sel.select(timeout):
                conn: WsConn | None = key.data
                if conn is None:
                    self._command(self.pipe.recv())
                    continue
                if mask & WRITE:
                    self._writable(conn)
                if mask & READ and conn.state != CLOSED:
                    self._readable(conn)
            self._tick(time.monotonic_ns())
        goodbye = wire.client_frame(b"\x03\xe8", wire.OP_CLOSE)  # 1000: peers log no error
        for conn in self.conns:
            if conn.sock is not None:
                if conn.state == OPEN and not conn.out:
                    with contextlib.suppress(OSError):
                        conn.sock.send(goodbye)
                conn.sock.close()

    def _timeout(self) -> float:
        phase = self.phase
        if phase is None or (phase.answered and self.collect is None):
            return 0.5
        now = time.monotonic_ns()
        nxt = now + 50_000_000
        if not phase.started:
            nxt = min(nxt, phase.t0)
        if len(phase.mark_counts) < len(phase.marks):
            nxt = min(nxt, phase.marks[len(phase.mark_counts)])
        if phase.mode == "rate" and phase.started:
            for conn in self.senders:
                if conn.state == OPEN and conn.due_ns < phase.end:
                    nxt = min(nxt, conn.due_ns)
        return max(0.0, (nxt - now) / 1e9)

    def _command(self, cmd: dict[str, Any]) -> None:
        match cmd["cmd"]:
            case "run":
                self.phase = Phase(cmd)
                self.total = self.bytes = 0
                for conn in self.conns:
                    conn.count = conn.inflight = 0
            case "collect":
                deadline = time.monotonic_ns() + int(cmd["timeout_s"] * 1e9)
                self.collect = (cmd["expected"], deadline)
            case "stop":
                self.stopping = True
            case other:
                raise ValueError(f"unknown command {other!r}")

    def _tick(self, now: int) -> None:
        phase = self.phase
        if phase is None:
            return
        if not phase.started and now >= phase.t0:
            phase.started = True
            for i, conn in enumerate(self.senders):
                if phase.mode == "closed":
                    for _ in range(phase.window):
                        self._send_bench(conn, now)
                elif phase.mode == "rate":  # spread the senders over one interval
                    conn.due_ns = phase.t0 + i * phase.interval_ns // max(1, len(self.senders))
        if phase.started and phase.mode == "rate":
            for conn in self.senders:
                while conn.due_ns <= now and conn.due_ns < phase.end and conn.state == OPEN:
                    phase.late_max_ns = max(phase.late_max_ns, now - conn.due_ns)
                    self._send_bench(conn, time.monotonic_ns())
                    conn.due_ns += phase.interval_ns
        phase.tick_marks(now, self.total)
        if not phase.answered and len(phase.mark_counts) == len(phase.marks):
            phase.answered = True
            self.pipe.send({"sent": phase.sent, "late_max_us": phase.late_max_ns // 1000})
        if self.collect is not None:
            expected, deadline = self.collect
            live = [c for c in self.conns if c.state == OPEN]
            if now >= deadline or all(c.count >= expected for c in live):
                self.collect = None
                self.pipe.send(self._report(expected))

    def _report(self, expected: int) -> dict[str, Any]:
        phase = self.phase
        assert phase is not None
        live = [c.count for c in self.conns if c.state == OPEN]
        closed: dict[str, int] = {}
        for c in self.conns:
            if c.state == CLOSED:
                key = str(c.close_code)
                closed[key] = closed.get(key, 0) + 1
        return {
            "counts_at_marks": phase.mark_counts,
            "total": self.total,
            "bytes": self.bytes,
            "expected_per_conn": expected,
            "min_per_conn": min(live, default=0),
            "max_per_conn": max(live, default=0),
            "missing": sum(max(0, expected - n) for n in live),
            "closed": closed,
            "samples_us": phase.samples_us,
            "sent": phase.sent,
        }

    # -- opening connections -------------------------------------------------------------------

    def _open_more(self) -> None:
        while self.opening and self.in_handshake < MAX_OPENING:
            conn = self.opening.popleft()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            err = sock.connect_ex((self.host, self.port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                self._failed(conn, f"connect: {errno.errorcode.get(err, err)}")
                continue
            conn.sock = sock
            conn.state = CONNECTING
            self.in_handshake += 1
            self.sel.register(sock, WRITE, conn)
        if not self.opening and self.in_handshake == 0 and not self.ready_sent:
            self.ready_sent = True
            opened = sum(1 for c in self.conns if c.state == OPEN)
            self.pipe.send({"ready": True, "open": opened, "failed": self.failed})

    def _failed(self, conn: WsConn, why: str) -> None:
        conn.state = CLOSED
        self.failed[why] = self.failed.get(why, 0) + 1

    def _handshake_done(self, conn: WsConn, ok: bool, why: str = "") -> None:
        self.in_handshake -= 1
        if not ok:
            self._close(conn)
            self._failed(conn, why)
        self._open_more()

    def _close(self, conn: WsConn) -> None:
        if conn.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn.sock)
            conn.sock.close()
            conn.sock = None
        conn.state = CLOSED

    # -- I/O -----------------------------------------------------------------------------------

    def _writable(self, conn: WsConn) -> None:
        sock = conn.sock
        assert sock is not None
        if conn.state == CONNECTING:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._handshake_done(conn, False, f"connect: {errno.errorcode.get(err, err)}")
                return
            conn.state = UPGRADING
            self.sel.modify(sock, READ, conn)
            self._write(conn, wire.upgrade_request(self.host, self.port, self.path))
            return
        try:
            n = sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError:
            self._lost(conn, 1006)
            return
        conn.out = conn.out[n:]
        if not conn.out:
            self.sel.modify(sock, READ, conn)

    def _write(self, conn: WsConn, data: bytes) -> None:
        sock = conn.sock
        if sock is None:
            return
        if conn.out:
            conn.out += data
            return
        try:
            n = sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._lost(conn, 1006)
            return
        if n < len(data):
            conn.out = data[n:]
            self.sel.modify(sock, READ | WRITE, conn)

    def _lost(self, conn: WsConn, code: int) -> None:
        if conn.state < OPEN:
            self._handshake_done(conn, False, f"closed during handshake ({code})")
            return
        conn.close_code = code
        self._close(conn)

    def _readable(self, conn: WsConn) -> None:
        sock = conn.sock
        assert sock is not None
        try:
            chunk = sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._lost(conn, 1006)
            return
        data = conn.buf + chunk if conn.buf else chunk
        if conn.state != OPEN:
            data = self._handshake(conn, data)
            if conn.state != OPEN:
                conn.buf = data
                return
        phase = self.phase
        want = (phase is not None and phase.latency) or conn.sender is not None
        stamps: list[bytes] | None = [] if want else None
        pos, count, controls = wire.scan(data, 0, stamps)
        conn.buf = data[pos:]
        if count:
            conn.count += count
            self.total += count
            self.bytes += pos
            if stamps:
                self._stamps(conn, stamps, time.monotonic_ns())
        if controls:
            for opcode, payload in controls:
                if opcode == wire.OP_CLOSE:
                    self._lost(conn, wire.close_code(payload))
                    return
                if opcode == wire.OP_PING:
                    self._write(conn, wire.client_frame(payload, wire.OP_PONG))

    def _stamps(self, conn: WsConn, stamps: list[bytes], now: int) -> None:
        phase = self.phase
        if phase is None:
            return
        for stamp in stamps:
            sent_ns, sender, _ = wire.parse_stamp(stamp)
            if phase.latency and phase.warm <= sent_ns < phase.end:
                phase.samples_us.append((now - sent_ns) // 1000)
            if sender == conn.sender and phase.mode == "closed":
                conn.inflight -= 1
                if now < phase.end:
                    self._send_bench(conn, now)

    def _handshake(self, conn: WsConn, data: bytes) -> bytes:
        """Advance a connection's handshake with `data`; returns the bytes not yet used."""
        if conn.state == UPGRADING:
            head = wire.split_upgrade_response(data)
            if head is None:
                return data
            accepted, data = head
            if not accepted:
                self._handshake_done(conn, False, "upgrade refused")
                return b""
            if conn.token is None:
                conn.state = OPEN
                self._handshake_done(conn, True)
                return data
            conn.state = HELLO
        pos, frames = wire.data_frames(data, 0)
        for i, (opcode, payload) in enumerate(frames):
            if opcode == wire.OP_CLOSE:
                self._handshake_done(conn, False, f"closed ({wire.close_code(payload)})")
                return b""
            if conn.state == HELLO:
                identify = b'{"op":2,"d":{"token":"' + (conn.token or "").encode() + b'"}}'
                self._write(conn, wire.client_frame(identify))
                conn.state = IDENTIFYING
            elif conn.state == IDENTIFYING and b'"t":"READY"' in payload:
                conn.state = OPEN
                self._handshake_done(conn, True)
                # Whatever followed READY belongs to the fast path: hand back its bytes.
                rest = data[pos:]
                for later in reversed(frames[i + 1 :]):
                    rest = _server_frame(*later) + rest
                return rest
        return data[pos:]

    def _send_bench(self, conn: WsConn, now: int) -> None:
        phase = self.phase
        assert phase is not None
        assert conn.sender is not None
        if conn.state != OPEN:
            return
        conn.seq += 1
        conn.inflight += 1
        phase.sent += 1
        text = wire.bench_text(now, conn.sender, conn.seq)
        self._write(conn, wire.client_frame(peer_message(text, self.message_bytes)))


def _server_frame(opcode: int, payload: bytes) -> bytes:
    """Re-frame a payload the handshake parsed too far (unmasked, as a server sends it)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def peer_message(text: str, size: int) -> bytes:
    """What a peer's sender sends: a JSON envelope shaped like Relay's MESSAGE_CREATE dispatch
    and padded to `size` bytes, so every server moves about the same bytes per delivery."""
    head = '{"op":0,"s":null,"t":"MESSAGE_CREATE","d":{"content":"' + text + '","pad":"'
    pad = max(0, size - len(head) - 3)
    return (head + "x" * pad + '"}}').encode()


class HttpConn:
    __slots__ = ("buf", "busy", "last_ns", "sender", "sent_ns", "sock")

    def __init__(self, sender: int) -> None:
        self.sock: socket.socket | None = None
        self.buf = b""
        self.busy = False
        self.sent_ns = 0
        self.last_ns = 0
        self.sender = sender


class HttpWorker:
    """Posts bench messages over REST (or GETs a path, for a baseline): `per_sender`
    keep-alive connections per token."""

    def __init__(self, pipe: Connection, job: dict[str, Any]) -> None:
        self.pipe = pipe
        self.host: str = job["host"]
        self.port: int = job["port"]
        self.path: str = job["path"]
        self.tokens: list[str] = job["tokens"]
        self.base: int = job.get("sender_base", 0)
        per_sender: int = job.get("per_sender", 1)
        self.conns = [HttpConn(s) for s in range(len(self.tokens)) for _ in range(per_sender)]
        self.sel = selectors.DefaultSelector()
        self.sel.register(pipe.fileno(), READ, None)
        self.stopping = False
        self.seq = [0] * len(self.tokens)
        # GET (a framework baseline: no body, 200) or POST a bench message (201).
        self.method: str = job.get("method", "POST")
        self.ok_status = 201 if self.method == "POST" else 200
        self.prefix = [
            (
                f"{self.method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {token}\r\n"
            ).encode()
            for token in self.tokens
        ]

    def serve(self) -> None:
        self.pipe.send({"ready": True, "open": len(self.conns), "failed": {}})
        while not self.stopping:
            for key, _ in self.sel.select(0.5):
                if key.data is None:
                    self._command(self.pipe.recv())

    def _command(self, cmd: dict[str, Any]) -> None:
        match cmd["cmd"]:
            case "run":
                self.pipe.send(self._run(Phase(cmd)))
            case "stop":
                self.stopping = True
            case other:
                raise ValueError(f"unknown command {other!r}")

    def _connect(self, conn: HttpConn) -> None:
        if conn.sock is not None:
            self.sel.unregister(conn.sock)
            conn.sock.close()
        sock = socket.create_connection((self.host, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn.sock, conn.buf, conn.busy = sock, b"", False
        conn.last_ns = time.monotonic_ns()
        self.sel.register(sock, READ, conn)

    def _post(self, conn: HttpConn, phase: Phase, now: int) -> None:
        if conn.sock is None or now - conn.last_ns > IDLE_RECONNECT_NS:
            self._connect(conn)
        assert conn.sock is not None
        sender = conn.sender
        self.seq[sender] += 1
        if self.method == "POST":
            text = wire.bench_text(now, self.base + sender, self.seq[sender])
            body = b'{"content":"' + text.encode() + b'"}'
            head = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            request = self.prefix[sender] + head + body
        else:
            request = self.prefix[sender] + b"\r\n"
        conn.sock.setblocking(True)  # a request is small: one blocking send, then back
        conn.sock.sendall(request)
        conn.sock.setblocking(False)
        conn.busy, conn.sent_ns = True, now
        phase.sent += 1

    def _run(self, phase: Phase) -> dict[str, Any]:
        acked = acked_in_window = 0
        errors: dict[str, int] = {}
        per_sender: dict[int, list[HttpConn]] = {}
        for conn in self.conns:
            per_sender.setdefault(conn.sender, []).append(conn)
            if conn.sock is None:
                self._connect(conn)
        due = [
            phase.t0 + s * phase.interval_ns // max(1, len(per_sender))
            for s in range(len(per_sender))
        ]
        inflight = 0
        while True:
            now = time.monotonic_ns()
            if now >= phase.t0 and now < phase.end:
                if phase.mode == "closed":
                    for conn in self.conns:
                        if not conn.busy:
                            self._post(conn, phase, now)
                            inflight += 1
                elif phase.mode == "rate":
                    for s, conns in per_sender.items():
                        if due[s] > now or due[s] >= phase.end:
                            continue
                        free = [c for c in conns if not c.busy]
                        if not free:
                            continue  # late: sent as soon as an answer frees a connection
                        conn = max(free, key=lambda c: c.last_ns)  # keep few connections warm
                        phase.late_max_ns = max(phase.late_max_ns, now - due[s])
                        self._post(conn, phase, time.monotonic_ns())
                        inflight += 1
                        due[s] += phase.interval_ns
            elif now >= phase.end and inflight == 0:
                break
            if now >= phase.end + 30_000_000_000:
                errors["unanswered"] = inflight
                break
            wait = 0.05
            if now < phase.t0:
                wait = (phase.t0 - now) / 1e9
            elif phase.mode == "rate" and now < phase.end:
                wait = max(0.0, min(wait, (min(due) - now) / 1e9))
            for key, _ in self.sel.select(wait):
                conn = key.data
                if conn is None:
                    self._command(self.pipe.recv())
                    continue
                done_ns = time.monotonic_ns()
                for status in self._answers(conn):
                    inflight -= 1
                    conn.busy = False
                    conn.last_ns = done_ns
                    if status == self.ok_status:
                        acked += 1
                        if phase.warm <= done_ns < phase.end:
                            acked_in_window += 1
                        if phase.warm <= conn.sent_ns < phase.end:
                            phase.samples_us.append((done_ns - conn.sent_ns) // 1000)
                    else:
                        errors[str(status)] = errors.get(str(status), 0) + 1
        return {
            "sent": phase.sent,
            "acked": acked,
            "acked_in_window": acked_in_window,
            "errors": errors,
            "samples_us": phase.samples_us,
            "late_max_us": phase.late_max_ns // 1000,
        }

    def _answers(self, conn: HttpConn) -> list[int]:
        """Statuses of the responses completed by what the socket has; -1 if it closed."""
        sock = conn.sock
        assert sock is not None
        try:
            chunk = sock.recv(RECV_BYTES)
        except BlockingIOError:
            return []
        except OSError:
            chunk = b""
        if not chunk:
            self.sel.unregister(sock)
            sock.close()
            conn.sock = None
            return [-1] if conn.busy else []
        conn.buf += chunk
        statuses = []
        while True:
            answer = wire.split_response(conn.buf)
            if answer is None:
                break
            status, _, conn.buf = answer
            statuses.append(status)
        return statuses


# -- the byte relay (relayd frames over TCP) ---------------------------------------------------

RELAYD_BATCH_BYTES = 256 * 1024  # a sender writes pre-built batches of frames this big
RELAYD_DRAIN_QUIET_NS = 300_000_000  # after `end`, receivers read until this long without data
RELAYD_DRAIN_MAX_NS = 10_000_000_000


def relayd_login(client_id: bytes) -> bytes:
    return b"RELY\x01\x01" + bytes((len(client_id),)) + client_id


def relayd_transfer(sender: bytes, to: bytes, payload: bytes) -> bytes:
    head = b"RELY\x01\x09" + bytes((len(sender),)) + sender + bytes((len(to),)) + to
    return head + len(payload).to_bytes(4, "big") + payload


def relayd_worker(pipe: Connection, job: dict[str, Any]) -> None:
    """Entry point: byte-relay clients, all senders or all receivers (job["role"])."""
    _guard(pipe, lambda: RelaydWorker(pipe, job).serve())


class RelaydWorker:
    """Byte-relay clients over raw sockets. job: host, port, role ("sender" | "receiver"),
    pairs [[own id, peer id], ...] (str), size (payload bytes).

    A receiver logs in, sends itself an empty transfer and waits for it to come back (then its
    login is in effect), and from a `run` on counts the bytes that arrive, with the totals at
    `warm` and `end`; after `end` it drains until the stream goes quiet and answers. A sender
    logs in and, from t0 to end, keeps writing the same batch of frames to its receiver; it
    answers at `end` with the bytes it sent per connection.
    """

    def __init__(self, pipe: Connection, job: dict[str, Any]) -> None:
        self.pipe = pipe
        self.job = job
        self.sending = job["role"] == "sender"
        self.socks: list[socket.socket] = []

    def serve(self) -> None:
        job = self.job
        try:
            for own_text, _ in job["pairs"]:
                own = own_text.encode()
                sock = socket.create_connection((job["host"], job["port"]), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.sending:
                    sock.sendall(relayd_login(own))
                else:
                    confirm = relayd_transfer(own, own, b"")
                    sock.sendall(relayd_login(own) + confirm)
                    got = 0
                    while got < len(confirm):
                        data = sock.recv(RECV_BYTES)
                        if not data:
                            raise ConnectionError("the server closed a receiver at login")
                        got += len(data)
                sock.setblocking(False)
                self.socks.append(sock)
            self.pipe.send({"ready": True, "open": len(self.socks), "failed": {}})
            while True:
                cmd = self.pipe.recv()
                if cmd["cmd"] == "stop":
                    return
                if cmd["cmd"] == "run":
                    self.pipe.send(self._send(cmd) if self.sending else self._receive(cmd))
        finally:
            for sock in self.socks:
                sock.close()

    def _send(self, cmd: dict[str, Any]) -> dict[str, Any]:
        size = self.job["size"]
        batches = []
        for own, to in self.job["pairs"]:
            frame = relayd_transfer(own.encode(), to.encode(), b"\xa5" * size)
            batches.append(memoryview(frame * max(1, RELAYD_BATCH_BYTES // len(frame))))
        offsets = [0] * len(self.socks)
        sent = [0] * len(self.socks)
        sel = selectors.DefaultSelector()
        for i, sock in enumerate(self.socks):
            sel.register(sock, WRITE, i)
        _wait_ns(cmd["t0"])
        end = cmd["end"]
        try:
            while (now := time.monotonic_ns()) < end:
                for key, _ in sel.select(min(0.05, (end - now) / 1e9)):
                    i = key.data
                    try:
                        n = self.socks[i].send(batches[i][offsets[i] :])
                    except BlockingIOError:
                        continue
                    sent[i] += n
                    offsets[i] = (offsets[i] + n) % len(batches[i])
        finally:
            sel.close()
        return {"sent_bytes": sent}

    def _receive(self, cmd: dict[str, Any]) -> dict[str, Any]:
        buf = bytearray(RECV_BYTES)
        got = [0] * len(self.socks)
        closed = 0
        sel = selectors.DefaultSelector()
        for i, sock in enumerate(self.socks):
            sel.register(sock, READ, i)
        warm, end = cmd["warm"], cmd["end"]
        marks: list[int] = []
        last_data = time.monotonic_ns()
        try:
            while True:
                now = time.monotonic_ns()
                if not marks and now >= warm:
                    marks.append(sum(got))
                if len(marks) == 1 and now >= end:
                    marks.append(sum(got))
                if len(marks) == 2 and (
                    now - last_data >= RELAYD_DRAIN_QUIET_NS or now - end >= RELAYD_DRAIN_MAX_NS
                ):
                    break
                next_mark = warm if not marks else end if len(marks) == 1 else now + 50_000_000
                timeout = min(0.05, max(0.0, (next_mark - now) / 1e9))
                for key, _ in sel.select(timeout):
                    i = key.data
                    try:
                        n = self.socks[i].recv_into(buf)
                    except BlockingIOError:
                        continue
                    if not n:
                        closed += 1
                        sel.unregister(self.socks[i])
                        continue
                    got[i] += n
                    last_data = time.monotonic_ns()
        finally:
            sel.close()
        return {"marks": marks, "received_bytes": got, "closed": closed}


def _wait_ns(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)
