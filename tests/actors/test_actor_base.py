"""Actor on its own: ordering, inbox-full policy, ask/reply, idle stop and close."""

from typing import TYPE_CHECKING

import msgspec
import outcome
import pytest
import trio
import trio.testing

from actors import Actor, ActorStopped, AskTimeout, Overloaded, Reply

if TYPE_CHECKING:
    from actors.base import Asked


class Add(msgspec.Struct, tag="add", frozen=True):
    n: int


class Total(msgspec.Struct, tag="total", frozen=True):
    reply: Reply[int]


class Divide(msgspec.Struct, tag="divide", frozen=True):
    by: int
    reply: Reply[float]


class Wait(msgspec.Struct, tag="wait", frozen=True):
    gate: trio.Event


class Quit(msgspec.Struct, tag="quit", frozen=True):
    """Stop without answering."""

    reply: Reply[int]


CounterMsg = Add | Total | Divide | Wait | Quit


class Counter(Actor[CounterMsg]):
    inbox_size = 4

    def __init__(self, key: str, *, idle_timeout_s: float | None = None) -> None:
        super().__init__(key)
        self.idle_timeout_s = idle_timeout_s
        self.seen: list[int] = []
        self.stopped = False

    async def handle(self, msg: CounterMsg) -> None:
        match msg:
            case Add(n):
                self.seen.append(n)
            case Total(reply):
                reply.send(sum(self.seen))
            case Divide(by, reply):
                try:
                    reply.send(sum(self.seen) / by)
                except ZeroDivisionError as exc:
                    reply.fail(exc)
            case Wait(gate):
                await gate.wait()
            case Quit():
                self.close()

    async def on_stop(self) -> None:
        self.stopped = True


async def busy_counter(nursery: trio.Nursery) -> tuple[Counter, trio.Event]:
    """A running counter stuck in a handler (inbox empty) until the returned gate is set."""
    counter = Counter("c")
    await nursery.start(counter.run)
    gate = trio.Event()
    counter.tell(Wait(gate))
    await trio.testing.wait_all_tasks_blocked()
    return counter, gate


async def test_messages_are_handled_in_send_order(nursery: trio.Nursery) -> None:
    counter = Counter("c")
    await nursery.start(counter.run)
    for n in range(20):
        await counter.send(Add(n))  # 20 > inbox_size: exercises the waits for space too

    assert await counter.ask(Total) == sum(range(20))
    assert counter.seen == list(range(20))


async def test_tell_raises_overloaded_when_full_and_send_waits_for_space(
    nursery: trio.Nursery,
) -> None:
    counter, gate = await busy_counter(nursery)
    for n in range(Counter.inbox_size):
        counter.tell(Add(n))
    with pytest.raises(Overloaded) as overloaded:
        counter.tell(Add(-1))
    assert isinstance(overloaded.value, trio.TooSlowError)
    assert overloaded.value.key == "c"

    sent = trio.Event()

    async def send_one_more() -> None:
        await counter.send(Add(99))
        sent.set()

    nursery.start_soon(send_one_more)
    await trio.testing.wait_all_tasks_blocked()
    assert not sent.is_set()

    gate.set()
    await sent.wait()
    assert await counter.ask(Total) == sum(range(Counter.inbox_size)) + 99
    assert counter.seen == [*range(Counter.inbox_size), 99]


async def test_ask_returns_the_reply_or_raises_the_failure(nursery: trio.Nursery) -> None:
    counter = Counter("c")
    await nursery.start(counter.run)
    counter.tell(Add(6))

    assert await counter.ask(lambda reply: Divide(4, reply)) == 1.5
    with pytest.raises(ZeroDivisionError):
        await counter.ask(lambda reply: Divide(0, reply))
    assert await counter.ask(Total) == 6  # a failed ask leaves the actor running


async def test_ask_times_out_and_a_late_reply_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    counter, gate = await busy_counter(nursery)
    start = trio.current_time()

    with pytest.raises(AskTimeout) as timeout:
        await counter.ask(Total, timeout_s=1.5)
    assert trio.current_time() - start == pytest.approx(1.5)
    assert isinstance(timeout.value, trio.TooSlowError)

    gate.set()  # the actor now answers the abandoned ask into a closed channel
    counter.tell(Add(2))
    assert await counter.ask(Total) == 2


async def test_ask_raises_actor_stopped_at_once_when_the_actor_stops_without_answering(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    counter = Counter("c")
    await nursery.start(counter.run)
    start = trio.current_time()

    with pytest.raises(ActorStopped):
        await counter.ask(Quit, timeout_s=10)
    assert trio.current_time() == start  # not at the timeout

    assert counter.stopped
    with pytest.raises(ActorStopped):
        counter.tell(Add(1))
    with pytest.raises(ActorStopped):
        await counter.send(Add(1))
    with pytest.raises(ActorStopped):
        await counter.ask(Total)


async def test_idle_actor_stops_itself(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    counter = Counter("c", idle_timeout_s=10)
    await nursery.start(counter.run)

    await trio.sleep(9)
    counter.tell(Add(1))  # restarts the idle timer
    await trio.sleep(9)
    assert counter.accepting
    assert not counter.stopped

    await trio.sleep(2)
    assert counter.stopped
    assert not counter.accepting
    assert counter.seen == [1]
    with pytest.raises(ActorStopped):
        counter.tell(Add(2))


async def test_close_drains_queued_messages_then_run_returns() -> None:
    async with trio.open_nursery() as nursery:
        counter, gate = await busy_counter(nursery)
        for n in (1, 2, 3):
            counter.tell(Add(n))
        counter.close()
        with pytest.raises(ActorStopped):
            counter.tell(Add(4))
        gate.set()
    # The nursery exited by itself, so run() returned.
    assert counter.seen == [1, 2, 3]
    assert counter.stopped


class Batching(Counter):
    batch_max = 3

    def __init__(self, log: list[object]) -> None:
        super().__init__("b")
        self.log = log

    async def handle(self, msg: CounterMsg) -> None:
        if isinstance(msg, Add):
            self.log.append(msg.n)
        await super().handle(msg)


async def test_batch_max_handles_queued_messages_without_yielding(nursery: trio.Nursery) -> None:
    log: list[object] = []
    actor = Batching(log)
    await nursery.start(actor.run)
    gate = trio.Event()
    actor.tell(Wait(gate))
    await trio.testing.wait_all_tasks_blocked()
    for n in range(1, 5):
        actor.tell(Add(n))

    async def ticker() -> None:
        while True:  # runs whenever the actor yields
            log.append("tick")
            await trio.lowlevel.checkpoint()

    nursery.start_soon(ticker)
    gate.set()
    assert await actor.ask(Total) == 10
    # Wait's turn takes Add 1 and 2 along; the next turn Add 3 and 4 (and Total).
    assert log.index(2) == log.index(1) + 1
    assert log.index(4) == log.index(3) + 1
    assert actor.seen == [1, 2, 3, 4]


async def test_start_ask_queues_without_a_checkpoint_while_there_is_room(
    nursery: trio.Nursery,
) -> None:
    counter, gate = await busy_counter(nursery)
    with trio.testing.assert_no_checkpoints():
        asked = await counter.start_ask(Total)
    with pytest.raises(trio.WouldBlock):
        asked.answer_nowait()  # the actor is still busy: the ask stays open
    gate.set()
    assert await asked.answer() == 0


async def test_answer_nowait_returns_the_reply_raises_the_failure_or_actor_stopped(
    nursery: trio.Nursery,
) -> None:
    counter = Counter("c")
    await nursery.start(counter.run)
    counter.tell(Add(3))
    total = await counter.start_ask(Total)
    divide: Asked[float] = await counter.start_ask(lambda reply: Divide(0, reply))
    quit_ = await counter.start_ask(Quit)
    await trio.testing.wait_all_tasks_blocked()

    assert total.answer_nowait() == 3
    with pytest.raises(ZeroDivisionError):
        divide.answer_nowait()
    with pytest.raises(ActorStopped):
        quit_.answer_nowait()


async def test_start_ask_with_hands_the_answer_to_the_callback_in_the_actors_task(
    nursery: trio.Nursery,
) -> None:
    counter, gate = await busy_counter(nursery)
    answers: list[tuple[object, trio.lowlevel.Task]] = []

    def keep(result: object) -> None:
        answers.append((result, trio.lowlevel.current_task()))

    await counter.start_ask_with(Total, keep)  # the inbox takes four
    await counter.start_ask_with(lambda reply: Divide(0, reply), keep)
    dropped = await counter.start_ask_with(Total, keep)
    dropped.cancel()  # the asker stopped waiting: its answer goes nowhere
    await counter.start_ask_with(Quit, keep)  # stops without answering: the stop answers it
    gate.set()
    await trio.testing.wait_all_tasks_blocked()

    results = [result for result, _ in answers]
    assert len(results) == 3  # `dropped` got nothing
    assert results[0] == outcome.Value(0)
    assert isinstance(results[1], outcome.Error)
    assert isinstance(results[1].error, ZeroDivisionError)
    assert isinstance(results[2], outcome.Error)
    assert isinstance(results[2].error, ActorStopped)
    assert trio.lowlevel.current_task() not in {task for _, task in answers}
    assert not counter._asks
