"""Who the client is behind a reverse proxy: X-Forwarded-For and X-Request-Id, believed only
from the addresses the operator trusts (the `trusted_proxies` setting).

Every per-IP limit (REST requests per second, logins, registrations, password hashing, open
WebSocket connections per address) keys on the client's address. Behind a proxy the TCP peer is
the proxy, so without this every client would share the proxy's limits. With it, a request whose
peer is a trusted proxy is attributed to the address the proxy says it came from: X-Forwarded-For
is read from the right (the entry the nearest proxy added) and trusted proxies are skipped, so
the first untrusted address is the client. What a client writes into the header itself sits to
the left of that entry and is never believed. A request from any other peer is the peer.

Pure: no I/O, no trio.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# A request id we take from a trusted proxy: nginx's $request_id is 32 hex digits; a UUID is 36.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ENTRIES = re.compile(r"[\s,]+")


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses ("127.0.0.1", "::1") or networks ("10.0.0.0/8"), as networks.

    Raises:
        ValueError: an entry is neither (the message names it).
    """
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {entry!r}") from None
    return tuple(networks)


def split_list(text: str) -> list[str]:
    """An environment variable's list: entries separated by commas or white space."""
    return [entry for entry in _ENTRIES.split(text) if entry]


def new_request_id() -> str:
    """16 random hex digits: unique enough to find one request's lines in a day of logs."""
    return os.urandom(8).hex()


def _address(text: str) -> Address | None:
    """One X-Forwarded-For entry as an address: "1.2.3.4", "1.2.3.4:5678", "[::1]:80" or
    "::1"; None if it is none of those ("unknown", an obfuscated identifier, garbage)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return address


class TrustedProxies:
    """The operator's trusted proxies and what a request from one of them may tell us."""

    __slots__ = ("networks",)

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks = parse_networks(entries)

    def trusts(self, peer: str) -> bool:
        """Whether the TCP peer `peer` is a trusted proxy."""
        if not self.networks:
            return False
        address = _address(peer)
        return address is not None and self._trusted(address)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The client's address: `peer` itself unless it is a trusted proxy; then the rightmost
        X-Forwarded-For address (all the headers' entries in order) that is not a trusted
        proxy. If every entry is trusted, the leftmost; if one is not an address, the trusted
        hop to its right, since nothing further left can be believed."""
        if not self.trusts(peer):
            return peer
        client = peer
        entries = [entry for header in forwarded_for for entry in header.split(",")]
        for entry in reversed(entries):
            address = _address(entry)
            if address is None:
                break
            client = str(address)
            if not self._trusted(address):
                break
        return client

    def request_id(self, peer: str, given: str | None) -> str:
        """The id of a request: the X-Request-Id a trusted proxy passed on (so the proxy's log
        and ours share it), else a new one."""
        if given is not None and _REQUEST_ID.fullmatch(given) and self.trusts(peer):
            return given
        return new_request_id()
