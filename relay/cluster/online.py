"""Who is online on the other nodes, per server: what `Fanout.online` answers in cluster mode.

Each node keeps its own online members of each server in a Redis hash, `relay:online:<server>`,
one field per node holding msgpack `[expires_at_ms, [user ids]]`, rewritten whenever the set
changes and every ONLINE_RENEW_S, so a dead node's entry expires after ONLINE_TTL_S. It also
publishes every change on the server's topic (`OnlineCast`), so the nodes subscribed there (the
ones with local members: the only ones whose chat operations need the answer) keep their copy
current without polling; a node seeds its copy from the hash when it subscribes, and re-reads
it every ONLINE_RENEW_S to drop the entries of nodes that died.

Limit: a node with no online member of a server knows only its own (empty) set for it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

ONLINE_TTL_S = 30.0
ONLINE_RENEW_S = 10.0
_Entry = tuple[int, list[int]]  # (expires_at_ms, users)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Entry)


def hash_key(server_id: int) -> str:
    return f"relay:online:{server_id}"


def entry(users: Iterable[int]) -> bytes:
    """This node's hash field value for a server, valid for ONLINE_TTL_S."""
    return _encoder.encode((int((time.time() + ONLINE_TTL_S) * 1000), sorted(users)))


class OnlineDirectory:
    """Other nodes' online members, by server then node (this node's own are the hub's)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.remote: dict[int, dict[str, tuple[float, frozenset[int]]]] = {}

    def heard(self, node: str, server_id: int, users: Collection[int]) -> None:
        """A node's online members of a server, as it just published them."""
        if node == self.node_id:
            return
        nodes = self.remote.setdefault(server_id, {})
        if users:
            nodes[node] = (time.time() + ONLINE_TTL_S, frozenset(users))
        else:
            nodes.pop(node, None)

    def load(self, server_id: int, fields: Mapping[bytes, bytes]) -> list[bytes]:
        """Replace a server's entries with its hash's; the fields that expired (to delete)."""
        now_ms = time.time() * 1000
        nodes: dict[str, tuple[float, frozenset[int]]] = {}
        expired = []
        for field, value in fields.items():
            node = field.decode(errors="replace")
            try:
                expires_ms, users = _decoder.decode(value)
            except (msgspec.DecodeError, msgspec.ValidationError):
                expired.append(field)
                continue
            if expires_ms < now_ms:
                expired.append(field)
            elif node != self.node_id and users:
                nodes[node] = (expires_ms / 1000, frozenset(users))
        self.remote[server_id] = nodes
        return expired

    def forget(self, server_id: int) -> None:
        """No local member any more: this node stops hearing about the server."""
        self.remote.pop(server_id, None)

    def online_elsewhere(self, user_id: int, besides: str | None = None) -> bool:
        """Whether another node (not `besides` either) has the user online in a server this
        node follows."""
        now = time.time()
        for nodes in self.remote.values():
            for node, (expires, users) in nodes.items():
                if node != besides and expires >= now and user_id in users:
                    return True
        return False

    def online(self, server_id: int, local: Collection[int]) -> Collection[int]:
        nodes = self.remote.get(server_id)
        if not nodes:
            return local
        now = time.time()
        users = set(local)
        for expires, theirs in nodes.values():
            if expires >= now:
                users |= theirs
        return users
