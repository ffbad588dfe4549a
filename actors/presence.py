"""The presence actor: one per online user, merging the statuses of the user's sessions.

A user is seen with the status most recently set by any of their sessions that is not
`invisible`; with none left (all invisible, or all gone) they are `offline`. When the last
session ends the actor waits `grace_s` before announcing `offline`, so a quick reconnect (a page
reload, a RESUME) does not flicker; then it stops. Every change of the merged status is handed
to `announce`, which the hub turns into PRESENCE_UPDATE for everyone sharing a server.

Resource handling: `run()` owns one nursery for the grace timers; a timer only sends the actor a
`GraceOver` carrying the generation it was started for, so a stale timer is ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import trio

from actors.base import Actor

if TYPE_CHECKING:
    from collections.abc import Callable


class SetStatus(msgspec.Struct, frozen=True):
    session_id: str
    status: str  # online | idle | dnd | invisible
    activity: str | None = None


class SessionGone(msgspec.Struct, frozen=True):
    session_id: str


class GraceOver(msgspec.Struct, frozen=True):
    generation: int


PresenceMsg = SetStatus | SessionGone | GraceOver


class PresenceActor(Actor[PresenceMsg]):
    def __init__(
        self,
        key: str,
        user_id: int,
        announce: Callable[[int, str, str | None], None],
        *,
        grace_s: float,
    ) -> None:
        super().__init__(key)
        self.user_id = user_id
        self._announce = announce
        self._grace_s = grace_s
        self._sessions: dict[str, tuple[int, str, str | None]] = {}  # id -> (order, status, act)
        self._order = 0
        self._generation = 0
        self._seen: tuple[str, str | None] = ("offline", None)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await super().run(task_status=task_status)
            nursery.cancel_scope.cancel()

    @property
    def status(self) -> tuple[str, str | None]:
        return self._seen

    async def handle(self, msg: PresenceMsg) -> None:
        match msg:
            case SetStatus(session_id, status, activity):
                self._order += 1
                self._generation += 1  # a session is here: any pending grace timer is stale
                self._sessions[session_id] = (self._order, status, activity)
                self._update()
            case SessionGone(session_id):
                self._sessions.pop(session_id, None)
                if self._sessions:
                    self._update()
                else:
                    self._generation += 1
                    assert self._nursery is not None
                    self._nursery.start_soon(self._grace_timer, self._generation)
            case GraceOver(generation) if generation == self._generation and not self._sessions:
                self._update()
                self.close()
            case GraceOver():
                pass

    def _update(self) -> None:
        visible = [v for v in self._sessions.values() if v[1] != "invisible"]
        seen: tuple[str, str | None] = ("offline", None)
        if visible:
            _, status, activity = max(visible)
            seen = (status, activity)
        if seen != self._seen:
            self._seen = seen
            self._announce(self.user_id, *seen)

    async def _grace_timer(self, generation: int) -> None:
        await trio.sleep(self._grace_s)
        if self.accepting:
            self.tell(GraceOver(generation))
