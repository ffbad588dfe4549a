"""The fair limiter with real Trio tasks: the order in which waiters of a flooding key and a
quiet key are admitted, the per-key cap, and cancellation (no slot lost, no queue left)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from relay.fairlimit import FairLimiter, QueueFull


class Holders:
    """Tasks that each hold a slot until told to release it, in the order they got it."""

    def __init__(self, limiter: FairLimiter, nursery: trio.Nursery) -> None:
        self.limiter = limiter
        self.nursery = nursery
        self.admitted: list[str] = []
        self.holding: dict[str, trio.Event] = {}
        self.most_at_once = 0

    async def _hold(self, name: str, key: str) -> None:
        async with self.limiter.hold(key):
            self.admitted.append(name)
            self.holding[name] = release = trio.Event()
            self.most_at_once = max(self.most_at_once, len(self.holding))
            await release.wait()
            del self.holding[name]

    async def queue(self, name: str, key: str) -> None:
        """Start a task that asks for a slot; returns once it holds one or waits in line."""
        self.nursery.start_soon(self._hold, name, key)
        await trio.testing.wait_all_tasks_blocked()

    async def release_all(self) -> None:
        """Release holders one at a time, earliest admitted first, until none is left."""
        while self.holding:
            first = next(n for n in self.admitted if n in self.holding)
            self.holding[first].set()
            await trio.testing.wait_all_tasks_blocked()


async def test_a_quiet_key_waits_for_at_most_one_of_a_flooders_requests() -> None:
    limiter = FairLimiter(total=2, per_key=100)
    async with trio.open_nursery() as nursery:
        holders = Holders(limiter, nursery)
        for i in range(10):
            await holders.queue(f"flood{i}", "10.0.0.1")
        await holders.queue("quiet", "10.0.0.2")
        await holders.release_all()
        order = holders.admitted
        # Two flood requests held the slots when the quiet one came, eight waited before it. A
        # FIFO admits it last; round-robin after one more of the flood's.
        assert order.index("quiet") == 3, order
        assert [n for n in order if n != "quiet"] == [f"flood{i}" for i in range(10)]
        assert holders.most_at_once == 2


async def test_keys_take_turns() -> None:
    limiter = FairLimiter(total=1, per_key=100)
    async with trio.open_nursery() as nursery:
        holders = Holders(limiter, nursery)
        await holders.queue("first", "c")
        for i in range(3):
            await holders.queue(f"a{i}", "a")
        for i in range(2):
            await holders.queue(f"b{i}", "b")
        await holders.queue("c0", "c")
        await holders.release_all()
        assert holders.admitted == ["first", "a0", "b0", "c0", "a1", "b1", "a2"]


async def test_a_key_over_its_cap_is_refused_and_others_are_not() -> None:
    limiter = FairLimiter(total=1, per_key=3)
    async with trio.open_nursery() as nursery:
        holders = Holders(limiter, nursery)
        for i in range(3):  # one holds, two wait: the key's three
            await holders.queue(f"a{i}", "a")
        with pytest.raises(QueueFull):
            async with limiter.hold("a"):
                pass
        await holders.queue("b0", "b")
        holders.holding["a0"].set()  # a1 takes the slot; a place of a's is free again
        await trio.testing.wait_all_tasks_blocked()
        await holders.queue("a3", "a")
        await holders.release_all()
        assert holders.admitted == ["a0", "a1", "b0", "a2", "a3"]


async def test_cancelled_waiters_leave_no_trace() -> None:
    limiter = FairLimiter(total=1, per_key=2)
    async with trio.open_nursery() as nursery:
        holders = Holders(limiter, nursery)
        await holders.queue("a0", "a")
        async with trio.open_nursery() as doomed:
            others = Holders(limiter, doomed)
            await others.queue("a1", "a")
            await others.queue("b1", "b")
            doomed.cancel_scope.cancel()
        # Their places are free again (a may have two), and the slot goes to the living: a
        # leaked waiter would be handed it and hold it forever.
        await holders.queue("a2", "a")
        await holders.queue("b2", "b")
        await holders.release_all()
        assert holders.admitted == ["a0", "a2", "b2"]
        assert others.admitted == []


async def test_a_waiter_cancelled_as_its_turn_comes_passes_the_slot_on() -> None:
    limiter = FairLimiter(total=1, per_key=1)
    scope = trio.CancelScope()
    got_in: list[str] = []

    async def doomed() -> None:
        with scope:
            async with limiter.hold("a"):
                got_in.append("doomed")

    async with trio.open_nursery() as nursery, limiter.hold("b"):
        nursery.start_soon(doomed)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        # Leaving `hold` hands the slot to `doomed` before it runs to see its cancellation.
    async with trio.open_nursery() as nursery:
        holders = Holders(limiter, nursery)
        await holders.queue("a1", "a")  # the slot and a's one place are free again
        assert holders.admitted == ["a1"]
        await holders.release_all()
    assert got_in == []
