"""Outbox: the frames waiting for one relay client, bounded by bytes, drained by its writer.

The byte count covers every frame from the moment it is queued until the writer has written it
(`release`), so `used_bytes` is what the relay holds for that client. An item (one frame, or a
run of frames from one sender, at most about 64 KiB unless it is a single larger frame) fits
while `used_bytes + len(item) <= limit_bytes`; a larger item fits only into an empty outbox (it
could never be sent otherwise), so `used_bytes` stays at most `max(limit_bytes, largest item)`.

`put_nowait` never waits. `put` waits for room while the writer makes progress, and gives up
after `stall_s` without progress: the caller then applies the slow-receiver policy (see
hub.py). Any number of senders may wait; every release wakes them all and each retries.
"""

from __future__ import annotations

from collections import deque

import trio


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
        self._frames: deque[bytes] = deque()
        self._closed = False
        self._writer = trio.lowlevel.ParkingLot()  # the writer, waiting for frames
        self._room = trio.lowlevel.ParkingLot()  # senders waiting for room

    @property
    def closed(self) -> bool:
        return self._closed

    def fits(self, size: int) -> bool:
        return self.used_bytes == 0 or self.used_bytes + size <= self.limit_bytes

    def put_nowait(self, frame: bytes) -> bool:
        """Queue `frame` if it fits; False if the outbox is full or closed."""
        if self._closed or not self.fits(len(frame)):
            return False
        self._frames.append(frame)
        size = len(frame)
        self.used_bytes += size
        self.queued_bytes += size
        if self.used_bytes > self.high_water_bytes:
            self.high_water_bytes = self.used_bytes
        if self._writer:
            self._writer.unpark_all()
        return True

    async def put(self, frame: bytes, stall_s: float) -> bool:
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

    async def take(self, max_bytes: int | None = None) -> list[bytes]:
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
        """The writer wrote `size` bytes it took: make room and wake waiting senders."""
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
