"""The slow-receiver policy: a full outbox stalls the sender (TCP backpressure); a receiver that
makes no progress for relay_stall_s is cut and the sender goes on; memory stays within the
outbox limit. A receiver that is slow but reading loses nothing."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
import trio

from relay.protocol import relayd
from relay.protocol.relayd import Transfer
from tests.byterelay.conftest import wait_until

if TYPE_CHECKING:
    from tests.byterelay.conftest import RelaydClient, RelayServer

QUEUE_BYTES = 256 * 1024
STALL_S = 0.3
SLOW = pytest.mark.settings(relay_queue_bytes=QUEUE_BYTES, relay_stall_s=STALL_S)


async def blast(sender: RelaydClient, to: bytes, frame_bytes: int, count: int) -> None:
    payload = os.urandom(frame_bytes)
    for _ in range(count):
        await sender.send(to, payload)


@SLOW
async def test_a_receiver_that_never_reads_is_cut(relay_server: RelayServer) -> None:
    hub = relay_server.hub
    with trio.fail_after(20):
        alice = await relay_server.client(b"alice")
        stuck = await relay_server.connect(rcvbuf=16 * 1024)
        await stuck.login(b"stuck")
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            # Enough to fill the kernel's buffers on both sides, then the outbox.
            nursery.start_soon(blast, alice, b"stuck", 64 * 1024, 400)
            while hub.stats.slow_disconnects == 0:
                outbox = hub.clients[b"stuck"].outbox
                assert outbox.used_bytes <= QUEUE_BYTES
                await trio.sleep(0.01)
            cut_after = trio.current_time() - started
        # Once cut, the rest went to an offline id: the sender was never blocked again.
        assert b"stuck" not in hub.clients
        assert hub.stats.dropped_offline > 0
        await alice.sync()  # the sender goes on
        # What the receiver still gets is intact frames, then the end (the cut may fall
        # inside the frame that was being written).
        stuck.parser.feed(await stuck.read_to_eof())
        assert all(isinstance(f, Transfer) and len(f.payload) == 64 * 1024 for f in stuck.parser)
    stats = hub.stats
    assert stats.slow_disconnects == 1
    assert stats.dropped_gone == 1  # the frame that waited in vain
    assert cut_after >= STALL_S
    # The queue accounting: the outbox never held more than its limit.
    assert 0 < stats.peak_queue_bytes <= QUEUE_BYTES


@SLOW
async def test_a_slow_but_reading_receiver_loses_nothing(relay_server: RelayServer) -> None:
    hub = relay_server.hub
    frame = relayd.encode_transfer(b"alice", b"slow", os.urandom(32 * 1024))
    count = 300  # about 10 MB: more than the kernel buffers plus the outbox
    with trio.fail_after(20):
        alice = await relay_server.client(b"alice")
        slow = await relay_server.connect(rcvbuf=16 * 1024)
        await slow.login(b"slow")
        received = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(alice.send_raw, frame * count)
            while received < count:
                received += 1
                assert (await slow.receive()).raw == frame
                if received % 10 == 0:
                    await trio.sleep(0.01)  # slower than the sender
    assert hub.stats.slow_disconnects == 0
    assert hub.stats.frames_forwarded == count + 2
    # The outbox did fill up (the sender had to wait), and never went over its limit.
    high_water = hub.clients[b"slow"].outbox.high_water_bytes
    assert QUEUE_BYTES - len(frame) < high_water <= QUEUE_BYTES


@SLOW
async def test_one_stalled_receiver_does_not_cut_another(relay_server: RelayServer) -> None:
    hub = relay_server.hub
    with trio.fail_after(20):
        alice = await relay_server.client(b"alice")
        bob = await relay_server.client(b"bob")
        stuck = await relay_server.connect(rcvbuf=16 * 1024)
        await stuck.login(b"stuck")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blast, alice, b"stuck", 64 * 1024, 400)
            await wait_until(lambda: hub.stats.slow_disconnects > 0)
        await alice.send(b"bob", b"after the stall")
        assert (await bob.receive()).payload == b"after the stall"
    assert b"bob" in hub.clients
