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
  answer comes at `end` (after the last answers, for the poster and for gateway senders).
  Relay's gateway senders (job["channel_id"]) post with MESSAGE_SEND (op 12) over their own
  sessions, and their acknowledgement is MESSAGE_SEND_ACK (op 13, one per send, in send order
  per connection): their answer has the poster's keys (acked, acked_in_window, errors,
  samples_us of the ack latency). Other senders' acknowledgement is their own copy coming back.
  Relay's sessions IDENTIFY with job["intents"] when given (absent: every event); with
  job["receives_messages"] false their intents leave the bench messages out, and `collect`
  expects none of them.
- `collect` {expected, timeout_s}: keep reading until every connection has `expected` bench
  messages (or the timeout), then answer with the counts and samples.
- `stop`: close everything and exit.

Error handling: anything unexpected is sent back as {"error": ...} and the process exits; the
harness raises it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import struct
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
        # send time -> [first, last] latency of that message among this worker's receivers
        self.spread_us: dict[int, list[int]] = {}
        self.ack_samples_us: list[int] = []  # gateway senders: send -> MESSAGE_SEND_ACK
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
        "pending",
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
        self.pending: deque[int] = deque()  # gateway sends: send times of unacknowledged sends


# MESSAGE_SEND_ACK frames as Relay encodes them (JSON): the nonce comes first, then "id" or
# "error". Bench content never holds '{', so these bytes start nothing else.
ACK_HEAD = b'{"op":13,"d":{"nonce":"'
ACK_ERROR = b',"error"'
ACK_WAIT_NS = 30_000_000_000  # after `end`, gateway senders wait this long for their acks


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
        # Relay's gateway senders post to this channel with op 12 (see the module docstring).
        self.channel_id: str | None = job.get("channel_id")
        self.send_head = b'{"op":12,"d":{"channel_id":"%s","content":"' % (
            (self.channel_id or "").encode()
        )
        self.acked = self.acked_in_window = 0
        self.ack_errors: dict[str, int] = {}
        intents: int | None = job.get("intents")
        self.identify_tail = b"}}" if intents is None else b',"intents":%d}}' % intents
        self.receives_messages: bool = job.get("receives_messages", True)
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
                self.acked = self.acked_in_window = 0
                self.ack_errors = {}
                for conn in self.conns:
                    conn.count = conn.inflight = 0
                    conn.pending.clear()
            case "collect":
                deadline = time.monotonic_ns() + int(cmd["timeout_s"] * 1e9)
                expected = cmd["expected"] if self.receives_messages else 0
                self.collect = (expected, deadline)
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
        if (
            not phase.answered
            and len(phase.mark_counts) == len(phase.marks)
            and self._acks_settled(phase, now)
        ):
            phase.answered = True
            answer: dict[str, Any] = {"sent": phase.sent, "late_max_us": phase.late_max_ns // 1000}
            if self.channel_id is not None:
                unanswered = sum(len(c.pending) for c in self.senders)
                errors = dict(self.ack_errors, **({"unanswered": unanswered} if unanswered else {}))
                answer.update(
                    acked=self.acked,
                    acked_in_window=self.acked_in_window,
                    errors=errors,
                    samples_us=phase.ack_samples_us,
                )
            self.pipe.send(answer)
        if self.collect is not None:
            expected, deadline = self.collect
            live = [c for c in self.conns if c.state == OPEN]
            if now >= deadline or all(c.count >= expected for c in live):
                self.collect = None
                self.pipe.send(self._report(expected))

    def _acks_settled(self, phase: Phase, now: int) -> bool:
        """Gateway senders answer once every send was acknowledged (or after ACK_WAIT_NS)."""
        if self.channel_id is None or now >= phase.end + ACK_WAIT_NS:
            return True
        return all(not c.pending for c in self.senders if c.state == OPEN)

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
            "spread_us": phase.spread_us,
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
        if conn.pending:
            self._acks(conn, data, pos)
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
                us = (now - sent_ns) // 1000
                phase.samples_us.append(us)
                seen = phase.spread_us.get(sent_ns)
                if seen is None:
                    phase.spread_us[sent_ns] = [us, us]
                else:
                    seen[0], seen[1] = min(seen[0], us), max(seen[1], us)
            if sender == conn.sender and phase.mode == "closed" and self.channel_id is None:
                conn.inflight -= 1
                if now < phase.end:
                    self._send_bench(conn, now)

    def _acks(self, conn: WsConn, data: bytes, end: int) -> None:
        """Take the MESSAGE_SEND_ACKs among the whole frames in data[:end] (in send order)."""
        phase = self.phase
        at = data.find(ACK_HEAD, 0, end)
        while at >= 0 and conn.pending:
            nonce_end = data.index(b'"', at + len(ACK_HEAD))
            now = time.monotonic_ns()
            sent_ns = conn.pending.popleft()
            conn.inflight -= 1
            if data.startswith(ACK_ERROR, nonce_end + 1):
                code_at = data.find(b'"code":"', nonce_end) + 8
                code = data[code_at : data.index(b'"', code_at)].decode()
                self.ack_errors[code] = self.ack_errors.get(code, 0) + 1
            elif phase is not None:
                self.acked += 1
                if phase.warm <= now < phase.end:
                    self.acked_in_window += 1
                if phase.warm <= sent_ns < phase.end:
                    phase.ack_samples_us.append((now - sent_ns) // 1000)
            if phase is not None and phase.mode == "closed" and now < phase.end:
                self._send_bench(conn, now)
            at = data.find(ACK_HEAD, nonce_end, end)

    def _upgraded(self, conn: WsConn, data: bytes) -> bytes | None:
        """The bytes after the server's upgrade response, or None while it is incomplete. A
        refused upgrade ends the handshake (the connection is then CLOSED)."""
        head = wire.split_upgrade_response(data)
        if head is None:
            return None
        accepted, rest = head
        if not accepted:
            self._handshake_done(conn, False, "upgrade refused")
        return rest

    def _handshake(self, conn: WsConn, data: bytes) -> bytes:
        """Advance a connection's handshake with `data`; returns the bytes not yet used."""
        if conn.state == UPGRADING:
            upgraded = self._upgraded(conn, data)
            if upgraded is None:
                return data
            data = upgraded
            if conn.state == CLOSED:  # the upgrade was refused
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
                token = (conn.token or "").encode()
                identify = b'{"op":2,"d":{"token":"' + token + b'"' + self.identify_tail
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

    def _next_bench_text(self, conn: WsConn, now: int) -> str | None:
        """Count one more bench message from `conn` and return its stamped text (None: the
        connection is not open, nothing is sent)."""
        phase = self.phase
        assert phase is not None
        assert conn.sender is not None
        if conn.state != OPEN:
            return None
        conn.seq += 1
        conn.inflight += 1
        phase.sent += 1
        return wire.bench_text(now, conn.sender, conn.seq)

    def _send_bench(self, conn: WsConn, now: int) -> None:
        text = self._next_bench_text(conn, now)
        if text is None:
            return
        if self.channel_id is not None:  # Relay: MESSAGE_SEND over the sender's own session
            conn.pending.append(now)
            body = self.send_head + text.encode() + b'","nonce":"%d"}}' % conn.seq
            self._write(conn, wire.client_frame(body))
            return
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
RELAYD_DRAIN_MAX_NS = 10_000_000_000  # job["drain_max_s"] overrides it


def relayd_login(client_id: bytes) -> bytes:
    return b"RELY\x01\x01" + bytes((len(client_id),)) + client_id


def relayd_transfer(sender: bytes, to: bytes, payload: bytes) -> bytes:
    head = b"RELY\x01\x09" + bytes((len(sender),)) + sender + bytes((len(to),)) + to
    return head + len(payload).to_bytes(4, "big") + payload


def relayd_ws(frame: bytes) -> bytes:
    """One relayd frame as the client's binary WebSocket message (masked by hand)."""
    return wire.client_frame(frame, wire.OP_BINARY)


def ws_header_len(payload_len: int, masked: bool) -> int:
    """Bytes of a WebSocket frame header (RFC 6455 5.2) for a payload this long."""
    base = 2 if payload_len < 126 else 4 if payload_len < 65536 else 10
    return base + (4 if masked else 0)


def relayd_received_len(frame_len: int, ws: bool) -> int:
    """Bytes a receiver gets per relayd frame: the frame, or Relay's binary message of it."""
    return frame_len + (ws_header_len(frame_len, masked=False) if ws else 0)


def ws_close_code(tail: bytes) -> int | None:
    """The code of the server close frame that ends `tail`, if it ends with one (the end of a
    stream that closed); 1005 for a close without a code, None if there is none."""
    for at in range(len(tail) - 2, -1, -1):
        if tail[at] == 0x88 and tail[at + 1] == len(tail) - at - 2:
            return wire.close_code(tail[at + 2 :])
    return None


def relayd_worker(pipe: Connection, job: dict[str, Any]) -> None:
    """Entry point: byte-relay clients, all senders or all receivers (job["role"])."""
    _guard(pipe, lambda: RelaydWorker(pipe, job).serve())


class RelaydWorker:
    """Byte-relay clients over raw sockets. job: host, port, role ("sender" | "receiver"),
    pairs [[own id, peer id], ...] (str), size (payload bytes), and ws_path (optional: speak
    to Relay's `/v1/relay` WebSocket endpoint there, each relayd frame in one binary message,
    masked by hand; see `relayd_ws`).

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
        self.ws_path: str | None = job.get("ws_path")

    def serve(self) -> None:
        job = self.job
        wrap = relayd_ws if self.ws_path else bytes
        try:
            for own_text, _ in job["pairs"]:
                own = own_text.encode()
                sock = socket.create_connection((job["host"], job["port"]), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                early = self._upgrade(sock) if self.ws_path else b""
                if self.sending:
                    sock.sendall(wrap(relayd_login(own)))
                else:
                    confirm = relayd_transfer(own, own, b"")
                    sock.sendall(wrap(relayd_login(own)) + wrap(confirm))
                    got = len(early)
                    while got < relayd_received_len(len(confirm), bool(self.ws_path)):
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
                if self.ws_path:
                    # Reset, so the kernel drops what is still buffered toward the server:
                    # a backlog the server would otherwise go on relaying into the next case.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def _send(self, cmd: dict[str, Any]) -> dict[str, Any]:
        size = self.job["size"]
        batches = []
        for own, to in self.job["pairs"]:
            frame = relayd_transfer(own.encode(), to.encode(), b"\xa5" * size)
            if self.ws_path:
                frame = relayd_ws(frame)  # masked once: the batch repeats the same bytes
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
        close_codes: dict[str, int] = {}
        tails = [b""] * len(self.socks)  # WebSocket: the end of the stream, for a close frame
        sel = selectors.DefaultSelector()
        for i, sock in enumerate(self.socks):
            sel.register(sock, READ, i)
        warm, end = cmd["warm"], cmd["end"]
        drain_max_ns = int(self.job.get("drain_max_s", RELAYD_DRAIN_MAX_NS / 1e9) * 1e9)
        marks: list[int] = []
        drained = False
        last_data = time.monotonic_ns()
        try:
            while True:
                now = time.monotonic_ns()
                if not marks and now >= warm:
                    marks.append(sum(got))
                if len(marks) == 1 and now >= end:
                    marks.append(sum(got))
                if len(marks) == 2 and (
                    now - last_data >= RELAYD_DRAIN_QUIET_NS or now - end >= drain_max_ns
                ):
                    drained = now - last_data >= RELAYD_DRAIN_QUIET_NS
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
                        if self.ws_path:
                            code = str(ws_close_code(tails[i]))
                            close_codes[code] = close_codes.get(code, 0) + 1
                        sel.unregister(self.socks[i])
                        continue
                    got[i] += n
                    if self.ws_path:
                        tails[i] = (tails[i] + bytes(buf[max(0, n - 128) : n]))[-128:]
                    last_data = time.monotonic_ns()
        finally:
            sel.close()
        return {
            "marks": marks,
            "received_bytes": got,
            "closed": closed,
            "close_codes": close_codes,
            "drained": drained,  # the stream went quiet (else the drain's time limit ended it)
            "drain_s": round((last_data - end) / 1e9, 2),
        }

    def _upgrade(self, sock: socket.socket) -> bytes:
        """The WebSocket handshake on a blocking socket; returns what came after the 101."""
        assert self.ws_path is not None
        sock.sendall(wire.upgrade_request(self.job["host"], self.job["port"], self.ws_path))
        data = b""
        while (head := wire.split_upgrade_response(data)) is None:
            chunk = sock.recv(RECV_BYTES)
            if not chunk:
                raise ConnectionError(f"the server closed during the upgrade to {self.ws_path}")
            data += chunk
        accepted, rest = head
        if not accepted:
            raise ConnectionError(f"upgrade to {self.ws_path} refused: {data[:200]!r}")
        return rest


def _wait_ns(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


# -- app rooms (scenario `rooms`) --------------------------------------------------------------

ROOM_BROADCAST, ROOM_TARGET = 1, 2  # header: [u8 kind][u32 client id] (relay.protocol.rooms)


def room_worker(pipe: Connection, job: dict[str, Any]) -> None:
    """Entry point: clients of one broadcast room (a Relay app room, or a peer's one room)."""
    _guard(pipe, lambda: RoomWorker(pipe, job).serve())


class RoomWorker(WsWorker):
    """`WsWorker` for the rooms scenario: every bench message is one binary WebSocket message
    of `message_bytes` payload behind the rooms' 5-byte header (kind, client id), the same
    bytes on every server. job: as `WsWorker` (no tokens), plus `room_id` and `secret` for a
    Relay app room at `/v1/websocket` (each connection joins with `connect` and is open once
    `connected` names its client id); without them the connection is open after the upgrade
    (a peer's room).

    In a Relay room a broadcast goes to every client but its sender, so each sender also
    sends the same message to itself (kind `target`, its own client id) right after the
    broadcast: the room handles one client's messages in order, so that copy comes back after
    the broadcast was queued to every receiver, like a peer's own copy of its broadcast. Every
    client of every server then gets every message once, and a sender's own copy is its
    acknowledgement in the closed-loop phase.
    """

    def __init__(self, pipe: Connection, job: dict[str, Any]) -> None:
        super().__init__(pipe, job)
        room_id: str | None = job.get("room_id")
        self.connect = (
            None
            if room_id is None
            else json.dumps({"type": "connect", "room_id": room_id, "secret": job["secret"]})
        )
        self.client_ids: dict[int, int] = {}  # id(conn) -> its client id in the Relay room

    def _handshake(self, conn: WsConn, data: bytes) -> bytes:
        if self.connect is None:
            return super()._handshake(conn, data)  # no token: open after the upgrade
        if conn.state == UPGRADING:
            upgraded = self._upgraded(conn, data)
            if upgraded is None:
                return data
            data = upgraded
            if conn.state == CLOSED:  # the upgrade was refused
                return b""
            self._write(conn, wire.client_frame(self.connect.encode()))
            conn.state = IDENTIFYING
        pos, frames = wire.data_frames(data, 0)
        for i, (opcode, payload) in enumerate(frames):
            if opcode == wire.OP_CLOSE:
                self._handshake_done(conn, False, f"closed ({wire.close_code(payload)})")
                return b""
            if opcode != wire.OP_TEXT:
                continue
            event = json.loads(payload)
            if event.get("type") == "error":
                self._handshake_done(conn, False, f"join refused ({event.get('code')})")
                return b""
            if event.get("type") == "connected":
                self.client_ids[id(conn)] = int(event["client_id"])
                conn.state = OPEN
                self._handshake_done(conn, True)
                rest = data[pos:]
                for later in reversed(frames[i + 1 :]):
                    rest = _server_frame(*later) + rest
                return rest
        return data[pos:]

    def _send_bench(self, conn: WsConn, now: int) -> None:
        stamped = self._next_bench_text(conn, now)
        if stamped is None:
            return
        text = stamped.encode()
        body = text + b"x" * max(0, self.message_bytes - len(text))
        frame = wire.client_frame(bytes((ROOM_BROADCAST, 0, 0, 0, 0)) + body, wire.OP_BINARY)
        client_id = self.client_ids.get(id(conn))
        if client_id is not None:  # a Relay room: the sender's own copy (see the class)
            own = bytes((ROOM_TARGET,)) + client_id.to_bytes(4, "big") + body
            frame += wire.client_frame(own, wire.OP_BINARY)
        self._write(conn, frame)
