"""relay.forwarded: which address a request is from, and when X-Forwarded-For and X-Request-Id
are believed (only from trusted proxies)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.forwarded import TrustedProxies, new_request_id, parse_networks, split_list

PROXIES = TrustedProxies(["127.0.0.2", "10.0.0.0/8", "fd00::/8"])


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    none = TrustedProxies()
    assert not none.trusts("127.0.0.1")
    assert none.client("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"


def test_an_untrusted_peer_cannot_name_another_client() -> None:
    assert PROXIES.client("198.51.100.4", ["203.0.113.9"]) == "198.51.100.4"
    assert PROXIES.client("198.51.100.4", ["10.0.0.1"]) == "198.51.100.4"


@pytest.mark.parametrize(
    ("headers", "client"),
    [
        (["203.0.113.9"], "203.0.113.9"),
        # What the client wrote itself is left of what the proxy appended: never believed.
        (["6.6.6.6, 203.0.113.9"], "203.0.113.9"),
        (["6.6.6.6", "203.0.113.9"], "203.0.113.9"),  # two headers are one list, in order
        # A chain of trusted proxies is skipped from the right.
        (["203.0.113.9, 10.1.2.3, 10.0.0.7"], "203.0.113.9"),
        (["2001:db8::5"], "2001:db8::5"),
        (["203.0.113.9:51000"], "203.0.113.9"),  # with a port
        (["[2001:db8::5]:443"], "2001:db8::5"),
        (["::ffff:203.0.113.9"], "203.0.113.9"),  # IPv4-mapped
        # Only trusted hops: the leftmost is as far as can be seen.
        (["10.0.0.7, 10.0.0.8"], "10.0.0.7"),
        # Not an address: nothing left of it can be believed; the hop to its right is the client.
        (["6.6.6.6, unknown, 10.0.0.7"], "10.0.0.7"),
        (["garbage"], "127.0.0.2"),
        ([""], "127.0.0.2"),
        ([], "127.0.0.2"),  # a trusted proxy that sent no header: the proxy itself
    ],
)
def test_a_trusted_proxy_names_the_client(headers: list[str], client: str) -> None:
    assert PROXIES.trusts("127.0.0.2")
    assert PROXIES.client("127.0.0.2", headers) == client


def test_networks_and_ipv6_proxies() -> None:
    assert PROXIES.trusts("10.200.3.4")
    assert PROXIES.trusts("fd12::1")
    assert PROXIES.trusts("::ffff:10.0.0.1")  # a dual-stack socket's view of 10.0.0.1
    assert not PROXIES.trusts("11.0.0.1")
    assert not PROXIES.trusts("unknown")
    assert PROXIES.client("fd12::1", ["203.0.113.9"]) == "203.0.113.9"


@given(peer=st.ip_addresses(), header=st.text(max_size=60))
def test_the_client_is_the_peer_or_a_forwarded_address(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, header: str
) -> None:
    client = PROXIES.client(str(peer), [header])
    if not PROXIES.trusts(str(peer)):
        assert client == str(peer)
    else:
        assert str(ipaddress.ip_address(client)) == client  # an address, normalized


def test_request_id_is_taken_only_from_a_trusted_proxy() -> None:
    nginx_id = "4f6a1c0b9e2d4c7a8b3e5f6a7b8c9d0e"
    assert PROXIES.request_id("127.0.0.2", nginx_id) == nginx_id
    assert PROXIES.request_id("198.51.100.4", nginx_id) != nginx_id
    for unusable in ["", "a b", "x" * 65, "id\r\nx-injected: 1"]:
        assert PROXIES.request_id("127.0.0.2", unusable) != unusable
    generated = PROXIES.request_id("127.0.0.2", None)
    assert len(generated) == 16
    assert generated != new_request_id()


def test_parse_networks_names_a_bad_entry() -> None:
    assert [str(n) for n in parse_networks(["127.0.0.1", "::1", "10.1.2.3/8"])] == [
        "127.0.0.1/32",
        "::1/128",
        "10.0.0.0/8",
    ]
    with pytest.raises(ValueError, match=r"'proxy\.local'"):
        parse_networks(["127.0.0.1", "proxy.local"])


def test_split_list() -> None:
    assert split_list(" a, b\tc,,d ") == ["a", "b", "c", "d"]
    assert split_list("") == []
