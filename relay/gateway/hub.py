"""The hub: every live gateway session, who is online in which server, and the routes events
take to reach them. It is the in-process implementation of the chat layer's fan-out
(`relay.chat.fanout.Fanout`).

It is plain state on the Trio thread, changed only by synchronous methods (no await between a
check and its update), so it needs no locks and no actor of its own. Channel events go through
channel actors (`ChannelActor`), which order them and hand each back to `_publish` here, which
finds the channel's audience at that moment, so subscriptions are never copied and cannot drift
from membership or permissions: a server channel's audience is its server's online members who
have VIEW_CHANNEL in it, answered by the permission cache (`views`, relay.chat.views), which the
chat layer invalidates after every change that can alter it (`announce`).

Indexes (only for users with at least one session, attached or within its resume window):
- `sessions`: session id -> Session; `by_user`: user id -> their sessions
- `online_members`: server id -> online user ids; `servers_of`: online user id -> server ids

A channel's audience is computed once and kept until something it depends on changes: every
change to the indexes above drops all kept audiences (`_membership_changed`), and an audience
kept for a server channel is used only while that server's view is the one it was computed
with (any permission change replaces the view). Computing it walks every online member
(~0.7 ms for 1000 sessions, on the path of every event before its first write).

In cluster mode (docs/cluster.md) relay.cluster.fanout wraps the hub as the chat layer's
fan-out: it hears the hub through the `on_*` hooks and `online_elsewhere`, and hands it what
other nodes published through `deliver_channel`, `deliver_to_user`, `remote_presence` and
`resync`.

Resource handling: `run()` owns the channel-actor registry and the reaper that ends sessions
whose resume window has passed.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import TYPE_CHECKING

import msgspec
import trio

from actors import ActorStopped, Overloaded, Registry
from actors.channel import ChannelActor, ChannelMsg, Fault, Post, Publish
from actors.presence import PresenceActor, PresenceMsg, SessionGone, SetStatus
from relay.chat.events import ChatEvent, PresenceUpdateEvent
from relay.chat.fanout import (
    Change,
    LoginRevoked,
    MemberJoined,
    MemberLeft,
    PermissionsChanged,
    RecipientsChanged,
    ServerDeleted,
)
from relay.chat.messages import created_event
from relay.chat.objects import Presence
from relay.errors import NotFound
from relay.protocol.gateway import Close, Event
from relay.storage import audience
from relay.storage.messages import post as post_message

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence

    import outcome
    from sqlite_utils import Database

    from actors.base import Asked, Reply
    from relay.chat.views import ServerView, Views
    from relay.config import Settings
    from relay.gateway.session import Session
    from relay.media.urls import FileUrls
    from relay.storage.messages import MessageRow, NewMessage, Posted
    from relay.storage.sqlite.db import Store

log = logging.getLogger("relay.gateway")


class HubHealth(msgspec.Struct, frozen=True):
    """What /readyz reports of the hub."""

    running: bool  # the channel-actor registry is running
    channel_actors: int
    sessions: int  # gateway sessions, connected or waiting for a RESUME


REAP_EVERY_S = 1.0
KEPT_AUDIENCES = 512  # channel audiences kept at most (then all are dropped and recomputed)


class Hub:
    def __init__(self, store: Store, settings: Settings, views: Views) -> None:
        self.store = store
        self.settings = settings
        self.sessions: dict[str, Session] = {}
        self.by_user: dict[int, set[Session]] = {}
        self.online_members: dict[int, set[int]] = {}
        self.servers_of: dict[int, set[int]] = {}
        self.channels: Registry[ChannelMsg] = Registry(self._new_channel)
        self.presence: Registry[PresenceMsg] = Registry(self._new_presence)
        self.statuses: dict[int, tuple[str, str | None]] = {}  # users not seen as offline
        self.views = views
        self.file_urls: FileUrls | None = None  # signs MESSAGE_CREATE's file URLs (services)
        # (channel id, intent bits) -> (the server's view then, the audience); see the module doc
        self._audiences: dict[tuple[int, int], tuple[ServerView | None, tuple[Session, ...]]] = {}
        self._membership = 0  # bumped by every change to the indexes
        # Events delivered to sessions that have ended (each session's `seq` counts its own):
        # with the live sessions' seqs, every event delivered so far, summed at scrape time
        # rather than counted per delivery.
        self.ended_events = 0
        self.on_session_end: list[Callable[[Session], None]] = []  # e.g. its voice state ends
        # Told the server id of every permission change (voice checks SPEAK and CONNECT again).
        self.on_permissions_changed: list[Callable[[int], None]] = []
        # Called with each new message's row right after its commit, in its channel's
        # publisher: must not block or raise (relay.services adds link previews' `submit`).
        self.on_created: list[Callable[[MessageRow], object]] = []
        # Group DMs whose recipients changed since their actor loaded them: the current ones
        # (a channel actor reads its audience once). One entry per such group DM, dropped
        # when it is deleted.
        self._recipients: dict[int, tuple[int, ...]] = {}
        # Session id -> when it last set "idle" (Trio time), for `attentive` (Web Push).
        self.idle_since: dict[str, float] = {}
        # Cluster mode (relay.cluster.fanout): told each channel event at its actor's turn (to
        # publish it to the other nodes), each presence change of a local user with the servers
        # that see it, and every change to the indexes (which topics this node needs). Sync,
        # must not block or raise.
        # on_channel_event may answer a function to call once the event was delivered here.
        self.on_channel_event: (
            Callable[[audience.ChannelAudience, ChatEvent], Callable[[], None] | None] | None
        ) = None
        self.on_presence: Callable[[int, str, str | None, list[int]], None] | None = None
        self.on_indexes_changed: Callable[[], None] | None = None
        # Cluster mode: waits while too many delivered frames wait for Redis (HeldFrames.room),
        # pushing back on channel actors and the broker's deliveries rather than cutting
        # sessions as slow consumers.
        self.pace: Callable[[], Awaitable[None]] | None = None
        # Cluster mode: whether a user has a session on another node (then their last session
        # here going does not make them offline).
        self.online_elsewhere: Callable[[int], bool] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.channels.run)
            await nursery.start(self.presence.run)
            nursery.start_soon(self._reap_forever)
            task_status.started()

    def health(self) -> HubHealth:
        return HubHealth(self.channels.is_running, len(self.channels.running()), len(self.sessions))

    def close(self) -> None:
        self.channels.close_all()
        self.presence.close_all()

    def session_counts(self) -> tuple[int, int, int]:
        """For /metrics: sessions connected, sessions waiting for a RESUME, and the events
        delivered to sessions so far (numbered: READY and dispatches; an event a session's
        intents skip is not delivered), attached or waiting."""
        connected = events = 0
        for session in self.sessions.values():
            events += session.seq
            if session.sink is not None:
                connected += 1
        return connected, len(self.sessions) - connected, self.ended_events + events

    # -- sessions ------------------------------------------------------------------------------

    def _membership_changed(self) -> None:
        self._membership += 1
        self._audiences.clear()
        if self.on_indexes_changed is not None:
            self.on_indexes_changed()

    def add_session(self, session: Session, server_ids: Iterable[int]) -> None:
        self._membership_changed()
        self.sessions[session.id] = session
        self.by_user.setdefault(session.user_id, set()).add(session)
        for server_id in server_ids:
            self.member_joined(server_id, session.user_id)

    def make_room_for_session(self, user_id: int, limit: int) -> bool:
        """Before a new session of `user_id`: end its oldest detached sessions (resumable,
        not connected) so that it has fewer than `limit`; False if its connected ones alone
        are that many."""
        mine = self.by_user.get(user_id, set())
        over = len(mine) - limit + 1
        if over <= 0:
            return True
        detached = sorted((s for s in mine if s.sink is None), key=lambda s: s.detached_at or 0)
        if len(detached) < over:
            return False
        for session in detached[:over]:
            self.end_session(session)
        return True

    def end_session(self, session: Session) -> None:
        """Forget a session for good (logout, expiry of its resume window, revocation)."""
        if self.sessions.pop(session.id, None) is None:
            return
        self.ended_events += session.seq
        self.idle_since.pop(session.id, None)
        for hook in self.on_session_end:
            hook(session)
        self._membership_changed()
        mine = self.by_user.get(session.user_id)
        if mine is not None:
            mine.discard(session)
            if not mine:
                del self.by_user[session.user_id]
                # servers_of stays until the presence actor announces offline (its audience).
                for server_id in self.servers_of.get(session.user_id, set()):
                    members = self.online_members.get(server_id)
                    if members is not None:
                        members.discard(session.user_id)
                        if not members:
                            del self.online_members[server_id]
                            self.views.drop(server_id)

    def revoke_login(self, auth_session_id: int) -> None:
        """A login was revoked (logout, password change, reuse): end its gateway sessions."""
        for session in [s for s in self.sessions.values() if s.auth_session_id == auth_session_id]:
            if session.sink is not None:
                session.sink.close(int(Close.AUTHENTICATION_FAILED), "session_revoked")
            self.end_session(session)

    def is_online(self, user_id: int) -> bool:
        return user_id in self.by_user

    def attentive(self, user_id: int, idle_after_s: float) -> bool:
        """Whether the user has a connected session that is not idle, or idle for less than
        `idle_after_s` (Web Push goes to users who are not: relay.chat.push)."""
        now = trio.current_time()
        for session in self.by_user.get(user_id, ()):
            if session.sink is None:
                continue  # detached, waiting for a RESUME: nobody is reading it
            since = self.idle_since.get(session.id)
            if since is None or now - since < idle_after_s:
                return True
        return False

    # -- presence ------------------------------------------------------------------------------

    async def set_status(self, session: Session) -> None:
        """Report a session's status (on READY, RESUME and op 3) to the user's presence actor."""
        if session.status == "idle":
            self.idle_since.setdefault(session.id, trio.current_time())
        else:
            self.idle_since.pop(session.id, None)
        msg = SetStatus(session.id, session.status, session.activity)
        await self._tell_presence(session.user_id, msg)

    async def session_gone(self, session: Session) -> None:
        """A session left (disconnected or ended): the user may go offline after the grace."""
        await self._tell_presence(session.user_id, SessionGone(session.id))

    async def _tell_presence(self, user_id: int, msg: PresenceMsg) -> None:
        try:
            await self.presence.tell(f"presence:{user_id}", msg)
        except (ActorStopped, Overloaded):  # presence is best effort; the next change resends
            log.warning("presence update dropped", extra={"user": user_id})

    def _new_presence(self, key: str) -> PresenceActor:
        user_id = int(key.removeprefix("presence:"))
        return PresenceActor(key, user_id, self._announce, grace_s=self.settings.presence_grace_s)

    def _announce(self, user_id: int, status: str, activity: str | None) -> None:
        if status == "offline" and self.online_elsewhere and self.online_elsewhere(user_id):
            # Gone from this node only: nobody is told (their status is the other node's).
            if user_id not in self.by_user:
                self.servers_of.pop(user_id, None)
            return
        if status == "offline":
            self.statuses.pop(user_id, None)
        else:
            self.statuses[user_id] = (status, activity)
        presence = Presence(user_id=str(user_id), status=status, activity=activity)
        event = wire(PresenceUpdateEvent(d=presence))
        for session in self.presence_audience(user_id):
            session.deliver(event)
        if self.on_presence is not None:
            self.on_presence(user_id, status, activity, list(self.servers_of.get(user_id, ())))
        if status == "offline" and user_id not in self.by_user:
            self.servers_of.pop(user_id, None)

    def remote_presence(
        self, user_id: int, status: str, activity: str | None, server_ids: Iterable[int]
    ) -> None:
        """A presence change of a user on another node (cluster mode): PRESENCE_UPDATE to the
        local online members of `server_ids`. A user with local sessions keeps the status this
        node's presence actor merged from them."""
        if user_id not in self.by_user:
            if status == "offline":
                self.statuses.pop(user_id, None)
            else:
                self.statuses[user_id] = (status, activity)
        users: set[int] = set()
        for server_id in server_ids:
            users.update(self.online_members.get(server_id, ()))
        presence = Presence(user_id=str(user_id), status=status, activity=activity)
        event = wire(PresenceUpdateEvent(d=presence))
        for session in [s for u in users for s in self.by_user.get(u, ())]:
            session.deliver(event)

    def presence_audience(self, user_id: int) -> list[Session]:
        """Sessions of everyone who shares a server with the user, and the user's own."""
        users = {user_id}
        for server_id in self.servers_of.get(user_id, ()):
            users.update(self.online_members.get(server_id, ()))
        return [s for u in users for s in self.by_user.get(u, ())]

    # -- membership (announced by the chat layer after the change committed) -----------------

    def announce(self, change: Change) -> None:
        match change:
            case MemberJoined(server_id, user_id):
                self.member_joined(server_id, user_id)
                self._introduce(user_id, self.online_members.get(server_id, ()))
            case MemberLeft(server_id, user_id):
                self.member_left(server_id, user_id)
            case PermissionsChanged(server_id):
                self.views.invalidate(server_id)
                for hook in self.on_permissions_changed:
                    hook(server_id)
            case ServerDeleted(server_id):
                self.server_deleted(server_id)
            case LoginRevoked(auth_session_id):
                self.revoke_login(auth_session_id)
            case RecipientsChanged(channel_id, recipients):
                # Only this channel's kept audiences are stale (a DM's is computed without
                # awaiting, so none can be in flight).
                for key in [k for k in self._audiences if k[0] == channel_id]:
                    del self._audiences[key]
                if recipients:
                    self._recipients[channel_id] = tuple(recipients)
                else:  # gone: nothing is sent there any more
                    self._recipients.pop(channel_id, None)

    def online(self, server_id: int) -> Collection[int]:
        return self.online_members.get(server_id, ())

    def member_joined(self, server_id: int, user_id: int) -> None:
        if user_id in self.by_user:
            self._membership_changed()
            self.online_members.setdefault(server_id, set()).add(user_id)
            self.servers_of.setdefault(user_id, set()).add(server_id)

    def _introduce(self, user_id: int, members: Collection[int]) -> None:
        """A newcomer and the server's online members now share a server: each sees the
        other's presence at once, not only at their next change of status."""
        mine = self.statuses.get(user_id)
        if mine is not None:
            event = wire(
                PresenceUpdateEvent(
                    d=Presence(user_id=str(user_id), status=mine[0], activity=mine[1])
                )
            )
            for other in members:
                if other != user_id:
                    for session in self.by_user.get(other, ()):
                        session.deliver(event)
        for other in members:
            theirs = self.statuses.get(other)
            if other != user_id and theirs is not None:
                presence = Presence(user_id=str(other), status=theirs[0], activity=theirs[1])
                event = wire(PresenceUpdateEvent(d=presence))
                for session in self.by_user.get(user_id, ()):
                    session.deliver(event)

    def member_left(self, server_id: int, user_id: int) -> None:
        """A member left, was kicked or banned: from now on no event of the server reaches them.
        Their roles went with the membership, so the server's permission snapshot is stale."""
        self._membership_changed()
        members = self.online_members.get(server_id)
        if members is not None:
            members.discard(user_id)
            if not members:
                del self.online_members[server_id]
        servers = self.servers_of.get(user_id)
        if servers is not None:
            servers.discard(server_id)
        self.views.invalidate(server_id)

    def server_deleted(self, server_id: int) -> None:
        self._membership_changed()
        for user_id in self.online_members.pop(server_id, set()):
            self.servers_of.get(user_id, set()).discard(server_id)
        self.views.invalidate(server_id)

    # -- routing -------------------------------------------------------------------------------

    def user_sessions(self, user_id: int) -> Iterable[Session]:
        return self.by_user.get(user_id, ())

    def server_sessions(self, server_id: int) -> list[Session]:
        """A snapshot (delivering may cut connections, but never changes these indexes)."""
        by_user = self.by_user
        return [s for u in self.online_members.get(server_id, ()) for s in by_user.get(u, ())]

    def to_users(self, user_ids: Iterable[int], event: ChatEvent, *, dm: bool = False) -> None:
        """Send an event to every session of these users; `dm`: it is about a DM channel (a new
        DM's CHANNEL_CREATE), which decides its intent bits."""
        framed = wire(event, dm=dm)
        for user_id in user_ids:
            for session in tuple(self.user_sessions(user_id)):
                session.deliver(framed)

    def deliver_to_user(self, user_id: int, event: ChatEvent, *, dm: bool = False) -> None:
        """One user's sessions here (a DM channel's event for one recipient: `dm`)."""
        framed = wire(event, dm=dm)
        now = trio.current_time()
        for session in tuple(self.by_user.get(user_id, ())):
            session.deliver(framed, now)

    def deliver_one(self, session: Session, event: ChatEvent, *, dm: bool = False) -> None:
        """One session (cluster mode: what a session taken over missed, already filtered)."""
        session.deliver(wire(event, dm=dm))

    def dm_recipients(self, info: audience.ChannelAudience) -> Sequence[int]:
        """A DM channel's recipients now (a group DM's may have changed since it loaded)."""
        return self._recipients.get(info.channel_id, info.recipients)

    def close_sessions(self, sessions: Iterable[Session], code: int, reason: str) -> int:
        """End these sessions for good (no RESUME) and close their connections; how many."""
        ended = 0
        for session in list(sessions):
            if session.id not in self.sessions:
                continue
            if session.sink is not None:
                session.sink.close(code, reason)
            self.end_session(session)
            ended += 1
        return ended

    def resync(
        self, server_ids: Iterable[int], user_ids: Iterable[int], *, everyone: bool = False
    ) -> int:
        """Cluster mode: this node missed broker messages for these servers' online members and
        these users (or, `everyone`, for all): end their sessions and close them with 4014, so
        their clients IDENTIFY again and start from what is stored. How many were ended."""
        if everyone:
            sessions: list[Session] = list(self.sessions.values())
        else:
            sessions = [s for sid in server_ids for s in self.server_sessions(sid)]
            sessions += [s for uid in user_ids for s in self.by_user.get(uid, ())]
        return self.close_sessions(sessions, int(Close.RESYNC), "fell behind the broker")

    def to_server(self, server_id: int, event: ChatEvent) -> None:
        """Send an event to every online member of a server (server-wide events: SERVER_*,
        MEMBER_*, ROLE_*). Channel events never come here: their audience depends on who can
        see the channel (`_channel_audience`)."""
        framed = wire(event)
        for session in self.server_sessions(server_id):
            session.deliver(framed)

    async def _view_with(self, server_id: int, channel_id: int) -> ServerView | None:
        """The server's view; reloaded once if it does not know the channel (created since:
        a missing invalidation must not make a private channel public)."""
        view = await self.views.get(server_id)
        if view is not None and not view.has_channel(channel_id):
            self.views.invalidate(server_id)
            view = await self.views.get(server_id)
        return view

    async def to_channel(self, channel_id: int, event: ChatEvent) -> None:
        """Send a channel event through the channel's actor, in order with its messages."""
        await self._tell(channel_id, Publish(event))

    async def post(self, new: NewMessage) -> Asked[Posted]:
        """Queue a new message with its channel's actor; returns once it is queued, and its
        `answer()` is the outcome once committed. Messages queued one after the other get
        ascending ids and commit in that order, whoever waits for their answers and when.

        Raises:
            NotFound("unknown_channel"): the channel's actor is gone (the channel was deleted).
        """

        def build(reply: Reply[Posted]) -> ChannelMsg:
            return Post(new, reply)

        try:
            return await self.channels.start_ask(f"channel:{new.channel_id}", build)
        except ActorStopped:
            raise NotFound("unknown channel", code="unknown_channel") from None

    async def post_with(
        self,
        new: NewMessage,
        on_answer: Callable[[outcome.Outcome[Posted]], object],
        *,
        deadline: float = math.inf,
    ) -> Reply[Posted]:
        """`post`, with the answer passed to `on_answer` in the channel's publisher task
        (`Actor.start_ask_with`) rather than awaited.

        Raises:
            NotFound("unknown_channel"): as `post`.
            AskTimeout: the actor could not take it by `deadline` (Trio time).
        """

        def build(reply: Reply[Posted]) -> ChannelMsg:
            return Post(new, reply)

        key = f"channel:{new.channel_id}"
        try:
            return await self.channels.start_ask_with(key, build, on_answer, deadline=deadline)
        except ActorStopped:
            raise NotFound("unknown channel", code="unknown_channel") from None

    async def inject_fault(self, channel_id: int) -> None:
        await self._tell(channel_id, Fault())

    async def _tell(self, channel_id: int, msg: ChannelMsg) -> None:
        try:
            await self.channels.tell(f"channel:{channel_id}", msg)
        except ActorStopped:
            log.info("event for a channel that is gone", extra={"channel": channel_id})

    def _new_channel(self, key: str) -> ChannelActor:
        return self.channel_actor(int(key.removeprefix("channel:")))

    def channel_actor(
        self, channel_id: int, write: Callable[[Database, int, NewMessage], Posted] = post_message
    ) -> ChannelActor:
        """A channel's actor publishing through this hub. Cluster mode builds one for each
        channel this node owns, with its fenced `write` (relay.cluster.owners)."""
        return ChannelActor(
            f"channel:{channel_id}",
            self.store,
            self._publish,
            self._created,
            partial(self.store.read, audience.channel_audience, channel_id),
            idle_timeout_s=self.settings.actor_idle_s,
            write=write,
        )

    def _created(self, row: MessageRow) -> ChatEvent:
        event = created_event(row, urls=self.file_urls)
        for hook in self.on_created:
            hook(row)
        return event

    async def _publish(
        self, info: audience.ChannelAudience, event: object, write_now: bool
    ) -> None:
        """Deliver a channel's event (its actor's turn) to the channel's audience now (and
        hand it to the other nodes first, in cluster mode)."""
        assert isinstance(event, ChatEvent)
        done = None if self.on_channel_event is None else self.on_channel_event(info, event)
        try:
            await self.deliver_channel(info, event, write_now)
        finally:
            if done is not None:
                done()

    async def deliver_channel(
        self, info: audience.ChannelAudience, event: ChatEvent, write_now: bool = False
    ) -> None:
        """Deliver a channel's event to this node's sessions in its audience."""
        if self.pace is not None:
            await self.pace()
        framed = wire(event, dm=info.server_id is None)
        sessions = await self._channel_audience(info, framed.intent)
        now = trio.current_time()
        for session in sessions:
            session.deliver(framed, now, write_now)

    async def _channel_audience(
        self, info: audience.ChannelAudience, intent: int
    ) -> Sequence[Session]:
        """Who hears a channel's event (of these intent bits) right now: the sessions that want
        it of a DM's recipients, or of the server's online members with VIEW_CHANNEL in it.
        Kept until it may have changed (module doc)."""
        key = (info.channel_id, intent)
        kept = self._audiences.get(key)
        if kept is not None and (
            info.server_id is None or self.views.cached(info.server_id) is kept[0]
        ):
            return kept[1]
        membership = self._membership
        by_user = self.by_user
        if info.server_id is None:
            users: Iterable[int] = self._recipients.get(info.channel_id, info.recipients)
        else:
            users = self.online_members.get(info.server_id, ())
        wanting = [s for user_id in users for s in by_user.get(user_id, ()) if s.intents & intent]
        view = None
        if wanting and info.server_id is not None:
            view = await self._view_with(info.server_id, info.channel_id)
            if view is None:
                return ()
            wanting = [s for s in wanting if view.can_view(s.user_id, info.channel_id)]
        found = tuple(wanting)
        if membership == self._membership:  # nothing changed while the view loaded
            if len(self._audiences) >= KEPT_AUDIENCES:
                self._audiences.clear()
            self._audiences[key] = (view, found)
        return found

    async def _reap_forever(self) -> None:
        window = self.settings.resume_window_s
        while True:
            await trio.sleep(REAP_EVERY_S)
            deadline = trio.current_time() - window
            for session in [
                s
                for s in self.sessions.values()
                if s.detached_at is not None and s.detached_at < deadline
            ]:
                self.end_session(session)


def wire(event: ChatEvent, *, dm: bool = False) -> Event:
    """A chat event as the gateway frames it: payload encoded once, seq spliced per session."""
    return Event(event.t, event.d, event.intent_for(dm=dm))
