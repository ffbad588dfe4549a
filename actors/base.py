"""The actor: one Trio task that owns its state, reached only through a bounded inbox."""

from __future__ import annotations

import contextlib
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
    """The answering half of an `ask`: one value or one exception, and never blocks the actor."""

    __slots__ = ("_send",)

    def __init__(self, send: trio.MemorySendChannel[outcome.Outcome[R]]) -> None:
        self._send = send

    def send(self, value: R) -> None:
        """Answer with `value`."""
        self._put(outcome.Value(value))

    def fail(self, exc: Exception) -> None:
        """Answer with an error: `ask` raises `exc` in the asker."""
        self._put(outcome.Error(exc))

    def _put(self, result: outcome.Outcome[R]) -> None:
        # Closing after the first answer makes later answers no-ops; a closed or broken channel
        # means the asker timed out and nobody is listening any more.
        with self._send, contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait(result)


class Asked(Generic[R]):
    """An ask whose message is queued (`Actor.start_ask`); `answer()` waits for the reply.

    Resource handling: the actor keeps the reply channel (to close it if it stops without
    answering) until `answer()` returns or `close()` is called; whoever holds an `Asked` must do
    one of the two, in a `finally` if it may be cancelled.
    """

    __slots__ = ("_actor", "_recv", "_send")

    def __init__(
        self,
        actor: Actor[Any],
        send: trio.MemorySendChannel[outcome.Outcome[R]],
        recv: trio.MemoryReceiveChannel[outcome.Outcome[R]],
    ) -> None:
        self._actor = actor
        self._send = send
        self._recv = recv

    async def answer(self) -> R:
        """Wait for the actor's answer (no timeout of its own: callers bound the wait).

        Raises:
            ActorStopped: the actor stopped or crashed without answering.
            Exception: whatever the actor passed to `reply.fail()`.
        """
        try:
            async for result in self._recv:  # ends empty if the actor stops first
                return result.unwrap()
            raise ActorStopped(self._actor.key)
        finally:
            self.close()

    def answer_nowait(self) -> R:
        """The answer if it has come; else raises trio.WouldBlock and the ask stays open.

        Raises:
            trio.WouldBlock: no answer yet.
            ActorStopped, Exception: as `answer()`.
        """
        try:
            result = self._recv.receive_nowait()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self.close()
            raise ActorStopped(self._actor.key) from None
        self.close()
        return result.unwrap()

    def close(self) -> None:
        """Stop waiting: a later answer goes nowhere. Idempotent, never blocks."""
        self._actor._asks.discard(self._send)
        self._recv.close()


class Actor(ABC, Generic[M]):
    """One task owning one bounded inbox and all of the actor's state.

    Subclasses implement `handle()` (a `match` over frozen Structs) and may override the
    `on_start`, `on_stop` and `on_crash` hooks. Run it with `await nursery.start(actor.run)`,
    usually through a `Registry`.

    Resource handling: `run()` owns the inbox's receive half and closes it when it returns, so
    later `tell`/`send` raise `ActorStopped` instead of queueing into the void. `close()` (or
    `idle_timeout_s` without a message) closes the send half; `run()` then handles everything
    already queued, awaits `on_stop()` and returns. Each pending `ask` registers its reply
    channel here, and `run()` closes them all on the way out, so an asker whose message will
    never be answered learns it at once rather than at its timeout.

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
        self._asks: set[trio.MemorySendChannel[Any]] = set()

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
        reply_send, reply_recv = trio.open_memory_channel[outcome.Outcome[R]](1)
        self._asks.add(reply_send)
        asked = Asked(self, reply_send, reply_recv)
        queued = False
        msg = build(Reply(reply_send))
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
                asked.close()
        return asked

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
            for reply_send in self._asks:
                reply_send.close()

    @abstractmethod
    async def handle(self, msg: M) -> None:
        """Handle one message; the only place the actor's state changes after `on_start`."""

    async def on_start(self) -> None:
        """Load state (e.g. from the database) before the first message."""

    async def on_stop(self) -> None:
        """Clean up after a normal stop (idle or `close()`); not called after a crash."""

    def on_crash(self, exc: Exception) -> None:
        """Called by the supervisor after a crash, e.g. to close subscribers' outboxes."""
