"""scripts/bench: the raw WebSocket/HTTP bytes of its load generator, and a smoke run.

The smoke run is under a minute with tiny sizes and Relay only (no peers, so no network beyond
loopback). It checks that the run completes and writes the JSON with the expected keys; it
asserts no timing: benchmarks are not tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchkit import wire  # noqa: E402
from benchkit.core import spread_summary  # noqa: E402


def server_frame(payload: bytes, opcode: int = wire.OP_TEXT) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def test_scan_counts_bench_messages_across_any_split() -> None:
    bench = wire.bench_text(123456789, 3, 7).encode()
    stream = (
        server_frame(b'{"op":0,"t":"PRESENCE_UPDATE"}')
        + server_frame(b'{"content":"' + bench + b'"}')
        + server_frame(b"x" * 200 + bench)  # a 16-bit length
        + server_frame(b"\x03\xe8", wire.OP_CLOSE)
    )
    for cut in range(len(stream) + 1):
        stamps: list[bytes] = []
        pos, count, controls = wire.scan(stream[:cut], 0, stamps)
        rest_pos, rest_count, rest_controls = wire.scan(stream[pos:], 0, stamps)
        assert pos + rest_pos == len(stream)
        assert count + rest_count == 2
        assert [wire.parse_stamp(s) for s in stamps] == [(123456789, 3, 7)] * 2
        assert (controls or []) + (rest_controls or []) == [(wire.OP_CLOSE, b"\x03\xe8")]


def test_first_frame_needs_the_whole_frame_and_keeps_the_rest() -> None:
    frames = [(wire.OP_BINARY, b"x" * 300), (wire.OP_TEXT, b'{"op":8}'), (wire.OP_CLOSE, b"")]
    stream = b"".join(server_frame(p, o) for o, p in frames)
    first_len = len(server_frame(frames[0][1]))  # a 16-bit length: cuts inside it too
    for cut in range(len(stream) + 1):
        got = wire.first_frame(stream[:cut])
        assert got == (None if cut < first_len else (*frames[0], stream[first_len:cut]))
    rest, seen = stream, []
    while (frame := wire.first_frame(rest)) is not None:
        opcode, payload, rest = frame
        seen.append((opcode, payload))
    assert (seen, rest) == (frames, b"")


def test_client_frames_are_masked() -> None:
    payload = b"hello, relay" * 20
    frame = wire.client_frame(payload)
    assert frame[0] == 0x81
    assert frame[1] == 0x80 | 126
    assert int.from_bytes(frame[2:4], "big") == len(payload)
    mask = frame[4:8]
    assert wire.mask_bytes(frame[8:], mask) == payload


def test_split_response_needs_the_whole_body() -> None:
    answer = b"HTTP/1.1 201 \r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    assert wire.split_response(answer[:-1]) is None
    assert wire.split_response(answer + b"HTTP/1.1") == (201, b"{}", b"HTTP/1.1")


def test_quick_run_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench"),
            "--quick",
            "--only",
            "relay",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard, not a performance assertion
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["servers"] == ["relay"]
    for key in ("date", "machine", "config", "rows", "phases", "details", "notes", "versions"):
        assert key in result
    for key in ("cpu_model", "cores", "memory_gb", "python", "node"):
        assert key in result["machine"]
    scenarios = {row["scenario"] for row in result["rows"]}
    assert scenarios == {"fanout", "write", "idle", "relay", "relay_ws", "rooms"}
    for row in result["rows"]:
        assert set(row) >= {"case", "metric", "unit", "values", "ratios", "bar", "bar_met"}
    for phase in result["phases"]:
        assert phase["server_cpu_pct"] >= 0
        if phase["scenario"] in ("fanout", "write", "rooms"):
            assert phase["server_preempted_per_s"] >= 0
        assert phase["lg_cpu_pct"] >= 0
        assert phase["missing_deliveries"] == 0
    fanout = result["details"]["fanout"]
    for by_server in fanout.values():
        assert by_server["relay"]["max"]["deliveries_per_s"] > 0
        assert by_server["relay"]["latency"]["latency"]["samples"] > 0
    rooms = result["details"]["rooms"]["relay"]
    assert rooms["max"]["deliveries_per_s"] > 0
    assert all(r["latency"]["samples"] > 0 for phase, r in rooms.items() if phase != "max")
    assert all(r["frames_per_s"] > 0 for r in result["details"]["relay_ws"].values())
    # Relay's senders on gateway op 12 (acknowledged by op 13), beside the REST posts.
    for by_phase in result["details"]["fanout_gateway_op12"].values():
        assert by_phase["max"]["acked_per_s"] > 0
        latency = by_phase["latency"]["latency"]
        assert latency["samples"] > 0
        assert 0 < latency["first_receiver_p50_ms"] <= latency["last_receiver_p50_ms"]
    for write in result["details"]["write"]["gateway_op12"].values():
        assert write["deliveries_total"] == 0  # their intents keep the channel's messages out
        assert write["acked_per_s"] > 0
        assert write["ack_latency"]["samples"] > 0
        assert write["posts"]["errors"] == {}
    assert "### fanout" in done.stdout
    assert "### rooms" in done.stdout


def test_spread_summary_joins_each_messages_receivers_across_workers() -> None:
    # Two workers, three messages (by send time): each message's first and last receiver are
    # the earliest and latest over both workers; one message only reached the first worker.
    a = {1: [100, 900], 2: [300, 400], 3: [50, 60]}
    b = {1: [200, 1500], 2: [250, 800]}
    summary = spread_summary([a, b])
    # firsts 100, 250, 50 (ms: 0.05, 0.1, 0.25); lasts 1500, 800, 60
    assert summary == {
        "messages": 3,
        "first_receiver_p50_ms": 0.1,
        "last_receiver_p50_ms": 0.8,
        "last_receiver_p90_ms": 1.5,
    }
    assert spread_summary([{}, {}]) == {}


@pytest.mark.parametrize("text", ["bench|1|2|3|", "bench|1|2|3|" + "x" * 500])
def test_peer_message_is_padded_json(text: str) -> None:
    from benchkit.workers import peer_message

    message = peer_message(text, 380)
    assert len(message) >= 380
    assert json.loads(message)["d"]["content"] == text
