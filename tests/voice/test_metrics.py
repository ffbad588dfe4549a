"""Voice figures in /metrics from a real server: connections, members per transport, packets
and bytes forwarded, and each reason a packet is dropped, caused by real clients."""

from __future__ import annotations

import socket
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio

from relay.protocol import rtp
from tests.conftest import settings_for, start_server
from tests.test_metrics import Samples, scrape, value
from tests.voice.test_voice import join_voice_flags, open_member_voice, receive_within, setup

if TYPE_CHECKING:
    from pathlib import Path

    from relay.voice_client import VoiceClient

TOKEN = "metrics-token-for-voice-tests"
RATE = 30  # voice_max_packets_per_s here


async def until(url: str, name: str, at_least: float, **labels: str) -> Samples:
    """Scrape until a series reaches `at_least` (packets are counted as the actor takes them)."""
    with trio.fail_after(5):
        while True:
            samples = await scrape(url, TOKEN)
            if value(samples, f"{name}_total", **labels) >= at_least:
                return samples
            await trio.sleep(0.02)


def burst(client: VoiceClient, payloads: list[bytes]) -> None:
    """Send packets from the client's bound UDP address without yielding to the server between
    them, so they reach the actor as one batch (a blocking copy of the socket)."""
    assert client.udp is not None
    assert client.server_addr is not None
    with socket.fromfd(client.udp.fileno(), socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for payload in payloads:
            raw.sendto(client.packet(payload), client.server_addr)


async def test_voice_metrics_count_members_packets_and_drops(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path, metrics_token=TOKEN, voice_max_packets_per_s=RATE, voice_lane_packets=2
    )
    server, shutdown = await start_server(nursery, settings)
    url = f"{server.url}/metrics"
    (a, b), server_id, voice_id = await setup(server, 2)
    ws = server.ws_url
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            ga, ca, _ = await open_member_voice(stack, ws, a, server_id, voice_id, "udp")
            _, cb, _ = await open_member_voice(stack, ws, b, server_id, voice_id, "websocket")
            samples = await scrape(url, TOKEN)
            assert value(samples, "relay_voice_connections", state="connected") == 2
            assert value(samples, "relay_voice_members", transport="udp") == 1
            assert value(samples, "relay_voice_members", transport="websocket") == 1
            assert value(samples, "relay_voice_channels_active") == 1
            assert value(samples, "relay_actors_running", kind="voice") == 1

            # Forwarded: one packet per receiver, and its bytes as the receiver got them.
            sizes = 0
            for frame in (b"one", b"two", b"three"):
                await ca.send_frame(frame)
                sizes += len(await cb.receive_raw())
            samples = await until(url, "relay_voice_packets_forwarded", 3)
            assert value(samples, "relay_voice_packets_forwarded_total") == 3
            assert value(samples, "relay_voice_forwarded_bytes_total") == sizes
            assert value(samples, "relay_voice_packets_received_total") == 3
            assert value(samples, "relay_voice_received_bytes_total") > 0

            # One of each: spoofed SSRC, tampered (auth), replayed, malformed, from an unbound
            # address, and from a self-muted member.
            header = rtp.build_header(120, 1, 1, ca.ssrc)
            await cb.send_raw(rtp.seal(header, b"spoofed", cb.key, 10_000))
            tampered = bytearray(ca.packet(b"tampered"))
            tampered[-1] ^= 1
            await ca.send_raw(bytes(tampered))
            packet = ca.packet(b"once")
            await ca.send_raw(packet)
            await ca.send_raw(packet)
            await cb.send_raw(b"\x80" + bytes(5))
            with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as other:
                await other.bind(("127.0.0.1", 0))
                assert ca.server_addr is not None
                await other.sendto(ca.packet(b"elsewhere"), ca.server_addr)
            await join_voice_flags(ga, server_id, voice_id, self_mute=True)
            await ca.send_frame(b"muted")
            samples = await until(url, "relay_voice_packets_dropped", 1, reason="muted")
            for reason in ("spoof", "auth", "replay", "malformed", "unbound", "muted"):
                assert value(samples, "relay_voice_packets_dropped_total", reason=reason) == 1
            await join_voice_flags(ga, server_id, voice_id, self_mute=False)

            # A burst into a lane of 2 overflows it; past RATE packets a second the sender's
            # excess is dropped too.
            burst(ca, [b"burst"] * 12)
            samples = await until(url, "relay_voice_packets_dropped", 1, reason="lane_overflow")
            burst(ca, [b"flood"] * (RATE + 10))
            samples = await until(url, "relay_voice_packets_dropped", 10, reason="rate")
            assert value(samples, "relay_voice_lane_packets") <= 2
        # Both voice connections closed: resumable until voice_resume_grace_s.
        while value(samples, "relay_voice_connections", state="connected") != 0:
            samples = await scrape(url, TOKEN)
        assert value(samples, "relay_voice_connections", state="resumable") == 2
    await shutdown()


async def test_packets_that_waited_too_long_in_the_server_are_dropped_as_late(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, metrics_token=TOKEN, voice_max_delay_ms=50)
    server, shutdown = await start_server(nursery, settings)
    url = f"{server.url}/metrics"
    (a, b), server_id, voice_id = await setup(server, 2)
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            _, ca, _ = await open_member_voice(stack, server.ws_url, a, server_id, voice_id, "udp")
            _, cb, _ = await open_member_voice(stack, server.ws_url, b, server_id, voice_id, "udp")
            await ca.send_frame(b"on time")
            assert await receive_within(cb) == [b"on time"]
            # The server shares this test's event loop: blocking it is a stalled server, with
            # five packets waiting in its socket buffer for longer than 50 ms.
            burst(ca, [b"stale"] * 5)
            time.sleep(0.2)  # noqa: ASYNC251 (blocking the loop is the point)
            await ca.send_frame(b"fresh")
            assert await receive_within(cb) == [b"fresh"]
            samples = await until(url, "relay_voice_packets_dropped", 5, reason="late")
            assert value(samples, "relay_voice_packets_dropped_total", reason="late") == 5
            assert value(samples, "relay_voice_packets_forwarded_total") == 2
    await shutdown()


async def test_a_small_receive_buffer_lets_the_kernel_drop_an_overload(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # 64 KiB (128 KiB as the kernel counts it) holds about 150 small packets.
    settings = settings_for(
        tmp_path, metrics_token=TOKEN, voice_max_delay_ms=50, voice_udp_receive_buffer_bytes=65536
    )
    server, shutdown = await start_server(nursery, settings)
    url = f"{server.url}/metrics"
    (a, b), server_id, voice_id = await setup(server, 2)
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            _, ca, _ = await open_member_voice(stack, server.ws_url, a, server_id, voice_id, "udp")
            _, cb, _ = await open_member_voice(stack, server.ws_url, b, server_id, voice_id, "udp")
            # The stalled server (this test blocks their shared loop) is sent 2,000 packets:
            # the kernel keeps what fits in the buffer, and the server reads only those.
            burst(ca, [b"stale"] * 2000)
            time.sleep(0.2)  # noqa: ASYNC251 (blocking the loop is the point)
            samples = await until(url, "relay_voice_packets_dropped", 1, reason="late")
            await ca.send_frame(b"fresh")  # into a buffer the server has emptied
            assert await receive_within(cb) == [b"fresh"]
            late = value(samples, "relay_voice_packets_dropped_total", reason="late")
            assert late < 400
    await shutdown()
