"""Gateway sessions in cluster mode: each is served by one node at a time, which holds its lease
(`session:<id>`) and writes its replay buffer to Redis (relay.cluster.replay), so that its client
can RESUME on any node.

`ClusterSessions` is what the gateway calls (relay.gateway.endpoint):
- `await started(session_id)` before a new session's READY: its lease (a new id: always free
  unless Redis fails; then False and the session is resumable on this node only);
- `opened(session)` right after READY, or after a takeover: its frames are written from then on;
- `ended(session_id)` when it is over (logout, its resume window passed, resync): its keys are
  deleted and its lease released;
- `await take_over(session_id, seq)` for a RESUME of a session this node does not have: its
  lease, then its state and every frame after `seq` (`Resumed`), or None: INVALID_SESSION.

Taking a session over waits for its lease: a node that died holds it until it expires
(`lease_ttl_s`); a node that shut down cleanly released it. A holder that is alive renews it
(its expiry moves forward twice while this node looks, within 2/3 of the ttl): then the RESUME
is refused (INVALID_SESSION) rather than taking a session another node still writes.

Resource handling: `run()` owns the replay log's writer and the renewal task, which renews every
lease this node holds in one script call every ttl/3 and releases ended sessions' leases in
batches. A lease that could not be renewed before its local expiry, or whose renewal
was refused, is lost: the session stops being written here and `on_lost(session_id)` ends it on
this node (its client RESUMEs elsewhere). When `run()` is cancelled (shutdown) it writes what
is queued and releases every lease (bounded, shielded), keeping the replay buffers: the clients
RESUME on other nodes. The node calls `leave()` first thing when it stops, so that no renewal
happens while its clients reconnect elsewhere.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import trio

from relay.cluster.envelope import server_topic, user_topic
from relay.cluster.lease import Leases
from relay.cluster.replay import ReplayLog, Resumed, SessionState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    import coredis

    from relay.cluster.lease import Lease
    from relay.cluster.topiclog import Mark

    # (the old node, the session's marks, its topics now; timeout) -> the catch-up, or None
    CatchUp = Callable[
        [str, dict[str, Mark], list[str], float], Awaitable[Callable[[Any], int] | None]
    ]

log = logging.getLogger("relay.cluster")

POLL_S = 0.05  # between two looks at a lease another node holds
CATCH_UP_S = 5.0  # at most this long to read what a session taken over missed from the logs
LEAVE_S = 1.5  # at shutdown: writing what is queued and releasing the leases


class GatewaySession(Protocol):
    """What a session's state in Redis is made of (relay.gateway.session.Session)."""

    id: str
    user_id: int
    auth_session_id: int
    encoding: str
    intents: int
    seq: int


class ClusterSessions:
    """This node's gateway sessions in Redis: leases and replay buffers (module doc)."""

    def __init__(
        self,
        redis: coredis.Redis[bytes],
        node: str,
        *,
        ttl_s: float,
        replay_size: int,
        window_s: float,
        prefix: str = "relay:",
    ) -> None:
        self.redis = redis
        self.node = node
        self.leases = Leases(redis, ttl_s=ttl_s, prefix=prefix)
        self.log = ReplayLog(redis, node, size=replay_size, window_s=window_s, prefix=prefix)
        self._held: dict[str, Lease] = {}
        self._release: list[Lease] = []
        self._wake = trio.Event()
        # Told the id of a session whose lease this node lost (ends it here): the gateway's.
        self.on_lost: Callable[[str], object] | None = None
        self.taken_over = 0  # sessions resumed here from another node
        # Reads the topic logs for a session taken over (relay.cluster.fanout.catch_up).
        self.catch_up: CatchUp | None = None
        self._left = False  # shutting down: no more renewals, every lease released

    def name(self, session_id: str) -> str:
        return f"session:{session_id}"

    # -- the gateway's calls -----------------------------------------------------------------

    async def started(self, session_id: str) -> bool:
        """Lease a new session; False (resumable here only) if Redis did not answer, or the
        node is shutting down."""
        if self._left:
            return False
        try:
            with trio.fail_after(self.leases.ttl_s / 3):
                lease = await self.leases.acquire(self.name(session_id), self.node)
        except Exception:
            log.warning("session lease not acquired", extra={"session": session_id}, exc_info=True)
            return False
        if lease is None:  # a random id already taken: not ours to write
            return False
        self._held[session_id] = lease
        return True

    def opened(self, session: GatewaySession) -> None:
        """Write the session's frames from its `seq` on (its lease is held)."""
        if session.id in self._held:
            state = SessionState(
                session_id=session.id,
                user_id=session.user_id,
                auth_session_id=session.auth_session_id,
                encoding=session.encoding,
                intents=session.intents,
                seq=session.seq,
                node=self.node,
            )
            self.log.open(state)

    def ended(self, session_id: str) -> None:
        """The session is over: its keys go, its lease is released."""
        self.log.end(session_id)
        lease = self._held.pop(session_id, None)
        if lease is not None:
            self._release.append(lease)
            self._wake.set()

    def given_back(self, session_id: str) -> None:
        """Not served here after all (a RESUME by another user): its lease is released, its
        buffer kept."""
        self.taken_over -= 1
        self.log.leave(session_id)
        lease = self._held.pop(session_id, None)
        if lease is not None:
            self._release.append(lease)
            self._wake.set()

    def left(self, session_id: str) -> None:
        """This node stops serving the session and keeps its buffer (its lease was lost)."""
        self.log.leave(session_id)
        self._held.pop(session_id, None)

    async def take_over(self, session_id: str, seq: int) -> Resumed | None:
        """The session's lease, state and frames after `seq`, for a RESUME here; None if it
        cannot be resumed here (unknown, gone, its holder alive, or Redis failing)."""
        try:
            lease = await self._wait_for_lease(session_id)
            if lease is None:
                return None
            self._held[session_id] = lease
            resumed = await self.log.resume(session_id, seq)
        except Exception:
            log.warning("session not taken over", extra={"session": session_id}, exc_info=True)
            resumed = None
        if resumed is None:
            lease = self._held.pop(session_id, None)
            if lease is not None:
                self._release.append(lease)
                self._wake.set()
            return None
        self.taken_over += 1
        return resumed

    async def missed(
        self, state: SessionState, server_ids: Iterable[int]
    ) -> Callable[[Any], int] | None:
        """For a session taken over: the function that delivers it (registered in the hub,
        with no await since this returned) what its topics carried after its frames, filtered
        as live; None (INVALID_SESSION) when that cannot be known."""
        if self.catch_up is None:
            return None
        topics = [user_topic(state.user_id), *(server_topic(s) for s in server_ids)]
        return await self.catch_up(state.node, state.marks, topics, CATCH_UP_S)

    async def _wait_for_lease(self, session_id: str) -> Lease | None:
        """The session's lease, once its holder's has expired; None at once if the session has
        no state in Redis, or as soon as the holder is seen renewing it (alive)."""
        name = self.name(session_id)
        key = self.leases.key(name)
        state_key = self.log.state_key(session_id)
        deadline = trio.current_time() + self.leases.ttl_s + POLL_S * 2
        last_ttl: int | None = None
        renewals = 0
        with trio.fail_after(self.leases.ttl_s * 2):
            while True:
                if not await self.redis.exists([state_key]):
                    return None  # never written, ended or expired: nothing to resume
                lease = await self.leases.acquire(name, self.node)
                if lease is not None:
                    return lease
                ttl = await self.redis.pttl(key)
                if last_ttl is not None and ttl > last_ttl:
                    # Renewed since the last look. Twice: its node is alive and serving it
                    # (once could be the last renewal of a node that is shutting down).
                    renewals += 1
                    if renewals >= 2:
                        return None
                if ttl > 0:
                    last_ttl = ttl
                if trio.current_time() >= deadline:
                    return None
                await trio.sleep(POLL_S)

    # -- the tasks ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.log.run)
                nursery.start_soon(self._keep)
                task_status.started()
        finally:
            if not self._left:
                with trio.move_on_after(LEAVE_S, shield=True):
                    await self._leave(writer=True)

    async def leave(self) -> None:
        """At the start of shutdown (while `run` still runs): renew nothing more, write what is
        queued, stop writing every session and release their leases, so that their clients can
        RESUME on another node at once (a renewal seen meanwhile would read as a live node)."""
        await self._leave(writer=False)

    async def _leave(self, *, writer: bool) -> None:
        """What is queued is written (by a writer of its own if the log's task has ended), then
        every session stops being written here and every lease is released; the buffers stay
        for RESUMEs elsewhere."""
        self._left = True
        with trio.move_on_after(LEAVE_S / 2):  # a batch cut off by a cancellation never is
            async with trio.open_nursery() as nursery:
                if writer:
                    nursery.start_soon(self.log.run)
                await self.log.flushed()
                nursery.cancel_scope.cancel()
        for session_id in self._held:
            self.log.leave(session_id)
        leases = list(self._held.values()) + self._release
        self._held.clear()
        self._release = []
        if leases:
            try:
                await self.leases.release_many(leases)
            except Exception:  # they expire within the ttl anyway
                log.warning("session leases not released", exc_info=True)

    async def _keep(self) -> None:
        every = self.leases.ttl_s / 3
        next_renewal = trio.current_time() + every
        while True:
            with trio.move_on_at(next_renewal):
                await self._wake.wait()
            self._wake = trio.Event()
            if self._release:
                released, self._release = self._release, []
                try:
                    with trio.fail_after(every):
                        await self.leases.release_many(released)
                except Exception:  # they expire within the ttl anyway
                    log.warning("session leases not released", exc_info=True)
            if trio.current_time() >= next_renewal and not self._left:
                next_renewal = trio.current_time() + every
                await self._renew()

    async def _renew(self) -> None:
        held = list(self._held.items())
        if not held:
            return
        try:
            with trio.fail_after(self.leases.ttl_s / 3):
                renewed = await self.leases.renew_many([lease for _, lease in held])
        except Exception:
            log.warning("session leases not renewed", exc_info=True)
            renewed = [True] * len(held)  # lost only once their local expiry passes
        now = trio.current_time()
        for (session_id, lease), ok in zip(held, renewed, strict=True):
            if (not ok or lease.expires_at <= now) and self._held.get(session_id) is lease:
                log.warning("session lease lost", extra={"session": session_id})
                self.left(session_id)
                if self.on_lost is not None:
                    self.on_lost(session_id)
