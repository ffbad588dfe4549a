"""Voice states: who is in which voice channel, joining (gateway op 4), moderation (server
mute, deafen, move, disconnect), and the tokens that open a voice connection.

Voice states live in memory, in `VoiceStates` (one per process, on `Chat.voice`): they describe
live connections and end with them. Every change goes to the server's online members as
VOICE_STATE_UPDATE, and to the media side (`on_change` listeners: relay.voice closes the
connection of a state that ended or moved, and tells the channel's actor about mutes), all
synchronously, so the state and its listeners never disagree across an await.

A join answers a VOICE_SERVER_UPDATE whose token is single-use, expires after
`voice_token_ttl_s`, and is bound to the user, the channel and the gateway session that asked;
a later join, move or leave of the user voids it.

Permissions are checked when a member joins (CONNECT; the user limit unless MOVE_MEMBERS; SPEAK,
STREAM and VIDEO are kept with the state for the media side), and again by relay.voice after
every permission change in the server.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Protocol

import msgspec
import trio

from relay.chat import events
from relay.chat.args import snowflake
from relay.chat.objects import VoiceServer, VoiceState
from relay.errors import BadRequest, Conflict, Forbidden, NotFound
from relay.permissions import P
from relay.storage.access import missing_permission

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.chat.context import Chat
    from relay.chat.fanout import Fanout
    from relay.config import Settings

VOICE_ENDPOINT = "/v1/voice"
CONNECT = int(P.CONNECT)
MOVE = int(P.MOVE_MEMBERS)


class Voice(msgspec.Struct, frozen=True, kw_only=True):
    """One member's voice state (the chat layer's own; `VoiceState` is its wire form)."""

    user_id: int
    server_id: int
    channel_id: int
    session_id: str
    self_mute: bool = False
    self_deaf: bool = False
    mute: bool = False
    deaf: bool = False
    self_video: bool = False
    self_stream: bool = False
    permissions: int = 0  # in the channel, when they joined
    e2ee_required: bool = False  # the channel's, when they joined

    def out(self, *, left: bool = False) -> VoiceState:
        return VoiceState(
            server_id=str(self.server_id),
            channel_id=None if left else str(self.channel_id),
            user_id=str(self.user_id),
            session_id=self.session_id,
            self_mute=self.self_mute,
            self_deaf=self.self_deaf,
            mute=self.mute,
            deaf=self.deaf,
            self_video=self.self_video,
            self_stream=self.self_stream,
        )


class Grant(msgspec.Struct, frozen=True):
    """What a VOICE_SERVER_UPDATE token opens."""

    token: str
    user_id: int
    server_id: int
    channel_id: int
    session_id: str
    expires_at: float  # trio time


class VoiceCluster(Protocol):
    """Cluster mode (relay.cluster.voice): where a voice channel is served, and the tokens kept
    in Redis so that the node serving the channel can redeem them."""

    async def endpoint(self, channel_id: int) -> str:
        """The voice endpoint (URL) of the node that owns the channel, or now takes it.
        Raises Unavailable("voice_unavailable") when its owner cannot be reached."""

    async def granted(self, grant: Grant, state: Voice) -> None:
        """Store a new token where the serving node can redeem it (before the client has it)."""

    def voided(self, tokens: list[str]) -> None: ...

    async def moved(self, user_id: int, channel_id: int) -> bool:
        """The channel is served elsewhere than the user's last token said."""

    async def seat(self, user_id: int, channel_id: int, limit: int) -> bool:
        """Take the user's place among the channel's members, if fewer than `limit` others are
        in it on every node (one atomic step); False: full. Given back when the user's voice
        state leaves the channel."""

    def unseat(self, user_id: int, channel_id: int) -> None:
        """Give a seat back that no voice state took (the member left meanwhile)."""


class VoiceStates:
    """Every voice state of the process, and the tokens not redeemed yet."""

    def __init__(self, settings: Settings, fanout: Fanout) -> None:
        self.settings = settings
        self.fanout = fanout
        self.by_user: dict[int, Voice] = {}
        self.by_channel: dict[int, dict[int, Voice]] = {}
        self.grants: dict[str, Grant] = {}
        # Server mute/deafen writes so far (they are stored on the member): a join whose read
        # of them overlapped one reads them again.
        self.moderation_writes = 0
        # The media side's: (before, after) of each change; None before: joined, after: left.
        self.on_change: list[Callable[[Voice | None, Voice | None], None]] = []
        self.cluster: VoiceCluster | None = None  # set in cluster mode only
        # Cluster mode: the voice states held by the other nodes (relay.cluster.voice keeps
        # them), shown in READY and REST beside this node's own.
        self.remote: dict[int, Voice] = {}

    # -- reading ---------------------------------------------------------------------------------

    def of_server(self, server_id: int) -> list[Voice]:
        return [v for v in self.by_user.values() if v.server_id == server_id]

    def in_channel(self, channel_id: int) -> list[Voice]:
        return list(self.by_channel.get(channel_id, {}).values())

    def members_of(self, channel_id: int) -> set[int]:
        """Who is in the channel, on this node and (cluster mode) the others."""
        here = set(self.by_channel.get(channel_id, ()))
        if self.remote:
            here.update(u for u, v in self.remote.items() if v.channel_id == channel_id)
        return here

    def channels_in_use(self) -> set[int]:
        """Voice channels someone is in, on this node and (cluster mode) the others."""
        return set(self.by_channel) | {v.channel_id for v in self.remote.values()}

    # -- changing (synchronous: state, event and listeners together) ---------------------------

    def _set(self, before: Voice | None, after: Voice | None) -> None:
        if before is not None:
            self.by_user.pop(before.user_id, None)
            members = self.by_channel.get(before.channel_id)
            if members is not None:
                members.pop(before.user_id, None)
                if not members:
                    del self.by_channel[before.channel_id]
        if after is not None:
            self.by_user[after.user_id] = after
            self.by_channel.setdefault(after.channel_id, {})[after.user_id] = after
        if after is None or before is None or after.channel_id != before.channel_id:
            self._void_grants((after or before).user_id)  # type: ignore[union-attr]
        if after is not None:
            if before is None or before.out() != after.out():  # not for permissions alone
                self.fanout.to_server(after.server_id, events.VoiceStateUpdate(d=after.out()))
        elif before is not None:
            self.fanout.to_server(
                before.server_id, events.VoiceStateUpdate(d=before.out(left=True))
            )
        for listener in self.on_change:
            listener(before, after)

    def _void_grants(self, user_id: int) -> None:
        tokens = [t for t, g in self.grants.items() if g.user_id == user_id]
        for token in tokens:
            del self.grants[token]
        if tokens and self.cluster is not None:
            self.cluster.voided(tokens)

    def leave(self, user_id: int, server_id: int | None = None) -> bool:
        """End the user's voice state (only if it is in `server_id`, when given)."""
        state = self.by_user.get(user_id)
        if state is None or (server_id is not None and state.server_id != server_id):
            return False
        self._set(state, None)
        return True

    def session_ended(self, session_id: str) -> None:
        """A gateway session ended (after its resume window): its voice state goes with it."""
        for state in [v for v in self.by_user.values() if v.session_id == session_id]:
            self._set(state, None)

    def channel_gone(self, channel_id: int) -> None:
        for state in self.in_channel(channel_id):
            self._set(state, None)

    def update(self, state: Voice, **changes: object) -> Voice:
        after = msgspec.structs.replace(state, **changes)
        if after != state:
            self._set(state, after)
        return after

    def grant(self, state: Voice) -> Grant:
        token = secrets.token_urlsafe(24)
        expires = trio.current_time() + self.settings.voice_token_ttl_s
        found = self.grants[token] = Grant(
            token, state.user_id, state.server_id, state.channel_id, state.session_id, expires
        )
        return found

    def redeem(self, token: str, user_id: int, server_id: int, session_id: str) -> Voice | None:
        """Use a token once: the voice state it opens, if it is unexpired, bound to exactly
        this user, server and gateway session, and the state is still the one it was made for."""
        grant = self.grants.pop(token, None)
        if grant is None or grant.expires_at < trio.current_time():
            return None
        if (grant.user_id, grant.server_id, grant.session_id) != (user_id, server_id, session_id):
            return None
        state = self.by_user.get(user_id)
        if state is None or state.channel_id != grant.channel_id or state.session_id != session_id:
            return None
        return state

    def prune_grants(self) -> None:
        now = trio.current_time()
        for token in [t for t, g in self.grants.items() if g.expires_at < now]:
            del self.grants[token]


# -- operations ----------------------------------------------------------------------------------


def require_room_for_channel(chat: Chat, channel_id: int) -> None:
    """A voice channel nobody is in yet may start only below `voice_max_channels`."""
    busy = chat.voice.by_channel if not chat.voice.remote else chat.voice.channels_in_use()
    if channel_id not in busy and len(busy) >= chat.settings.voice_max_channels:
        limit = chat.settings.voice_max_channels
        raise Conflict(
            f"at most {limit} voice channels may be in use at once",
            code="too_many_voice_channels",
        )


def not_a_voice_channel() -> BadRequest:
    return BadRequest("that is not a voice channel", code="not_a_voice_channel")


async def update_state(
    chat: Chat,
    user_id: int,
    session_id: str,
    server_id: str,
    channel_id: str | None,
    *,
    self_mute: bool,
    self_deaf: bool,
) -> VoiceServer | None:
    """Gateway op 4: join, move to, or leave (`channel_id` None) a voice channel of the server,
    or change one's self mute and deafen. Answers the VOICE_SERVER_UPDATE of a join or move.

    Raises NotFound("unknown_server" | "unknown_channel"), BadRequest("not_a_voice_channel"),
    Forbidden("missing_permission"), Conflict("voice_channel_full" |
    "too_many_voice_channels").
    """
    voice = chat.voice
    sid = snowflake(server_id, "server")
    current = voice.by_user.get(user_id)
    if channel_id is None:
        if not await chat.store.read(chat.q.voice.is_member, sid, user_id):
            raise NotFound("unknown server", code="unknown_server")
        voice.leave(user_id, sid)
        return None
    cid = snowflake(channel_id, "channel")
    writes = voice.moderation_writes
    channel = await chat.store.read(chat.q.voice.voice_channel, cid, user_id)
    if channel.server_id != sid:
        raise NotFound("unknown channel", code="unknown_channel")
    if channel.type != "voice":
        raise not_a_voice_channel()
    if not channel.permissions & CONNECT:
        raise missing_permission(CONNECT)
    # Server mute and deafen are the member's (stored), so a rejoin or a restart keeps them.
    mute, deaf = channel.mute, channel.deaf
    endpoint = VOICE_ENDPOINT if voice.cluster is None else await voice.cluster.endpoint(cid)
    while writes != voice.moderation_writes:  # a moderator wrote meanwhile: read them again
        writes = voice.moderation_writes
        mute, deaf = await chat.store.read(chat.q.voice.moderation, sid, user_id)
    current = voice.by_user.get(user_id)  # again: the reads above awaited
    require_room_for_channel(chat, cid)
    if current is not None and current.channel_id == cid and current.session_id == session_id:
        current = voice.update(current, self_mute=self_mute, self_deaf=self_deaf)
        if voice.cluster is None or not await voice.cluster.moved(user_id, cid):
            return None
        # Its voice node went away (or gave the channel up): a new token for the new one.
        current = voice.by_user.get(user_id)
        if current is None or current.channel_id != cid or current.session_id != session_id:
            return None
        return await _granted(voice, current, endpoint)
    others = len(voice.members_of(cid) - {user_id})
    limit = chat.settings.voice_max_members_per_channel
    if channel.user_limit and not channel.permissions & MOVE:
        limit = min(limit, channel.user_limit)
    if others >= limit:
        raise Conflict("that voice channel is full", code="voice_channel_full")
    if voice.cluster is not None:
        # What this node heard of the others may be behind: the count that decides is atomic.
        if not await voice.cluster.seat(user_id, cid, limit):
            raise Conflict("that voice channel is full", code="voice_channel_full")
        current = voice.by_user.get(user_id)  # again: the seat awaited
    state = Voice(
        user_id=user_id,
        server_id=sid,
        channel_id=cid,
        session_id=session_id,
        self_mute=self_mute,
        self_deaf=self_deaf,
        mute=mute,
        deaf=deaf,
        permissions=channel.permissions,
        e2ee_required=channel.e2ee_required,
    )
    voice._set(current, state)
    return await _granted(voice, state, endpoint)


async def _granted(voice: VoiceStates, state: Voice, endpoint: str) -> VoiceServer:
    """A token for `state`, stored where its voice node can redeem it (cluster mode)."""
    grant = voice.grant(state)
    if voice.cluster is not None:
        await voice.cluster.granted(grant, state)
    return VoiceServer(
        server_id=str(state.server_id),
        channel_id=str(state.channel_id),
        token=grant.token,
        endpoint=endpoint,
    )


async def channel_states(chat: Chat, user_id: int, channel_id: str) -> list[VoiceState]:
    """The voice states of a voice channel the user can see (REST)."""
    cid = snowflake(channel_id, "channel")
    channel = await chat.store.read(chat.q.voice.voice_channel, cid, user_id)
    if channel.type != "voice":
        raise not_a_voice_channel()
    states = {v.user_id: v for v in chat.voice.remote.values() if v.channel_id == cid}
    states.update((v.user_id, v) for v in chat.voice.in_channel(cid))
    return [v.out() for v in sorted(states.values(), key=lambda v: v.user_id)]


def server_states(chat: Chat, server_ids: list[int]) -> list[VoiceState]:
    """For READY: the voice states of these servers."""
    wanted = set(server_ids)
    found = {v.user_id: v for v in chat.voice.remote.values() if v.server_id in wanted}
    found.update((v.user_id, v) for v in chat.voice.by_user.values() if v.server_id in wanted)
    return [v.out() for v in sorted(found.values(), key=lambda v: (v.server_id, v.user_id))]


async def moderate(
    chat: Chat,
    user_id: int,
    server_id: int,
    target_id: int,
    *,
    mute: bool | None,
    deaf: bool | None,
    move: bool,
    channel_id: str | None,
) -> None:
    """Server mute/deafen (MUTE_MEMBERS, DEAFEN_MEMBERS) and move/disconnect (MOVE_MEMBERS;
    `move` with `channel_id` None disconnects) through PATCH .../members/{user}.

    Raises NotFound, Forbidden("missing_permission"), BadRequest("not_in_voice" |
    "not_a_voice_channel"), Conflict("voice_channel_full")."""
    voice = chat.voice
    have = await chat.store.read(chat.q.voice.server_permissions, server_id, user_id)
    if have is None or not await chat.store.read(chat.q.voice.is_member, server_id, target_id):
        raise NotFound("unknown member", code="unknown_member")
    need = (
        (int(P.MUTE_MEMBERS) if mute is not None else 0)
        | (int(P.DEAFEN_MEMBERS) if deaf is not None else 0)
        | (MOVE if move else 0)
    )
    if have & int(P.ADMINISTRATOR) == 0 and need & ~have:
        raise missing_permission(need & ~have)
    target_channel = None
    if move and channel_id is not None:
        cid = snowflake(channel_id, "channel")
        channel = await chat.store.read(chat.q.voice.voice_channel, cid, user_id)
        if channel.server_id != server_id:
            raise NotFound("unknown channel", code="unknown_channel")
        if channel.type != "voice":
            raise not_a_voice_channel()
        if not channel.permissions & (CONNECT | MOVE) == CONNECT | MOVE and not (
            have & int(P.ADMINISTRATOR)
        ):
            raise Forbidden("you may not move members there", code="missing_permission")
        if len(voice.members_of(cid)) >= chat.settings.voice_max_members_per_channel:
            raise Conflict("that voice channel is full", code="voice_channel_full")
        require_room_for_channel(chat, cid)
        target_channel = channel
    state = voice.by_user.get(target_id)
    if state is not None and state.server_id != server_id:
        state = None
    if move and state is None:
        raise BadRequest("that member is not in a voice channel here", code="not_in_voice")
    if mute is not None or deaf is not None:
        new = await chat.store.write(chat.q.voice.set_moderation, server_id, target_id, mute, deaf)
        voice.moderation_writes += 1
        state = voice.by_user.get(target_id)  # again: the write awaited
        if state is not None and state.server_id != server_id:
            state = None
        if state is not None:
            state = voice.update(state, mute=new[0], deaf=new[1])
    if state is None:
        if move:
            raise BadRequest("that member is not in a voice channel here", code="not_in_voice")
        return
    if move and target_channel is None:
        voice.leave(target_id)
    elif target_channel is not None and target_channel.id != state.channel_id:
        target_perms = await chat.store.read(
            chat.q.voice.voice_channel, target_channel.id, target_id
        )
        endpoint = VOICE_ENDPOINT
        if voice.cluster is not None:
            endpoint = await voice.cluster.endpoint(target_channel.id)
            limit = chat.settings.voice_max_members_per_channel
            if not await voice.cluster.seat(target_id, target_channel.id, limit):
                raise Conflict("that voice channel is full", code="voice_channel_full")
        current = voice.by_user.get(target_id)
        if current is not None and current.server_id == server_id:
            moved = msgspec.structs.replace(
                current,
                channel_id=target_channel.id,
                permissions=target_perms.permissions,
                e2ee_required=target_perms.e2ee_required,
            )
            voice._set(current, moved)
            server = await _granted(voice, moved, endpoint)
            chat.fanout.to_users((target_id,), events.VoiceServerUpdate(d=server))
        elif voice.cluster is not None:
            voice.cluster.unseat(target_id, target_channel.id)
