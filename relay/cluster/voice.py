"""Voice channels in cluster mode: one node serves a voice channel at a time (docs/cluster.md).

Voice states stay where they are made, on the node of the member's gateway session (its
`VoiceStates`, which fans VOICE_STATE_UPDATE out through the broker as before). The channel's
media (its voice actor, the voice connections, UDP) lives on the node holding the channel's
lease, `voice:<channel id>` (relay.cluster.lease):

- op 4 on any node asks `endpoint(channel)`: the holder's voice URL (each node publishes its
  own, `node_public_url`, in `relay:url:<node>`); if nobody holds the channel, the asking node
  takes it. VOICE_SERVER_UPDATE carries that URL.
- the token is stored in Redis (`relay:voice:grant:<token>`, expiring with
  `voice_token_ttl_s`) with the voice state it opens and the node that made it; the serving
  node redeems it with GETDEL (single use), and checks it is bound to the IDENTIFY's user,
  server and gateway session. A later join, move or leave deletes it, in order with its SET
  (one task writes both).
- every change of a voice state is published on `relay:voice`, which every node follows: each
  keeps the other nodes' voice states (`VoiceStates.remote`, for READY and REST; a starting node
  reads them from the hash `relay:voice:states`, and those of nodes that died are dropped), and
  the serving node keeps a mirror of the states of its channels (mutes, moves and leaves reach
  its voice sessions as in one process). What the serving node changes (self_video and
  self_stream from op 12, a leave when the resume grace passed) goes back to the member's node
  on `relay:vn:<node>`.
- member limits (`voice_max_members_per_channel`, a channel's `user_limit`) are checked
  atomically across nodes: a join or move takes a *seat* in the hash `relay:voice:seats:<channel
  id>` (user id -> `<instance>|<n>`, the instance being this run of the node, as in
  relay.cluster.caps) with one script that counts the seats of other users whose instance is
  alive, drops those of dead ones, and adds this one only under the limit. A voice state that
  leaves the channel gives its seat back (compare-and-delete, in order with the state's other
  writes). If Redis does not answer, the node's own count decides.
- the serving node renews the lease while the channel has voice sessions (or members about
  to connect) and releases it once idle. A node that dies stops renewing: the next join after
  `lease_ttl_s` takes the channel on another node. A holder that loses its lease ends its
  voice sessions of the channel with 4020; the members send op 4 again and get the new node.

Resource handling: `run()` owns the grant writer and (in its nursery) one holding task per
served channel; all of it ends with the node.

Error handling: Redis errors while looking an owner up refuse the join with 503
`voice_unavailable`; a grant that cannot be stored does the same; a lost delete leaves a token
that expires by itself (and that the serving node's mirror refuses when it knows better).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import msgspec
import trio

from relay.chat.events import VoiceStateUpdate
from relay.chat.voice import VOICE_ENDPOINT, Voice
from relay.cluster.caps import ALIVE
from relay.cluster.lease import Leases
from relay.cluster.places import ws_key
from relay.errors import Unavailable
from relay.protocol.voice import VoiceClose

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import coredis

    from relay.chat.events import ChatEvent
    from relay.chat.voice import Grant, VoiceStates
    from relay.cluster.broker import Broker
    from relay.cluster.lease import Lease
    from relay.cluster.places import NodeUrls
    from relay.config import Settings

log = logging.getLogger("relay.cluster")

GRANT_QUEUE = 10_000  # grant writes waiting for Redis; full: the join is refused (503)
IDLE_CHECK_S = 0.5  # how often a holder looks whether its channel is still in use


STATES_TOPIC = "relay:voice"  # every voice state change, heard by every node
STATES_KEY = "relay:voice:states"  # user id -> the latest StateEntry, for a node that starts
SWEEP_EVERY_S = 2.0  # how often the states of nodes that died are dropped


def node_topic(node_id: str) -> str:
    return f"relay:vn:{node_id}"


def grant_key(token: str) -> str:
    return f"relay:voice:grant:{token}"


def seats_key(channel_id: int) -> str:
    return f"relay:voice:seats:{channel_id}"


SEATS_TTL_MS = 86_400_000  # an unused channel's seats go after a day
# seat: KEYS the channel's seats; ARGV user, its seat's value, limit, alive prefix, key ttl ms.
# 1: seated (the user's seat replaced, if it had one); 0: the channel is full.
_SEAT = """
local taken = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local user = fields[i]
  if user ~= ARGV[1] then
    local instance = string.match(fields[i + 1], '^(.*)|') or ''
    if redis.call('EXISTS', ARGV[4] .. instance) == 1 then
      taken = taken + 1
    else
      redis.call('HDEL', KEYS[1], user)
    end
  end
end
if taken >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
_UNSEAT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""  # noqa: E501


# -- what crosses Redis --------------------------------------------------------------------------


class StateEntry(msgspec.Struct, frozen=True, array_like=True):
    """A voice state in STATES_KEY, with the node holding it."""

    node: str
    state: Voice


class StoredGrant(msgspec.Struct, frozen=True, array_like=True):
    """A token's value in Redis: the node that made it and the voice state it opens."""

    node: str
    state: Voice


class StateCast(msgspec.Struct, frozen=True, tag="s", array_like=True):
    """A voice state changed on `node` (before None: joined; after None: left)."""

    node: str
    before: Voice | None
    after: Voice | None


class VoiceAsk(msgspec.Struct, frozen=True, tag="a", array_like=True):
    """To the member's node: leave voice (`leave`), or set self_video/self_stream."""

    user_id: int
    session_id: str
    channel_id: int
    leave: bool
    self_video: bool = False
    self_stream: bool = False


VoiceWire = StateCast | VoiceAsk

_encoder = msgspec.msgpack.Encoder()
_wire = msgspec.msgpack.Decoder(VoiceWire)
_grant = msgspec.msgpack.Decoder(StoredGrant)
_entry = msgspec.msgpack.Decoder(StateEntry)


def encode(message: VoiceWire | StoredGrant | StateEntry) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> VoiceWire:
    """Raises msgspec.DecodeError/ValidationError for anything `encode` did not make."""
    return _wire.decode(data)


def decode_grant(data: bytes) -> StoredGrant:
    return _grant.decode(data)


def decode_entry(data: bytes) -> StateEntry:
    return _entry.decode(data)


class VoiceSessions(Protocol):
    """What this module needs of the voice service (relay.voice.service.VoiceService)."""

    def channel_count(self, channel_id: int) -> int: ...
    def evict(self, channel_id: int, code: int, reason: str) -> None: ...


# -- the node's part -----------------------------------------------------------------------------


class ClusterVoice:
    """`VoiceCluster` for the chat layer (op 4) and `VoiceView` for the voice service."""

    def __init__(
        self,
        redis: coredis.Redis[bytes],
        broker: Broker,
        settings: Settings,
        states: VoiceStates,
        urls: NodeUrls,
        *,
        instance: str,
    ) -> None:
        self.redis = redis
        self.instance = instance  # this run of the node (relay.cluster.caps): seats' owner
        self._seat = redis.register_script(_SEAT)
        self._unseat = redis.register_script(_UNSEAT)
        self._seats: dict[tuple[int, int], str] = {}  # (user, channel) -> its seat's value
        self._seat_number = 0
        self.seat_fallbacks = 0  # seats decided here alone: Redis did not answer
        self.urls = urls
        self.broker = broker
        self.node_id = broker.node_id
        self.settings = settings
        self.states = states  # this node's own (authoritative for its gateway sessions)
        self.leases = Leases(redis, ttl_s=settings.lease_ttl_s)
        self.url = ""  # this node's voice endpoint, once the realtime listener is up (`run`)
        self.service: VoiceSessions | None = None
        # The mirror: the voice states this node's voice sessions may serve (module doc).
        self._by_user: dict[int, Voice] = {}
        self._origin: dict[int, str] = {}  # user id -> the node holding that state
        self._seen_at: dict[int, float] = {}  # when a remote state was last heard
        self.on_change: list[Callable[[Voice | None, Voice | None], None]] = []
        self.held: set[int] = set()  # channels this node serves
        self._taking: dict[int, trio.Event] = {}  # channels whose lease is being acquired
        self._sent_to: dict[int, str] = {}  # user id -> the node their last token points to
        # Writes to Redis in the order they were made: (kind, key, value or None to delete).
        self._grant_send, self._grant_recv = trio.open_memory_channel[
            tuple[str, str, bytes | None, _Written | None]
        ](GRANT_QUEUE)
        self._remote_node: dict[int, str] = {}  # user id -> node, for states.remote
        # Delivers an event to this node's own sessions only (the hub's `to_server`): a dead
        # node's members' leaves, which every node tells its own sessions.
        self.tell_here: Callable[[int, ChatEvent], None] | None = None
        self._nursery: trio.Nursery | None = None
        states.on_change.append(self._local_changed)
        states.cluster = self

    # -- VoiceView (the voice service's side) ---------------------------------------------------

    @property
    def by_user(self) -> Mapping[int, Voice]:
        return self._by_user

    async def redeem(
        self, token: str, user_id: int, server_id: int, session_id: str
    ) -> Voice | None:
        local = self.states.redeem(token, user_id, server_id, session_id)
        try:
            raw = await self.redis.getdel(grant_key(token))
        except Exception:
            log.warning("voice token not read", exc_info=True)
            return local
        if local is not None or raw is None:
            return local
        try:
            stored = decode_grant(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        state = stored.state
        if (state.user_id, state.server_id, state.session_id) != (user_id, server_id, session_id):
            return None
        known = self._by_user.get(user_id)
        if known is not None and self._origin.get(user_id) == stored.node:
            # Heard since the token was made (a mute, or a move: then the token is void).
            if known.channel_id != state.channel_id or known.session_id != session_id:
                return None
            state = known
        self._mirror(state, stored.node)
        return state

    async def own(self, channel_id: int) -> bool:
        if channel_id in self.held:
            return True
        return await self._take(channel_id)

    def leave(self, state: Voice) -> None:
        self._ask(state, VoiceAsk(state.user_id, state.session_id, state.channel_id, True))

    def set_media(self, state: Voice, *, self_video: bool, self_stream: bool) -> None:
        ask = VoiceAsk(
            state.user_id, state.session_id, state.channel_id, False, self_video, self_stream
        )
        self._ask(state, ask)

    def _ask(self, state: Voice, ask: VoiceAsk) -> None:
        origin = self._origin.get(state.user_id, self.node_id)
        if origin == self.node_id:
            self._asked(ask)
        else:
            self.broker.publish(node_topic(origin), encode(ask))

    def _asked(self, ask: VoiceAsk) -> None:
        """A voice node's request about a voice state of this node's (or its own)."""
        state = self.states.by_user.get(ask.user_id)
        if state is None or (state.session_id, state.channel_id) != (
            ask.session_id,
            ask.channel_id,
        ):
            return  # it changed meanwhile: the request is about a state that is gone
        if ask.leave:
            self.states.leave(ask.user_id)
        else:
            self.states.update(state, self_video=ask.self_video, self_stream=ask.self_stream)

    # -- VoiceCluster (the chat layer's side) ---------------------------------------------------

    async def endpoint(self, channel_id: int) -> str:
        try:
            owner = await self._owner_url(channel_id)
        except Unavailable:
            raise
        except Exception:
            log.warning("voice owner not found", exc_info=True)
            raise _unavailable() from None
        return owner

    async def _owner_url(self, channel_id: int) -> str:
        for _ in range(3):
            if channel_id in self.held:
                return self.url
            found = await self.leases.owner(f"voice:{channel_id}")
            if found is None:
                if await self._take(channel_id):
                    return self.url
                continue  # taken by another node meanwhile: look again
            node = found[0]
            if node == self.node_id:
                return self.url  # being taken by this node (`_take` in progress)
            place = await self.urls.lookup(node)
            if place is None:
                raise _unavailable()  # its node is gone; the lease expires within the ttl
            return place.ws + VOICE_ENDPOINT
        raise _unavailable()

    async def seat(self, user_id: int, channel_id: int, limit: int) -> bool:
        self._seat_number += 1
        value = f"{self.instance}|{self._seat_number}"
        try:
            seated: object = await self._seat(
                keys=[seats_key(channel_id)],
                args=[user_id, value, limit, ALIVE, SEATS_TTL_MS],
            )
        except Exception:
            self.seat_fallbacks += 1
            if self.seat_fallbacks % 1000 == 1:
                log.warning("voice seats unavailable", exc_info=True)
            return True  # the caller's own count decided already
        if seated != 1:
            return False
        self._seats[user_id, channel_id] = value
        return True

    def unseat(self, user_id: int, channel_id: int) -> None:
        seat = self._seats.pop((user_id, channel_id), None)
        if seat is None:
            return
        try:
            self._grant_send.send_nowait(
                ("unseat", str(channel_id), f"{user_id} {seat}".encode(), None)
            )
        except trio.WouldBlock:  # it goes with this node's instance, or with the key
            log.warning("voice seat not given back")

    async def granted(self, grant: Grant, state: Voice) -> None:
        done = _Written()
        value = encode(StoredGrant(self.node_id, state))
        try:
            self._grant_send.send_nowait(("grant", grant.token, value, done))
        except trio.WouldBlock:
            raise _unavailable() from None
        await done.event.wait()
        if not done.ok:  # the serving node could not redeem it
            raise _unavailable()
        try:
            found = await self.leases.owner(f"voice:{state.channel_id}")
        except Exception:
            found = None
        self._sent_to[state.user_id] = found[0] if found is not None else self.node_id

    def voided(self, tokens: list[str]) -> None:
        for token in tokens:
            try:
                self._grant_send.send_nowait(("grant", token, None, None))
            except trio.WouldBlock:  # it expires with voice_token_ttl_s anyway
                log.warning("voice token not voided in Redis")

    async def moved(self, user_id: int, channel_id: int) -> bool:
        sent_to = self._sent_to.get(user_id)
        try:
            found = await self.leases.owner(f"voice:{channel_id}")
        except Exception:
            return False
        return found is None or found[0] != sent_to

    async def _write_forever(self) -> None:
        """Grant SETs and voiding DELs, and this node's voice states in STATES_KEY, in the
        order they were made."""
        ttl_ms = round(self.settings.voice_token_ttl_s * 1000)
        async for kind, key, value, done in self._grant_recv:
            try:
                if kind == "unseat":
                    assert value is not None
                    user, _, seat = value.decode().partition(" ")
                    await self._unseat(keys=[seats_key(int(key))], args=[user, seat])
                elif kind == "state":
                    if value is None:
                        await self.redis.hdel(STATES_KEY, [key])
                    else:
                        await self.redis.hset(STATES_KEY, {key: value})
                elif value is None:
                    await self.redis.delete([grant_key(key)])
                else:
                    await self.redis.set(grant_key(key), value, px=ttl_ms)
                if done is not None:
                    done.ok = True
            except Exception:
                log.warning("voice token or state not written", exc_info=True)
            if done is not None:
                done.event.set()

    # -- every node's voice states (READY, REST) --------------------------------------------------

    def _heard_elsewhere(self, node: str, before: Voice | None, after: Voice | None) -> None:
        """Another node's voice state changed: this node's copy of it (`states.remote`)."""
        either = after or before
        if either is None:
            return
        user_id = either.user_id
        if after is not None:
            self.states.remote[user_id] = after
            self._remote_node[user_id] = node
        elif self._remote_node.get(user_id) == node:
            self.states.remote.pop(user_id, None)
            del self._remote_node[user_id]

    async def _load_states(self) -> None:
        """At start: every other node's voice states, from STATES_KEY."""
        try:
            entries = await self.redis.hgetall(STATES_KEY)
        except Exception:
            log.warning("voice states not read", exc_info=True)
            return
        for value in entries.values():
            try:
                entry = decode_entry(value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            user_id = entry.state.user_id
            if entry.node != self.node_id and user_id not in self.states.remote:
                self._heard_elsewhere(entry.node, None, entry.state)

    async def _sweep_forever(self) -> None:
        """Drop the voice states of nodes that are gone (their URLs expired), here and in
        STATES_KEY: a node that dies cannot say its members left."""
        while True:
            await trio.sleep(SWEEP_EVERY_S)
            try:
                await self._sweep()
            except Exception:
                log.warning("voice states not swept", exc_info=True)

    async def _sweep(self) -> None:
        nodes = sorted(set(self._remote_node.values()) | set(self._origin.values()))
        nodes = [n for n in nodes if n != self.node_id]
        if not nodes:
            return
        alive = await self.redis.mget([ws_key(node) for node in nodes])
        dead = {node for node, url in zip(nodes, alive, strict=True) if url is None}
        if not dead:
            return
        gone = [u for u, node in self._remote_node.items() if node in dead]
        for user_id in gone:
            state = self.states.remote[user_id]
            self._heard_elsewhere(self._remote_node[user_id], state, None)
            if self.tell_here is not None:
                self.tell_here(state.server_id, VoiceStateUpdate(d=state.out(left=True)))
        for user_id in [u for u, node in self._origin.items() if node in dead]:
            self._unmirror(user_id)
        if gone:
            await self.redis.hdel(STATES_KEY, [str(u) for u in gone])

    # -- the mirror -----------------------------------------------------------------------------

    def _mirror(self, state: Voice, node: str) -> None:
        before = self._by_user.get(state.user_id)
        self._by_user[state.user_id] = state
        self._origin[state.user_id] = node
        self._seen_at[state.user_id] = trio.current_time()
        if before != state:
            for listener in self.on_change:
                listener(before, state)

    def _unmirror(self, user_id: int) -> None:
        before = self._by_user.pop(user_id, None)
        self._origin.pop(user_id, None)
        self._seen_at.pop(user_id, None)
        if before is not None:
            for listener in self.on_change:
                listener(before, None)

    def _local_changed(self, before: Voice | None, after: Voice | None) -> None:
        """A change of this node's own voice states: mirrored, and published for the node
        serving the channel(s) it concerns; a seat left behind is given back."""
        if before is not None and (after is None or after.channel_id != before.channel_id):
            self.unseat(before.user_id, before.channel_id)
        if after is not None:
            self._mirror(after, self.node_id)
        elif before is not None:
            self._sent_to.pop(before.user_id, None)
            if self._origin.get(before.user_id) == self.node_id:
                self._unmirror(before.user_id)
        self.broker.publish(STATES_TOPIC, encode(StateCast(self.node_id, before, after)))
        either = after or before
        if either is not None:
            entry = None if after is None else encode(StateEntry(self.node_id, after))
            try:
                self._grant_send.send_nowait(("state", str(either.user_id), entry, None))
            except trio.WouldBlock:
                log.warning("voice state not written to Redis")

    def _heard(self, data: bytes) -> None:
        """Another node's message on one of this node's voice topics."""
        try:
            message = decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("undecodable voice message")
            return
        match message:
            case VoiceAsk():
                self._asked(message)
            case StateCast(node, before, after):
                self._heard_elsewhere(node, before, after)
                either = after or before
                if either is None:
                    return
                user_id = either.user_id
                if after is not None and after.channel_id in self.held:
                    self._mirror(after, node)
                elif self._origin.get(user_id) == node:
                    self._unmirror(user_id)  # left, or moved to a channel served elsewhere

    # -- holding channels -----------------------------------------------------------------------

    async def _take(self, channel_id: int) -> bool:
        """Acquire the channel's lease if it is free, and hold it from now on."""
        taking = self._taking.get(channel_id)
        if taking is not None:
            await taking.wait()
            return channel_id in self.held
        if self._nursery is None:
            return False
        self._taking[channel_id] = event = trio.Event()
        try:
            lease = await self.leases.acquire(f"voice:{channel_id}", self.node_id)
            if lease is None:
                return False
            self.held.add(channel_id)
            for user_id, state in list(self.states.remote.items()):
                if state.channel_id == channel_id:  # joined while another node served it
                    self._mirror(state, self._remote_node[user_id])
            self._nursery.start_soon(self._hold, channel_id, lease)
            return True
        except Exception:
            log.warning("voice lease not acquired", exc_info=True)
            return False
        finally:
            del self._taking[channel_id]
            event.set()

    def _in_use(self, channel_id: int) -> bool:
        service = self.service
        if service is not None and service.channel_count(channel_id):
            return True
        # Members who joined and may still connect (a token lives voice_token_ttl_s).
        soon = trio.current_time() - self.settings.voice_token_ttl_s
        return any(
            v.channel_id == channel_id and self._seen_at.get(u, 0.0) > soon
            for u, v in self._by_user.items()
        )

    async def _hold(self, channel_id: int, lease: Lease) -> None:
        lost = False

        def on_lost() -> None:
            nonlocal lost
            lost = True
            self.held.discard(channel_id)
            if self.service is not None:
                self.service.evict(
                    channel_id, int(VoiceClose.VOICE_SERVER_MOVED), "voice channel moved"
                )

        idle_for = 0.0
        try:
            async with self.leases.hold(lease, on_lost=on_lost):
                while idle_for < self.leases.ttl_s:
                    await trio.sleep(IDLE_CHECK_S)
                    idle_for = 0.0 if self._in_use(channel_id) else idle_for + IDLE_CHECK_S
                self.held.discard(channel_id)  # before the release: no new session meanwhile
        finally:
            self.held.discard(channel_id)
            for user_id, state in list(self._by_user.items()):
                if state.channel_id == channel_id and self._origin.get(user_id) != self.node_id:
                    self._unmirror(user_id)
            if lost:
                log.warning("voice channel lost", extra={"channel": channel_id})

    # -- running --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve as this node's voice part (once the node's URLs are known: `urls.own`)."""
        assert self.urls.own is not None
        self.url = self.urls.own.ws + VOICE_ENDPOINT
        self.broker.listen(node_topic(self.node_id), self._heard)
        self.broker.listen(STATES_TOPIC, self._heard)
        await self._load_states()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._write_forever)
            nursery.start_soon(self._sweep_forever)
            task_status.started()


class _Written:
    """A grant write's outcome, for the join waiting on it."""

    __slots__ = ("event", "ok")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.ok = False


def _unavailable() -> Unavailable:
    return Unavailable(
        "the voice channel's node cannot be reached; try again", code="voice_unavailable"
    )
