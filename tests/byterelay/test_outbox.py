"""The byte-bounded outbox on its own (virtual clock): what fits, batches, and the stall timer
that restarts on every release and gives up without one."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from relay.byterelay.outbox import Outbox


def test_what_fits() -> None:
    outbox = Outbox(100)
    assert outbox.put_nowait(b"x" * 60)
    assert outbox.put_nowait(b"x" * 40)
    assert not outbox.put_nowait(b"x")  # full
    assert outbox.used_bytes == outbox.high_water_bytes == 100
    empty = Outbox(100)
    assert empty.put_nowait(b"x" * 500)  # a larger frame goes into an empty outbox only
    assert not empty.put_nowait(b"x")


async def test_take_and_release() -> None:
    outbox = Outbox(1000)
    for size in (10, 20, 30, 40):
        outbox.put_nowait(b"x" * size)
    assert [len(f) for f in await outbox.take(35)] == [10, 20]
    assert [len(f) for f in await outbox.take(1)] == [30]  # at least one frame
    assert [len(f) for f in await outbox.take()] == [40]
    assert outbox.used_bytes == 100  # taken, not yet written
    outbox.release(100)
    assert outbox.used_bytes == 0
    assert outbox.high_water_bytes == 100


async def test_writing_the_queue_at_once_instead_of_the_writer() -> None:
    outbox = Outbox(1000)
    outbox.put_nowait(b"a" * 10, wake=False)
    outbox.put_nowait(memoryview(b"b" * 20), wake=False)
    assert not outbox.writing
    assert outbox.peek(1) == [b"a" * 10]
    assert outbox.peek(5) == [b"a" * 10, b"b" * 20]
    outbox.written(15)  # all of the first, part of the second
    assert (outbox.used_bytes, outbox.queued_bytes) == (15, 15)
    assert await outbox.take() == [b"b" * 15]
    assert outbox.writing  # taken, not yet released: nobody else may write now
    outbox.release(15)
    assert not outbox.writing
    assert outbox.used_bytes == 0
    assert outbox.high_water_bytes == 30


async def test_a_waiting_sender_gets_room_when_bytes_are_released(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(100)
    outbox.put_nowait(b"x" * 100)
    result: list[bool] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _put(outbox, b"y" * 50, 1.0, result))
        for _ in range(5):  # 10 bytes every 0.9 s: slow, but never 1 s without progress
            await trio.sleep(0.9)
            outbox.release(10)
    assert result == [True]
    assert trio.current_time() == pytest.approx(4.5)


async def test_no_progress_for_stall_s_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    outbox = Outbox(100)
    outbox.put_nowait(b"x" * 100)
    start = trio.current_time()
    assert not await outbox.put(b"y", 2.0)
    assert trio.current_time() - start == pytest.approx(2.0)
    assert not outbox.closed


async def test_close_wakes_everyone() -> None:
    outbox = Outbox(10)
    outbox.put_nowait(b"x" * 10)
    result: list[bool] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _put(outbox, b"y", 60.0, result))
        await trio.testing.wait_all_tasks_blocked()
        outbox.close()
    assert result == [False]
    assert outbox.used_bytes == 0
    with pytest.raises(trio.EndOfChannel):
        await outbox.take()
    assert not outbox.put_nowait(b"z")


async def _put(outbox: Outbox, frame: bytes, stall_s: float, result: list[bool]) -> None:
    result.append(await outbox.put(frame, stall_s))
