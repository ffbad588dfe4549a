"""A capacity limiter that is fair between keys (client addresses).

Like trio.CapacityLimiter, at most `total` tasks hold a slot at once; unlike it, waiters are not
served in one FIFO but round-robin across keys, FIFO within a key. A key with many requests
queued then delays another key's request by at most one of its own, not by all of them. A key
may have at most `per_key` requests holding or waiting; `hold` refuses more with QueueFull.

Resource handling: each waiter is a trio.Event in its key's deque; the keys that have waiters
are an OrderedDict in serving order (a key served goes to the back). A released slot passes
straight to the next waiter, so while anyone waits every slot is held and a newcomer never
overtakes the queue. Memory is one entry per waiting request, at most `per_key` per key.

Error handling: a waiter cancelled before its turn leaves its queue; one cancelled after it was
handed a slot passes that slot on, so no capacity is ever lost.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class QueueFull(Exception):
    """The key already has `per_key` requests holding or waiting for a slot."""


class FairLimiter:
    __slots__ = ("_held", "_queues", "_running", "per_key", "total")

    def __init__(self, total: int, per_key: int) -> None:
        if total < 1 or per_key < 1:
            raise ValueError("total and per_key must be >= 1")
        self.total = total
        self.per_key = per_key
        self._running = 0  # slots held
        self._held: dict[str, int] = {}  # key -> its requests holding or waiting
        self._queues: OrderedDict[str, deque[trio.Event]] = OrderedDict()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold one slot for the block, once `key`'s turn comes.

        Raises:
            QueueFull: `key` already has `per_key` requests holding or waiting.
        """
        await trio.lowlevel.checkpoint()
        held = self._held.get(key, 0)
        if held >= self.per_key:
            raise QueueFull(key)
        self._held[key] = held + 1
        try:
            if self._running < self.total:  # then nobody waits (see _pass_on)
                self._running += 1
            else:
                await self._wait(key)
            try:
                yield
            finally:
                self._pass_on()
        finally:
            left = self._held[key] - 1
            if left:
                self._held[key] = left
            else:
                del self._held[key]

    async def _wait(self, key: str) -> None:
        turn = trio.Event()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(turn)
        served = False
        try:
            await turn.wait()
            served = True
        finally:
            if not served and turn.is_set():  # cancelled once handed a slot: pass it on
                self._pass_on()
            elif not served:  # cancelled in the queue: leave it
                queue.remove(turn)
                if not queue:
                    del self._queues[key]

    def _pass_on(self) -> None:
        """A slot is free: it goes to the first waiter of the next key in turn, if any."""
        if not self._queues:
            self._running -= 1
            return
        key, queue = next(iter(self._queues.items()))
        queue.popleft().set()
        if queue:
            self._queues.move_to_end(key)
        else:
            del self._queues[key]
