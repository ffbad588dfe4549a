"""The actor: one Trio task that owns its state, reached only through a bounded inbox."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import outcome
import trio

from actors.errors import ActorStopped, AskTimeout, Overloaded

if TYPE_CHECKING:
    from collections.abc import Callable

M = TypeVar("M")
R = TypeVar("R")


class Reply(Generic[R]):
    """The answering half of an `ask`: one value or one exception, and never blocks the actor.

    The first answer counts; later ones (and answers after the asker stopped waiting) are
    dropped. The answer goes to the asker's `Asked`, or to the callback it gave
    (`Actor.start_ask_with`), called at once in the answering task.
    """

    __slots__ = ("_actor", "_on_answer")

    def __init__(
        self, actor: Actor[Any], on_answer: Callable[[outcome.Outcome[R]], object]
    ) -> None:
        self._actor = actor
        self._on_answer: Callable[[outcome.Outcome[R]], object] | None = on_answer

    def send(self, value: R) -> None:
        """Answer with `value`."""
        self._put(outcome.Value(value))

    def fail(self, exc: Exception) -> None:
        """Answer with an error: `ask` raises `exc` in the asker."""
        self._put(outcome.Error(exc))

    def _put(self, result: outcome.Outcome[R]) -> None:
        on_answer, self._on_answer = self._on_answer, None
        if on_answer is not None:
            self._actor._asks.discard(self)
            on_answer(result)

    def cancel(self) -> None:
        """The asker stopped waiting: a later answer goes nowhere. Idempotent."""
        self._on_answer = None
        self._actor._asks.discard(self)


class Asked(Generic[R]):
    """An ask whose message is queued (`Actor.start_ask`); `answer()` waits for the reply.

    Resource handling: the actor keeps the reply (to answer ActorStopped if it stops without
    answering) until it is answered or `close()` is called; whoever holds an `Asked` must await
    `answer()` or call `close()`, in a `finally` if it may be cancelled.
    """

    __slots__ = ("_result", "_waiter", "reply")

    def __init__(self, actor: Actor[Any]) -> None:
        self.reply: Reply[R] = Reply(actor, self._answered)
        self._result: outcome.Outcome[R] | None = None
        self._waiter: trio.lowlevel.Task | None = None

    def _answered(self, result: outcome.Outcome[R]) -> None:
        self._result = result
        if self._waiter is not None:
            task, self._waiter = self._waiter, None
            trio.lowlevel.reschedule(task)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def answer(self) -> R:
        """Wait for the actor's answer (no timeout of its own: callers bound the wait).

        Raises:
            ActorStopped: the actor stopped or crashed without answering.
            Exception: whatever the actor passed to `reply.fail()`.
        """
        try:
            if self._result is None:
                self._waiter = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort)
            else:
                await trio.lowlevel.checkpoint()
            return self.answer_nowait()
        finally:
            self.close()

    def answer_nowait(self) -> R:
        """The answer if it has come; else raises trio.WouldBlock and the ask stays open.

        Raises:
            trio.WouldBlock: no answer yet.
            ActorStopped, Exception: as `answer()`.
        """
        result = self._result
        if result is None:
            raise trio.WouldBlock
        return result.unwrap()

    def close(self) -> None:
        """Stop waiting: a later answer goes nowhere. Idempotent, never blocks."""
        self.reply.cancel()


class Actor(ABC, Generic[M]):
    """One task owning one bounded inbox and all of the actor's state.

    Subclasses implement `handle()` (a `match` over frozen Structs) and may override the
    `on_start`, `on_stop` and `on_crash` hooks. Run it with `await nursery.start(actor.run)`,
    usually through a `Registry`.

    Resource handling: `run()` owns the inbox's receive half and closes it when it returns, so
    later `tell`/`send` raise `ActorStopped` instead of queueing into the void. `close()` (or
    `idle_timeout_s` without a message) closes the send half; `run()` then handles everything
    already queued, awaits `on_stop()` and returns. Each pending `ask` registers its reply
    here, and `run()` answers them all with ActorStopped on the way out, so an asker whose
    message will never be answered learns it at once rather than at its timeout.

    Error handling: an exception from `on_start`, `handle` or `on_stop` ends `run()` and
    propagates to the owning nursery (the registry's supervisor logs it, calls `on_crash` and
    restarts a fresh instance). Messages still queued at a crash are dropped; their askers get
    `ActorStopped`.
    """

    inbox_size: ClassVar[int] = 256
    idle_timeout_s: float | None = None  # stop after this long without a message; None: never
    # Messages handled per turn: up to batch_max that are already queued are handled before
    # the actor yields. A fan-out actor sets it higher, so that under load its receivers'
    # writers find several frames queued and send them in one write.
    batch_max: ClassVar[int] = 1

    def __init__(self, key: str) -> None:
        self.key = key
        self._inbox_send, self._inbox = trio.open_memory_channel[M](self.inbox_size)
        self._accepting = True
        self._asks: set[Reply[Any]] = set()  # asked of this actor, not answered yet

    @property
    def accepting(self) -> bool:
        """Whether the inbox is still open to new messages."""
        return self._accepting

    def tell(self, msg: M) -> None:
        """Queue `msg` without blocking; the caller picks the policy when the inbox is full.

        Raises:
            Overloaded: the inbox is full.
            ActorStopped: the actor has stopped or is stopping.
        """
        try:
            self._inbox_send.send_nowait(msg)
        except trio.WouldBlock:
            raise Overloaded(self.key) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ActorStopped(self.key) from None

    async def send(self, msg: M) -> None:
        """Queue `msg`, waiting for space: backpressure to the caller.

        Raises:
            ActorStopped: the actor has stopped or is stopping.
        """
        try:
            await self._inbox_send.send(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ActorStopped(self.key) from None

    async def ask(self, build: Callable[[Reply[R]], M], *, timeout_s: float = 2.0) -> R:
        """Send `build(reply)` and wait for the actor to answer through `reply`.

        The reply stays tied to this actor: if it stops before anyone answers (even after
        handing `reply` on to another actor), the asker gets `ActorStopped`.

        Raises:
            AskTimeout: no answer within `timeout_s` (including any wait for inbox space).
            ActorStopped: the actor stopped or crashed without answering.
            Exception: whatever the actor passed to `reply.fail()`.
        """
        with trio.move_on_after(timeout_s):
            asked = await self.start_ask(build)
            return await asked.answer()
        raise AskTimeout(self.key)

    async def start_ask(
        self, build: Callable[[Reply[R]], M], *, deadline: float = math.inf
    ) -> Asked[R]:
        """The first half of `ask`: queue `build(reply)` (waiting for inbox space) and return
        as soon as it is queued (at once, without a checkpoint, if the inbox has room). A
        caller that must keep several asks in order queues them one after the other and awaits
        their answers later (`Asked.answer`).

        Raises:
            ActorStopped: the actor has stopped or is stopping.
            AskTimeout: the inbox had no room by `deadline` (Trio time).
        """
        asked: Asked[R] = Asked(self)
        await self._queue_ask(build, asked.reply, deadline)
        return asked

    async def start_ask_with(
        self,
        build: Callable[[Reply[R]], M],
        on_answer: Callable[[outcome.Outcome[R]], object],
        *,
        deadline: float = math.inf,
    ) -> Reply[R]:
        """`start_ask`, with the answer (or ActorStopped) passed to `on_answer` in the answering
        task instead of to an `Asked` (no task switch). `on_answer` must not raise or block.
        Returns the reply, whose `cancel()` stops the answer from reaching `on_answer`.

        Raises:
            ActorStopped, AskTimeout: as `start_ask`.
        """
        reply = Reply(self, on_answer)
        await self._queue_ask(build, reply, deadline)
        return reply

    async def _queue_ask(
        self, build: Callable[[Reply[R]], M], reply: Reply[R], deadline: float
    ) -> None:
        self._asks.add(reply)
        queued = False
        msg = build(reply)
        try:
            try:
                self.tell(msg)  # no checkpoint (and no deadline scope) while the inbox has room
            except Overloaded:
                with trio.move_on_at(deadline):
                    await self.send(msg)
                    queued = True
                if not queued:
                    raise AskTimeout(self.key) from None
            queued = True
        finally:
            if not queued:  # cancelled or refused: nobody will wait for this reply
                reply.cancel()

    def close(self) -> None:
        """Stop taking messages; `run()` handles what is queued, awaits `on_stop()` and returns."""
        self._accepting = False
        self._inbox_send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start, then handle messages in arrival order until closed or idle."""
        idle_s = math.inf if self.idle_timeout_s is None else self.idle_timeout_s
        try:
            with self._inbox:
                await self.on_start()
                task_status.started()
                burst = 0  # messages handled since the actor last waited or yielded
                while True:
                    try:
                        msg = self._inbox.receive_nowait()  # no idle deadline to set up
                    except trio.WouldBlock:
                        burst = 0
                        try:
                            with trio.fail_after(idle_s):
                                msg = await self._inbox.receive()
                        except trio.TooSlowError:
                            self.close()  # then drain anything that raced in with the timeout
                            continue
                        except trio.EndOfChannel:
                            break
                    except trio.EndOfChannel:
                        break
                    await self.handle(msg)
                    burst += 1
                    if burst >= self.batch_max:
                        burst = 0
                        await trio.lowlevel.checkpoint()
                await self.on_stop()
        finally:
            self.close()
            for reply in list(self._asks):  # answered now: nobody else will
                reply.fail(ActorStopped(self.key))

    @abstractmethod
    async def handle(self, msg: M) -> None:
        """Handle one message; the only place the actor's state changes after `on_start`."""

    async def on_start(self) -> None:
        """Load state (e.g. from the database) before the first message."""

    async def on_stop(self) -> None:
        """Clean up after a normal stop (idle or `close()`); not called after a crash."""

    def on_crash(self, exc: Exception) -> None:
        """Called by the supervisor after a crash, e.g. to close subscribers' outboxes."""
