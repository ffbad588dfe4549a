"""The registry: starts actors on demand by key and supervises them (restart, backoff, give-up)."""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from actors.errors import ActorStopped, AskTimeout

if TYPE_CHECKING:
    from collections.abc import Callable

    import outcome

    from actors.base import Actor, Asked, Reply

M = TypeVar("M")
R = TypeVar("R")

log = logging.getLogger("relay.actors")


class _Slot(Generic[M]):
    """One key's current actor; `changed` fires whenever it is replaced or the key is given up."""

    def __init__(self) -> None:
        self.actor: Actor[M] | None = None
        self.gave_up = False
        self.changed = trio.Event()

    def set(self, actor: Actor[M] | None) -> None:
        self.actor = actor
        self.changed.set()
        self.changed = trio.Event()


class Registry(Generic[M]):
    """Maps keys to running actors, starting them on first use and restarting them on crashes.

    At most one instance per key is alive at a time: a new one starts only after the previous
    one's task has returned (so `on_stop` has saved what `on_start` will load).

    Resource handling: `run()` owns a nursery holding one supervisor task per live key; each
    supervisor owns the nursery its current actor runs in. An actor that stops on its own
    (idle) frees its key, and the next `get` starts a fresh instance. `close_all()` closes every
    inbox; the actors drain and return, and then `run()` returns.

    Error handling: an `Exception` from an actor is logged with its traceback, `on_crash` is
    called, and a fresh instance from `factory` starts after an exponential backoff
    (`backoff_s`, doubling per recent crash, up to `backoff_max_s`); other keys are not
    disturbed. After more than `max_restarts` crashes within `window_s` the key is given up:
    logged at error level, removed, and pending `get`s raise `ActorStopped`; a later `get` starts
    it anew. A `factory` error raises in the `get` that starts the key (e.g. an unknown kind),
    and gives the key up when it happens on a restart. Nothing is raised to the process.
    Cancellation always passes through.
    """

    def __init__(
        self,
        factory: Callable[[str], Actor[M]],
        *,
        max_restarts: int = 5,
        window_s: float = 60.0,
        backoff_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._factory = factory
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._slots: dict[str, _Slot[M]] = {}
        self._nursery: trio.Nursery | None = None
        self._closing = trio.Event()
        # Counters since start, for /metrics: keys started on demand, fresh instances after a
        # crash, and keys given up (too many crashes, or a factory failing on restart).
        self.starts = 0
        self.restarts = 0
        self.give_ups = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every actor task; run until cancelled, or until `close_all()` and every drain."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._closing.wait()
        finally:
            self._nursery = None

    @property
    def is_running(self) -> bool:
        """Whether `run()` is up and actors can start (for /readyz)."""
        return self._nursery is not None and not self._closing.is_set()

    async def get(self, key: str) -> Actor[M]:
        """Return the running actor for `key`, starting it (once, even if asked concurrently).

        Raises:
            ActorStopped: the key was given up while we waited, or the registry is not running.
            Exception: whatever `factory` raised for `key`.
        """
        while True:
            nursery = self._nursery
            if nursery is None or self._closing.is_set():
                raise ActorStopped(key)
            slot = self._slots.get(key)
            if slot is None:
                actor = self._factory(key)
                slot = self._slots[key] = _Slot()
                self.starts += 1
                nursery.start_soon(self._supervise, key, slot, actor)
            elif slot.actor is not None and slot.actor.accepting:
                return slot.actor
            await slot.changed.wait()  # starting, restarting or stopping
            if slot.gave_up:
                raise ActorStopped(key)

    async def tell(self, key: str, msg: M) -> None:
        """Queue `msg` for `key`'s actor without waiting for inbox space, starting it if needed.

        Raises:
            Overloaded: the actor's inbox is full.
            ActorStopped: as for `get`.
        """
        # No checkpoint between get() seeing an open inbox and tell(), so the message is queued
        # even if an idle stop is due, and run() drains it before stopping.
        (await self.get(key)).tell(msg)

    async def ask(self, key: str, build: Callable[[Reply[R]], M], *, timeout_s: float = 2.0) -> R:
        """`Actor.ask` on `key`'s actor, starting it if needed; `timeout_s` covers the start too."""
        with trio.move_on_after(timeout_s):
            actor = await self.get(key)
            return await actor.ask(build, timeout_s=timeout_s)
        raise AskTimeout(key)

    async def start_ask(
        self, key: str, build: Callable[[Reply[R]], M], *, deadline: float = math.inf
    ) -> Asked[R]:
        """`Actor.start_ask` on `key`'s actor, starting it if needed. Only a wait (for the start
        or for inbox space) is bounded by `deadline` (Trio time); callers bound the answer.

        Raises:
            ActorStopped: as for `get`, or the actor stopped before taking the message.
            AskTimeout: the actor did not start or take the message by `deadline`.
        """
        actor = await self._get_by(key, deadline)
        return await actor.start_ask(build, deadline=deadline)

    async def start_ask_with(
        self,
        key: str,
        build: Callable[[Reply[R]], M],
        on_answer: Callable[[outcome.Outcome[R]], object],
        *,
        deadline: float = math.inf,
    ) -> Reply[R]:
        """`Actor.start_ask_with` on `key`'s actor, starting it if needed; raises as
        `start_ask`."""
        actor = await self._get_by(key, deadline)
        return await actor.start_ask_with(build, on_answer, deadline=deadline)

    async def _get_by(self, key: str, deadline: float) -> Actor[M]:
        actor = self._running(key)  # no deadline scope to set up in the common case
        if actor is None:
            with trio.move_on_at(deadline):
                actor = await self.get(key)
            if actor is None:
                raise AskTimeout(key)
        return actor

    def _running(self, key: str) -> Actor[M] | None:
        slot = self._slots.get(key)
        if slot is None or slot.actor is None or not slot.actor.accepting:
            return None
        return None if self._nursery is None or self._closing.is_set() else slot.actor

    def running(self) -> list[str]:
        """Keys whose actor is up and taking messages (for /readyz and metrics)."""
        return sorted(
            k for k, s in self._slots.items() if s.actor is not None and s.actor.accepting
        )

    def count_running(self) -> int:
        """How many keys have an actor up and taking messages (`running()` without the list)."""
        return sum(1 for s in self._slots.values() if s.actor is not None and s.actor.accepting)

    def close_all(self) -> None:
        """Close every inbox and start no more actors; `run()` returns once all have drained."""
        self._closing.set()
        for slot in self._slots.values():
            if slot.actor is not None:
                slot.actor.close()

    async def _supervise(self, key: str, slot: _Slot[M], actor: Actor[M]) -> None:
        """Run `key`'s actor, restarting it after crashes, until it stops or is given up."""
        crashes: deque[float] = deque()
        try:
            while True:
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(actor.run)
                        slot.set(actor)
                        if self._closing.is_set():  # close_all() ran while it was starting
                            actor.close()
                    return  # idle stop or close(): the key is free again
                except Exception as group:
                    slot.set(None)
                    delay_s = self._crashed(actor, _unwrap(group), crashes)
                if delay_s is None:
                    break
                await trio.sleep(delay_s)
                if self._closing.is_set():
                    return
                try:
                    actor = self._factory(key)
                except Exception:
                    log.exception("actor %r: factory failed on restart; giving up on it", key)
                    break
                self.restarts += 1
            slot.gave_up = True
            self.give_ups += 1
        finally:
            if self._slots.get(key) is slot:
                del self._slots[key]
            slot.set(None)

    def _crashed(self, actor: Actor[M], exc: Exception, crashes: deque[float]) -> float | None:
        """Log a crash and call `on_crash`; return the backoff, or None to give up on the key."""
        delay_s: float | None = None
        now = trio.current_time()
        crashes.append(now)
        while crashes[0] <= now - self._window_s:
            crashes.popleft()
        if len(crashes) > self._max_restarts:
            log.error(
                "actor %r crashed %d times in %g s; giving up on it",
                actor.key,
                len(crashes),
                self._window_s,
                exc_info=exc,
            )
        else:
            delay_s = min(self._backoff_s * 2 ** (len(crashes) - 1), self._backoff_max_s)
            log.error("actor %r crashed; restarting in %g s", actor.key, delay_s, exc_info=exc)
        try:
            actor.on_crash(exc)
        except Exception:
            log.exception("on_crash of actor %r failed", actor.key)
        return delay_s


def _unwrap(exc: Exception) -> Exception:
    """The single error inside the nursery's exception group(s), for logs and `on_crash`."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
