"""Per-topic logs in Redis (Centrifugo's "epoch plus offset"), so that a session taken over on
another node gets the events published while no node served it.

Logged topics: the server topics `relay:s:<id>` and the user topics `relay:u:<id>`, which carry
every event a session's frames come from but presence (`relay:presence`) and the changes
(`relay:changes`, which a node taking a session over reads from the database anyway).

Per logged topic, two keys, both expiring LOG_TTL_S after the topic's last publication or sync
(a node syncs its subscribed topics when it subscribes and every LOG_TTL_S / 4):
- `<prefix>logm:<name>`: a hash, `e` the topic's epoch (a random token chosen when the hash is
  made: a Redis restart or flush, or the keys' expiry, makes a new one) and `o` its last offset;
- `<prefix>log:<name>`: a stream of its publications, entry id `0-<offset>`, fields `d` (the
  publication as published: `<node>|<payload>`) and `p` (the publishing node's publication id),
  trimmed with `XADD ... MAXLEN ~ broker_topic_log`.

Every event published on a logged topic (not a node's online set, which no session receives)
goes through `PUBLISH_SCRIPT` (one call per batch of the broker's pipeline): it takes the next
offset, appends to the stream and publishes `#<epoch>:<offset>:<pub>|<node>|<payload>`
(`Mark`, parsed by `parse`), atomically, so the order of offsets is the order every subscriber
hears them in. `SYNC_SCRIPT` publishes a topic's
current (epoch, offset) without a publication, `#<epoch>:<offset>:0|<node>|` + SYNC: a node
that has just subscribed to a topic learns from it where its own count starts (everything
before it was published before its subscription).

`Tracker` is a node's count per topic: the highest offset up to which it has processed every
publication (delivered to its sessions, its own included: those are delivered locally before
their offset is known, so they count once heard back), and the node's own publications already
delivered locally but not yet heard back (`ahead`). A session's state in Redis records, for
each of its topics, the `Mark` of that moment (relay.cluster.replay); a node taking the session
over reads each topic's log after it (`read_after`).
"""

from __future__ import annotations

import secrets
import struct
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable

    import coredis

PREFIX = "relay:"
LOG_TTL_S = 86_400  # a topic's log expires a day after its last publication or subscription
SYNC = b"\x00sync"  # the payload of a sync (an envelope never starts with a zero byte)
OWN = b"\x00own"  # in a node's inbox: one of its own publications, heard back (not decoded)
LOGGED = (PREFIX + "s:", PREFIX + "u:")
PUB_IDS = 1 << 32  # publication ids are 32-bit (struct I4 in the script's batch)

# Both scripts: a topic's log keys and epoch; a topic without one gets `fresh` and an empty log.
_LOG_OF = """
local function log_of(prefix, topic, fresh)
  local name = string.sub(topic, #prefix + 1)
  local meta, stream = prefix .. 'logm:' .. name, prefix .. 'log:' .. name
  local epoch = redis.call('HGET', meta, 'e')
  if not epoch then
    epoch = fresh
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'e', epoch, 'o', 0)
  end
  return meta, stream, epoch
end
"""

# ARGV[1] the streams' length, ARGV[2] the keys' ttl (ms), ARGV[3] an epoch for a topic that
# has none, ARGV[4] the key prefix, ARGV[5] the batch: per publication (topic length, pub id,
# data length), topic, data. One binary argument for the batch, as relay.cluster.replay does.
PUBLISH_SCRIPT = (
    _LOG_OF
    + """
local maxlen, ttl, fresh, prefix, blob = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local pos, n, touched = 1, 0, {}
while pos <= #blob do
  local topic_len, pub, data_len = struct.unpack('<I2I4I4', blob, pos)
  pos = pos + 10
  local topic = string.sub(blob, pos, pos + topic_len - 1)
  local data = string.sub(blob, pos + topic_len, pos + topic_len + data_len - 1)
  pos = pos + topic_len + data_len
  local meta, stream, epoch = log_of(prefix, topic, fresh)
  local offset = redis.call('HINCRBY', meta, 'o', 1)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '0-' .. offset, 'd', data, 'p', pub)
  redis.call('PUBLISH', topic, '#' .. epoch .. ':' .. offset .. ':' .. pub .. '|' .. data)
  touched[meta] = stream
  n = n + 1
end
for meta, stream in pairs(touched) do  -- once per topic and batch
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', stream, ttl)
end
return n
"""
)

# ARGV[1] the ttl (ms), ARGV[2] an epoch for a topic that has none, ARGV[3] the key prefix,
# ARGV[4] what follows the header (`<node>|` + SYNC); KEYS: none, the topics are ARGV[5..].
SYNC_SCRIPT = (
    _LOG_OF
    + """
local ttl, fresh, prefix, body = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i = 5, #ARGV do
  local topic = ARGV[i]
  local meta, stream, epoch = log_of(prefix, topic, fresh)
  local offset = redis.call('HGET', meta, 'o')
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PUBLISH', topic, '#' .. epoch .. ':' .. offset .. ':0|' .. body)
end
return #ARGV - 4
"""
)

_PUB_HEAD = struct.Struct("<HII")  # topic length, pub id, data length


def logged(topic: str) -> bool:
    return topic.startswith(LOGGED)


def new_epoch() -> str:
    return secrets.token_hex(8)


class Mark(msgspec.Struct, frozen=True, array_like=True):
    """Where a topic's log stands: `epoch`, `offset`; in a header, `pub` is the publication's
    id (0 for a sync); in a session's state, `ahead` lists the publication ids of the node's
    own publications after `offset` that the session's frames already hold."""

    epoch: str
    offset: int
    pub: int = 0
    ahead: tuple[int, ...] = ()


def header(mark: Mark) -> bytes:
    """What the scripts put before a publication (for tests and the codec's round trip)."""
    return f"#{mark.epoch}:{mark.offset}:{mark.pub}|".encode()


def parse(data: bytes) -> tuple[Mark, bytes] | None:
    """(its mark, the rest) of a published message that has a header, else None. Raises
    ValueError for a malformed header."""
    if not data.startswith(b"#"):
        return None
    head, separator, rest = data.partition(b"|")
    if not separator:
        raise ValueError("a log header without its end")
    fields = head[1:].decode("ascii", "replace").split(":")
    if len(fields) != 3 or not fields[0] or not fields[1].isdigit() or not fields[2].isdigit():
        raise ValueError("a malformed log header")
    epoch, offset, pub = fields
    return Mark(epoch, int(offset), int(pub)), rest


def pack(batch: Iterable[tuple[str, int, bytes]]) -> bytes:
    """Publications (topic, pub id, framed data) as PUBLISH_SCRIPT reads them."""
    parts: list[bytes] = []
    for topic, pub, data in batch:
        name = topic.encode()
        parts += (_PUB_HEAD.pack(len(name), pub % PUB_IDS, len(data)), name, data)
    return b"".join(parts)


class Tracker:
    """A node's count of each logged topic it follows (module doc). Changed only by the
    fan-out's delivering task (in the order the topics' messages arrive) and by local
    deliveries of the node's own publications."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[str, int]] = {}  # topic -> (epoch, offset processed)
        self.ahead: dict[str, set[int]] = {}  # topic -> own pubs delivered, not yet heard back

    def delivered(self, topic: str, pub: int) -> None:
        """The node's own publication `pub` on `topic` was delivered to its sessions."""
        self.ahead.setdefault(topic, set()).add(pub)

    def lost(self, topic: str, pub: int) -> None:
        """Never published (dropped): it will not be heard back."""
        mine = self.ahead.get(topic)
        if mine is not None:
            mine.discard(pub)

    def heard(self, topic: str, mark: Mark, *, sync: bool, own: bool) -> bool:
        """A message of `topic` was processed (delivered, or a sync). False if the count shows
        that messages were missed (a gap, or another epoch mid-way): the caller resyncs."""
        if own:
            self.lost(topic, mark.pub)
        known = self.marks.get(topic)
        if known is None:
            if sync:  # everything before it was published before this node subscribed
                self.marks[topic] = (mark.epoch, mark.offset)
            return True
        epoch, offset = known
        expected = offset if sync else offset + 1
        if mark.epoch == epoch and mark.offset == expected:
            self.marks[topic] = (epoch, mark.offset)
            return True
        if mark.epoch == epoch and mark.offset < expected:
            return True  # heard before (cannot happen on one connection; harmless)
        # A new epoch starting afresh (the log expired or Redis was flushed) misses nothing.
        fresh = mark.epoch != epoch and mark.offset == (0 if sync else 1)
        self.marks[topic] = (mark.epoch, mark.offset)
        return fresh

    def forget(self, topics: Iterable[str]) -> None:
        for topic in topics:
            self.marks.pop(topic, None)
            self.ahead.pop(topic, None)

    def mark(self, topic: str) -> Mark | None:
        """Where the node stands on `topic` now (None: not counted yet)."""
        known = self.marks.get(topic)
        if known is None:
            return None
        return Mark(known[0], known[1], 0, tuple(sorted(self.ahead.get(topic, ()))))


class Entry(msgspec.Struct, frozen=True):
    offset: int
    node: str
    pub: int
    payload: bytes


class Trimmed(Exception):
    """The log no longer holds what a session missed (trimmed, expired, another epoch)."""


async def read_after(
    redis: coredis.Redis[bytes], topic: str, mark: Mark, count: int, prefix: str = PREFIX
) -> tuple[list[Entry], int]:
    """The topic's publications after `mark` (at most `count`), and the log's last offset.

    Raises:
        Trimmed: the log's epoch is not the mark's, or it lost entries after the mark."""
    name = topic.removeprefix(prefix)
    async with redis.pipeline(transaction=False) as pipe:
        got_meta = pipe.hmget(f"{prefix}logm:{name}", ["e", "o"])
        got_entries = pipe.xrange(f"{prefix}log:{name}", f"(0-{mark.offset}", "+", count=count)
    (epoch, last), entries = await got_meta, await got_entries
    if epoch is None or last is None or epoch.decode() != mark.epoch:
        raise Trimmed(topic)
    found: list[Entry] = []
    expected = mark.offset + 1
    for entry in entries:
        identifier = entry.identifier
        if isinstance(identifier, bytes):
            identifier = identifier.decode()
        offset = int(identifier.rpartition("-")[2])
        data, pub = entry.field_values.get(b"d"), entry.field_values.get(b"p")
        if offset != expected or not isinstance(data, bytes) or pub is None:
            raise Trimmed(topic)
        node, _, payload = data.partition(b"|")
        found.append(Entry(offset, node.decode(), int(pub), payload))
        expected += 1
    if not found and int(last) > mark.offset:
        raise Trimmed(topic)
    return found, int(last)
