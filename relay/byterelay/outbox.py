"""Outbox: the frames waiting for one relay client, bounded by bytes, drained by its writer.

The byte count covers every frame from the moment it is queued until it has been written
(`release`), so `used_bytes` is what the relay holds for that client. An item (one frame, or a
run of frames from one sender, at most `relayd.RUN_BYTES` unless it is a single larger frame,
as bytes or as a view of the chunk it arrived in) fits while
`used_bytes + len(item) <= limit_bytes`; a larger item fits only into an empty outbox (it
could never be sent otherwise), so `used_bytes` stays at most `max(limit_bytes, largest item)`.

`put_nowait` never waits. `put` waits for room while the writer makes progress, and gives up
after `stall_s` without progress: the caller then applies the slow-receiver policy (see
hub.py). Any number of senders may wait; every release wakes them all and each retries.

Writing at once: a sender may queue with `wake=False` and then, while the writer has nothing
in flight (`writing` is False), write the front of the queue to the client's socket itself and
report it with `written`; only if something is left does it `wake` the writer (hub.py). So an
idle client costs no task switch, and everything one read queued for it goes out in one write.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from relay.protocol.relayd import Bytes


class Outbox:
    __slots__ = (
        "_closed",
        "_frames",
        "_room",
        "_writer",
        "high_water_bytes",
        "limit_bytes",
        "queued_bytes",
        "used_bytes",
    )

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0  # queued plus taken but not yet released
        self.queued_bytes = 0
        self.high_water_bytes = 0
        self._frames: deque[Bytes] = deque()
        self._closed = False
        self._writer = trio.lowlevel.ParkingLot()  # the writer, waiting for frames
        self._room = trio.lowlevel.ParkingLot()  # senders waiting for room

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def writing(self) -> bool:
        """The writer has taken bytes it has not released yet (it is writing them)."""
        return self.used_bytes > self.queued_bytes

    def fits(self, size: int) -> bool:
        return self.used_bytes == 0 or self.used_bytes + size <= self.limit_bytes

    def put_nowait(self, frame: Bytes, *, wake: bool = True) -> bool:
        """Queue `frame` if it fits; False if the outbox is full or closed. With `wake=False`
        the writer is not woken: the caller then calls `wake` (or writes the frame itself)."""
        if self._closed or not self.fits(len(frame)):
            return False
        self._frames.append(frame)
        size = len(frame)
        self.used_bytes += size
        self.queued_bytes += size
        if self.used_bytes > self.high_water_bytes:
            self.high_water_bytes = self.used_bytes
        if wake and self._writer:
            self._writer.unpark_all()
        return True

    async def put(self, frame: Bytes, stall_s: float) -> bool:
        """Queue `frame`, waiting for room for as long as the writer keeps releasing bytes.

        Returns False if the outbox closed, or if no bytes were released for `stall_s`.
        """
        while not self.put_nowait(frame):
            if self._closed:
                return False
            with trio.move_on_after(stall_s):
                await self._room.park()
                continue
            return False
        return True

    def wake(self) -> None:
        """Wake the writer (after `put_nowait(wake=False)`)."""
        if self._writer:
            self._writer.unpark_all()

    def peek(self, max_items: int) -> list[Bytes]:
        """The first `max_items` queued items, left in the queue."""
        frames = self._frames
        if len(frames) <= max_items:
            return list(frames)
        return [frames[i] for i in range(max_items)]

    def written(self, size: int) -> None:
        """The first `size` queued bytes were written by the caller, not the writer (only
        while it is not `writing`): they leave the queue and are released."""
        frames = self._frames
        left = size
        while left:
            first = frames[0]
            if left < len(first):
                frames[0] = memoryview(first)[left:]
                break
            frames.popleft()
            left -= len(first)
        self.queued_bytes -= size
        self.release(size)

    async def take(self, max_bytes: int | None = None) -> list[Bytes]:
        """The queued frames (the first one, then more up to `max_bytes` in all if given),
        waiting for one if there is none.

        Raises:
            trio.EndOfChannel: the outbox was closed (what was still queued is dropped).
        """
        while not self._frames:
            if self._closed:
                raise trio.EndOfChannel
            await self._writer.park()
        if self._closed:
            raise trio.EndOfChannel
        frames = self._frames
        if max_bytes is None or self.queued_bytes <= max_bytes:
            taken = list(frames)
            frames.clear()
            self.queued_bytes = 0
            return taken
        taken = [frames.popleft()]
        size = len(taken[0])
        while frames and size + len(frames[0]) <= max_bytes:
            taken.append(frames.popleft())
            size += len(taken[-1])
        self.queued_bytes -= size
        return taken

    def release(self, size: int) -> None:
        """`size` bytes that were taken (or `written`) are out: make room, wake waiting senders."""
        if self._closed:
            return
        self.used_bytes -= size
        if self._room:
            self._room.unpark_all()

    def close(self) -> None:
        """Stop: queued frames are dropped; the writer and waiting senders wake up."""
        self._closed = True
        self._frames.clear()
        self.used_bytes = self.queued_bytes = 0
        self._writer.unpark_all()
        self._room.unpark_all()
