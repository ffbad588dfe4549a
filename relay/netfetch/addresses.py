"""Which IP addresses an outgoing request may reach: public unicast only.

Pure functions over `ipaddress`; the fetcher (relay.netfetch.fetcher) asks `refusal` about every
address a name resolves to and about every IP literal in a URL. IPv6 forms that carry an IPv4
address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged by the address they
carry too, so `::ffff:127.0.0.1` or `2002:7f00:1::` cannot reach loopback.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CGNAT = ipaddress.IPv4Network("100.64.0.0/10")  # shared address space (RFC 6598)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215)
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d (RFC 4291 2.5.5.1)
TEST_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")  # the one address the test setting allows


def refusal(address: IPAddress, *, allow_test_loopback: bool = False) -> str | None:
    """Why `address` may not be contacted (a few words), or None if it may: refused are
    loopback, private, link-local, CGNAT, multicast, reserved, unspecified, documentation and
    every other non-global range, and IPv6 addresses embedding any of those.
    `allow_test_loopback` lets exactly 127.0.0.1 through (tests' local servers only)."""
    if allow_test_loopback and address == TEST_LOOPBACK:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        for embedded in _embedded_ipv4(address):
            if (why := refusal(embedded)) is not None:
                return f"embeds {embedded} ({why})"
        if address in IPV4_COMPATIBLE or address in NAT64_LOCAL:
            return "IPv4-compatible or local NAT64"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in CGNAT:
        return "CGNAT (100.64.0.0/10)"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if not address.is_global:
        return "not a global address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client); the client is already de-obfuscated
    if address in NAT64 or address in IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    return found


def parse_ip(text: str) -> IPAddress | None:
    """An IP literal (IPv6 without brackets, no zone id), else None."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
