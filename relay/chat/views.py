"""The gateway's permission cache: per server, a snapshot of what channel visibility depends on,
so routing an event costs dict lookups, not queries.

Correctness rests on one rule: every change that can alter who sees a channel (roles, who holds
them, overwrites, channels, ownership, membership) calls `invalidate(server_id)` right after its
write committed (the REST routes do, through relay.rest.visibility). The next event loads a fresh
snapshot. A load that an invalidation overtakes is thrown away and done again, so a snapshot
older than the last change is never kept.

Cost: one snapshot (roles, channels with overwrites, members' roles) per server with someone
online; `can_view` answers from a memo per (user, channel), computed by relay.permissions on
first use. A thread is seen by whoever sees its parent (relay.permissions gives a thread node its
parent's overwrites); `visible`, which diffs what a change showed or hid, leaves threads out:
their parent's CHANNEL_* says it all. Snapshots of servers nobody online is in are dropped (`drop`).

Resource handling: plain state on the Trio thread, like the hub; loads are reads in the store's
worker threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from relay.permissions import VIEW, Member, compute

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from relay.storage.audience import ServerSnapshot

MEMO_LIMIT = 200_000  # (user, channel) answers kept per snapshot before the memo starts over


class ServerView:
    """One server's snapshot, with memoized answers."""

    __slots__ = ("_memo", "snapshot")

    def __init__(self, snapshot: ServerSnapshot) -> None:
        self.snapshot = snapshot
        self._memo: dict[tuple[int, int], bool] = {}

    @property
    def server_id(self) -> int:
        return self.snapshot.server.id

    def has_channel(self, channel_id: int) -> bool:
        return channel_id in self.snapshot.server.channels

    def channel_ids(self) -> Iterable[int]:
        return self.snapshot.server.channels.keys()

    def holders(self, role_id: int) -> set[int]:
        """The members who hold a role (not @everyone: everybody has that one)."""
        return {u for u, roles in self.snapshot.member_roles.items() if role_id in roles}

    def can_view(self, user_id: int, channel_id: int) -> bool:
        key = (user_id, channel_id)
        seen = self._memo.get(key)
        if seen is None:
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            roles = self.snapshot.member_roles.get(user_id, frozenset())
            member = Member(user_id, roles)  # a timeout never hides a channel
            perms = compute(self.snapshot.server, member, channel_id)
            seen = self._memo[key] = bool(perms & VIEW)
        return seen

    def visible(self, user_id: int, channel_ids: Iterable[int] | None = None) -> set[int]:
        """The channels (threads not included) the user can see, of all or of `channel_ids`."""
        channels = self.snapshot.server.channels
        ids = self.channel_ids() if channel_ids is None else channel_ids
        return {
            c for c in ids if c in channels and not channels[c].thread and self.can_view(user_id, c)
        }


class Views:
    """Snapshots by server id, loaded on demand and replaced after every permission change."""

    def __init__(self, load: Callable[[int], Awaitable[ServerSnapshot | None]]) -> None:
        self._load = load
        self._views: dict[int, ServerView] = {}
        self._generation: dict[int, int] = {}  # bumped by invalidate: stale loads are dropped
        self._loading: dict[int, trio.Event] = {}  # loads in flight, set when each ends
        self.loads = 0  # snapshots read from the database (for tests and metrics)
        self.changes = 0  # invalidations so far, of any server: what was checked before is stale

    async def get(self, server_id: int) -> ServerView | None:
        """The server's current view (None: the server is gone). Concurrent callers share one
        load (after an invalidation every busy channel of the server asks at once)."""
        while True:
            view = self._views.get(server_id)
            if view is not None:
                return view
            loading = self._loading.get(server_id)
            if loading is not None:
                await loading.wait()
                continue
            done = self._loading[server_id] = trio.Event()
            generation = self._generation.get(server_id, 0)
            try:
                snapshot = await self._load(server_id)
                self.loads += 1
            finally:
                del self._loading[server_id]
                done.set()
            if self._generation.get(server_id, 0) != generation:
                continue  # a change committed while we read: read again
            if snapshot is None:
                return None
            view = self._views[server_id] = ServerView(snapshot)
            return view

    def cached(self, server_id: int) -> ServerView | None:
        return self._views.get(server_id)

    def invalidate(self, server_id: int) -> None:
        self._generation[server_id] = self._generation.get(server_id, 0) + 1
        self.changes += 1
        self._views.pop(server_id, None)

    def invalidate_all(self) -> None:
        """Every view is stale (cluster mode: this node may have missed changes)."""
        for server_id in {*self._views, *self._loading}:
            self.invalidate(server_id)

    def drop(self, server_id: int) -> None:
        """Forget a server nobody online is in (a later event reloads it)."""
        self._views.pop(server_id, None)
