"""Registry: start on demand, supervision (restart, backoff, give-up), idle stop, close_all."""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import trio
import trio.testing

from actors import Actor, ActorStopped, AskTimeout, Overloaded, Registry, Reply

if TYPE_CHECKING:
    from collections.abc import Callable


class Add(msgspec.Struct, tag="add", frozen=True):
    n: int


class Total(msgspec.Struct, tag="total", frozen=True):
    reply: Reply[int]


class Crash(msgspec.Struct, tag="crash", frozen=True):
    reply: Reply[int]


class Wait(msgspec.Struct, tag="wait", frozen=True):
    gate: trio.Event


RoomMsg = Add | Total | Crash | Wait


class FakeDb:
    """What the rooms persist, plus a log of their lifecycle and knobs to make them misbehave."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.starts: list[tuple[str, float]] = []
        self.stops: list[str] = []
        self.crashes: list[tuple[str, Exception]] = []
        self.start_delay_s = 0.0
        self.fail_starts = False
        self.factory_error: Exception | None = None
        self.idle_timeout_s: float | None = None
        self.stop_gate = trio.Event()
        self.stop_gate.set()

    def new_room(self, key: str) -> Room:
        if self.factory_error is not None:
            raise self.factory_error
        return Room(key, self)

    def start_times(self, key: str) -> list[float]:
        return [t for k, t in self.starts if k == key]


class Room(Actor[RoomMsg]):
    def __init__(self, key: str, db: FakeDb) -> None:
        super().__init__(key)
        self.db = db
        self.idle_timeout_s = db.idle_timeout_s
        self.total = 0

    async def on_start(self) -> None:
        await trio.sleep(self.db.start_delay_s)
        self.db.starts.append((self.key, trio.current_time()))
        if self.db.fail_starts:
            raise OSError("database unavailable")
        self.total = self.db.totals.get(self.key, 0)

    async def handle(self, msg: RoomMsg) -> None:
        match msg:
            case Add(n):
                self.total += n
                self.db.totals[self.key] = self.total
            case Total(reply):
                reply.send(self.total)
            case Crash():
                raise ValueError(f"boom in {self.key}")
            case Wait(gate):
                await gate.wait()

    async def on_stop(self) -> None:
        await self.db.stop_gate.wait()
        self.db.stops.append(self.key)

    def on_crash(self, exc: Exception) -> None:
        self.db.crashes.append((self.key, exc))


@pytest.fixture
def db() -> FakeDb:
    return FakeDb()


async def start_registry(nursery: trio.Nursery, db: FakeDb, **policy: Any) -> Registry[RoomMsg]:
    registry = Registry(db.new_room, **policy)
    assert not registry.is_running
    await nursery.start(registry.run)
    assert registry.is_running
    return registry


async def crash(registry: Registry[RoomMsg], key: str) -> None:
    with pytest.raises(ActorStopped):
        await registry.ask(key, Crash)


async def test_crash_restarts_from_storage_after_backoff_without_disturbing_others(
    nursery: trio.Nursery,
    db: FakeDb,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = await start_registry(nursery, db, backoff_s=0.5)
    await registry.tell("a", Add(5))
    await registry.tell("b", Add(7))
    a_before, b_before = await registry.get("a"), await registry.get("b")

    crashed_at = trio.current_time()
    await crash(registry, "a")
    assert await registry.ask("a", Total) == 5  # waits for the restart, state reloaded

    assert await registry.get("a") is not a_before
    assert db.start_times("a") == [0, pytest.approx(crashed_at + 0.5)]
    assert await registry.get("b") is b_before
    assert await registry.ask("b", Total) == 7
    assert db.start_times("b") == [0]

    [(key, exc)] = db.crashes
    assert key == "a"
    assert isinstance(exc, ValueError)  # on_crash sees the error, not the nursery's group
    [record] = [r for r in caplog.records if r.name == "relay.actors"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[1] is exc


async def test_backoff_doubles_per_recent_crash_up_to_the_cap(
    nursery: trio.Nursery, db: FakeDb, autojump_clock: trio.testing.MockClock
) -> None:
    registry = await start_registry(nursery, db, backoff_s=0.1, backoff_max_s=0.3)
    await registry.get("a")
    for _ in range(4):
        await crash(registry, "a")
        await registry.get("a")

    starts = db.start_times("a")
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.1, 0.2, 0.3, 0.3])


async def test_crashes_outside_the_window_do_not_count(
    nursery: trio.Nursery, db: FakeDb, autojump_clock: trio.testing.MockClock
) -> None:
    registry = await start_registry(nursery, db, max_restarts=1, window_s=10)
    await crash(registry, "a")
    await trio.sleep(11)
    await crash(registry, "a")
    assert await registry.ask("a", Total) == 0

    # Restarted after the first backoff again, rather than given up and started by the ask.
    assert db.start_times("a") == pytest.approx([0, 0.1, 11.1])


async def test_gives_up_after_too_many_crashes_and_a_later_get_starts_anew(
    nursery: trio.Nursery,
    db: FakeDb,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = await start_registry(nursery, db, max_restarts=2)
    await registry.tell("a", Add(3))
    await registry.tell("b", Add(4))

    db.fail_starts = True  # every restart of "a" crashes in on_start
    await crash(registry, "a")
    with trio.fail_after(60), pytest.raises(ActorStopped):
        await registry.get("a")  # waits through both restarts, then the give-up
    assert len(db.start_times("a")) == 3
    assert registry.running() == ["b"]
    assert "giving up" in caplog.records[-1].getMessage()
    assert caplog.records[-1].levelno == logging.ERROR
    # What /metrics reports: two keys started, "a" restarted twice and given up once.
    counters = (registry.starts, registry.restarts, registry.give_ups, registry.count_running())
    assert counters == (2, 2, 1, 1)

    db.fail_starts = False
    assert await registry.ask("a", Total) == 3
    assert await registry.ask("b", Total) == 4
    assert registry.running() == ["a", "b"]
    assert (registry.starts, registry.count_running()) == (3, 2)


async def test_factory_errors_reach_the_caller_or_give_the_key_up(
    nursery: trio.Nursery,
    db: FakeDb,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = await start_registry(nursery, db)
    await registry.tell("a", Add(1))

    db.factory_error = LookupError("no actor kind")
    with pytest.raises(LookupError):
        await registry.get("b")
    assert registry.running() == ["a"]

    await crash(registry, "a")  # its restart fails in the factory
    with pytest.raises(ActorStopped):
        await registry.get("a")
    assert registry.running() == []
    assert "factory failed" in caplog.records[-1].getMessage()

    db.factory_error = None
    assert await registry.ask("a", Total) == 1
    assert registry.is_running


async def test_ask_to_an_actor_that_crashes_mid_request_raises_actor_stopped_at_once(
    nursery: trio.Nursery, db: FakeDb, autojump_clock: trio.testing.MockClock
) -> None:
    registry = await start_registry(nursery, db)
    gate = trio.Event()
    await registry.tell("a", Wait(gate))
    stopped: list[str] = []

    async def ask(name: str, build: Callable[[Reply[int]], RoomMsg]) -> None:
        with pytest.raises(ActorStopped):
            await registry.ask("a", build, timeout_s=10)
        stopped.append(name)

    start = trio.current_time()
    async with trio.open_nursery() as askers:
        askers.start_soon(ask, "crash", Crash)
        await trio.testing.wait_all_tasks_blocked()
        askers.start_soon(ask, "total", Total)  # queued behind the crash: dropped with it
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    assert sorted(stopped) == ["crash", "total"]
    assert trio.current_time() == start


async def test_registry_ask_times_out(
    nursery: trio.Nursery, db: FakeDb, autojump_clock: trio.testing.MockClock
) -> None:
    registry = await start_registry(nursery, db)
    await registry.tell("a", Wait(trio.Event()))
    start = trio.current_time()

    with pytest.raises(AskTimeout):
        await registry.ask("a", Total, timeout_s=1)
    assert trio.current_time() - start == pytest.approx(1)


async def test_start_ask_waits_for_inbox_space_only_until_its_deadline(
    nursery: trio.Nursery, db: FakeDb, autojump_clock: trio.testing.MockClock
) -> None:
    registry = await start_registry(nursery, db)
    gate = trio.Event()
    await registry.tell("a", Wait(gate))
    await trio.testing.wait_all_tasks_blocked()
    with trio.testing.assert_no_checkpoints():  # running, with room: queued at once
        first = await registry.start_ask("a", Total, deadline=trio.current_time() + 1)
    while True:  # fill the inbox
        try:
            await registry.tell("a", Add(1))
        except Overloaded:
            break
    start = trio.current_time()

    with pytest.raises(AskTimeout):
        await registry.start_ask("a", Total, deadline=start + 1.5)
    assert trio.current_time() - start == pytest.approx(1.5)
    gate.set()
    assert await first.answer() == 0


async def test_idle_stop_frees_the_key_and_the_next_get_starts_a_new_instance(
    nursery: trio.Nursery, db: FakeDb, autojump_clock: trio.testing.MockClock
) -> None:
    db.idle_timeout_s = 10
    registry = await start_registry(nursery, db)
    await registry.tell("a", Add(3))
    before = await registry.get("a")

    await trio.sleep(11)
    assert db.stops == ["a"]
    assert registry.running() == []

    assert await registry.get("a") is not before
    assert await registry.ask("a", Total) == 3
    assert len(db.start_times("a")) == 2


async def test_tell_during_an_idle_stop_is_delivered_to_the_next_instance(
    nursery: trio.Nursery, db: FakeDb, autojump_clock: trio.testing.MockClock
) -> None:
    db.idle_timeout_s = 10
    db.stop_gate = trio.Event()  # on_stop (e.g. a final flush) takes a while
    registry = await start_registry(nursery, db)
    await registry.tell("a", Add(1))
    stale = await registry.get("a")
    await trio.sleep(11)
    assert registry.running() == []
    with pytest.raises(ActorStopped):
        stale.tell(Add(100))

    told = trio.Event()

    async def tell() -> None:
        await registry.tell("a", Add(2))
        told.set()

    nursery.start_soon(tell)
    await trio.testing.wait_all_tasks_blocked()
    assert not told.is_set()
    assert len(db.start_times("a")) == 1  # no second instance while the first is stopping

    db.stop_gate.set()
    await told.wait()
    assert await registry.ask("a", Total) == 3
    assert len(db.start_times("a")) == 2


async def test_concurrent_gets_start_the_actor_once(
    nursery: trio.Nursery, db: FakeDb, autojump_clock: trio.testing.MockClock
) -> None:
    db.start_delay_s = 1
    registry = await start_registry(nursery, db)
    got: list[Actor[RoomMsg]] = []

    async def get() -> None:
        got.append(await registry.get("a"))

    async with trio.open_nursery() as getters:
        for _ in range(10):
            getters.start_soon(get)

    assert len(got) == 10
    assert all(actor is got[0] for actor in got)
    assert db.start_times("a") == [1]


async def test_close_all_drains_queued_messages_then_run_returns(
    db: FakeDb, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            registry = await start_registry(nursery, db)
            gate = trio.Event()
            await registry.tell("a", Wait(gate))
            for n in (1, 2, 3):
                await registry.tell("a", Add(n))
            await registry.tell("b", Add(10))

            async def get_starting() -> None:
                with pytest.raises(ActorStopped):
                    await registry.get("starting")

            await crash(registry, "crashed")  # in its restart backoff at close_all()
            db.start_delay_s = 1
            nursery.start_soon(get_starting)
            await trio.testing.wait_all_tasks_blocked()  # "starting" is in on_start

            registry.close_all()
            assert not registry.is_running
            with pytest.raises(ActorStopped):
                await registry.get("new")
            gate.set()
        # The nursery exited by itself, so registry.run() returned after every actor drained.
    assert db.totals == {"a": 6, "b": 10}
    assert sorted(db.stops) == ["a", "b", "starting"]
    assert len(db.start_times("crashed")) == 1  # not restarted once closing
