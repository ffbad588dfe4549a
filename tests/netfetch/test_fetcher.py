"""The SSRF-safe fetcher against a real origin on 127.0.0.1: each refusal the rules name, and
that what is allowed works (Host and SNI kept on the name, connection to the checked address)."""

from __future__ import annotations

import gzip
import ipaddress
import ssl

import pytest
import trio
import trustme
from hypothesis import given
from hypothesis import strategies as st

from relay.netfetch import FetchError, FetchPolicy, Limits, Resolver, fetch
from relay.netfetch.addresses import refusal
from tests.netfetch.origin import Origin, Request, response, serve_origin, static


async def endless(request: Request, stream: trio.abc.Stream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n")
    while True:
        await stream.send_all(b"<p>more</p>" * 1000)


async def drip(request: Request, stream: trio.abc.Stream) -> None:
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 99\r\n\r\n"
    )
    while True:
        await stream.send_all(b"x")
        await trio.sleep(0.05)


async def unsized_image(request: Request, stream: trio.abc.Stream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n")
    for _ in range(50 * 16):  # 50 MB in 64 KiB pieces, unless the reader stops
        await stream.send_all(b"\0" * 65536)


async def echo(request: Request, stream: trio.abc.Stream) -> None:
    lines = [f"{k}: {v}" for k, v in request.headers.items()]
    body = f"{request.method}\n" + "\n".join(lines) + "\n\n" + request.body.decode()
    await stream.send_all(response(200, body.encode(), "text/plain"))


def make_origin() -> Origin:
    bomb = gzip.compress(b"a" * (8 * 1024 * 1024))
    return Origin(
        {
            "/ok": static(200, b"<title>hi</title>"),
            "/endless": endless,
            "/drip": drip,
            "/huge.png": static(200, b"", "image/png", Content_Length="52428800"),
            "/unsized.png": unsized_image,
            "/to-ok": static(302, b"", Location="/ok"),
            "/set-cookie": static(302, b"", Location="/echo", Set_Cookie="sid=secret; Path=/"),
            "/echo": echo,
            "/gone": static(410, b"gone"),
            "/bomb": static(200, bomb, Content_Encoding="gzip"),
        }
    )


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = make_origin()
    await nursery.start(serve_origin, server)
    return server


def resolver_of(table: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    async def resolve(host: str) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(f"unknown name {host}")
        return table[host]

    return resolve


def policy_for(
    origin: Origin,
    table: dict[str, list[str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> FetchPolicy:
    return FetchPolicy(
        ports=frozenset({origin.port}),
        allow_test_loopback=True,
        resolver=resolver_of(table or {}),
        ssl_context=ssl_context,
    )


async def refused(url: str, policy: FetchPolicy, limits: Limits | None = None) -> str:
    with pytest.raises(FetchError) as caught:
        await fetch(url, policy, limits or Limits())
    return caught.value.reason


async def test_a_plain_fetch_keeps_the_name_and_sends_no_cookies(origin: Origin) -> None:
    calls: list[str] = []
    policy = FetchPolicy(
        ports=frozenset({origin.port}),
        allow_test_loopback=True,
        resolver=resolver_of({"site.test": ["127.0.0.1"]}, calls),
    )
    got = await fetch(origin.url("/set-cookie", host="site.test"), policy)
    assert got.status == 200
    assert got.url == origin.url("/echo", host="site.test")
    text = got.body.decode()
    assert f"host: site.test:{origin.port}" in text  # connected to 127.0.0.1, Host kept
    assert "user-agent: RelayBot/" in text
    assert "cookie" not in text.lower().replace("set-cookie", "")
    assert calls == ["site.test", "site.test"]  # once per hop, never by the HTTP library
    # A name in Unicode is resolved, checked and connected to in its ASCII (IDNA) form.
    policy = FetchPolicy(
        ports=frozenset({origin.port}),
        allow_test_loopback=True,
        resolver=resolver_of({"xn--mnchen-3ya.test": ["127.0.0.1"]}),
    )
    got = await fetch(origin.url("/echo", host="münchen.test"), policy)
    assert f"host: xn--mnchen-3ya.test:{origin.port}" in got.body.decode()


async def test_status_and_post_body_come_back(origin: Origin) -> None:
    policy = policy_for(origin)
    gone = await fetch(origin.url("/gone"), policy)
    assert (gone.status, gone.body) == (410, b"gone")
    sent = await fetch(
        origin.url("/echo"),
        policy,
        method="POST",
        body=b"payload",
        headers={"TTL": "60", "Cookie": "x=1", "Host": "evil"},
    )
    text = sent.body.decode()
    assert text.startswith("POST\n")
    assert text.endswith("\n\npayload")
    assert "ttl: 60" in text
    assert "cookie" not in text
    assert "evil" not in text


@pytest.mark.parametrize(
    ("name", "addresses"),
    [
        ("loop.test", ["127.0.0.1"]),
        ("private.test", ["10.0.0.1"]),
        ("mixed.test", ["93.184.216.34", "10.0.0.1"]),  # one bad address refuses all
        ("cgnat.test", ["100.64.1.1"]),
        ("linklocal.test", ["169.254.169.254"]),
        ("mapped.test", ["::ffff:127.0.0.1"]),
        ("v6loop.test", ["::1"]),
        ("sixtofour.test", ["2002:0a00:0001::1"]),
        ("multicast.test", ["224.0.0.1"]),
        ("unspecified.test", ["0.0.0.0"]),
    ],
)
async def test_names_resolving_to_internal_addresses_are_refused(
    origin: Origin, name: str, addresses: list[str]
) -> None:
    # allow_test_loopback is off here: 127.0.0.1 itself must be refused in production.
    policy = FetchPolicy(
        ports=frozenset({origin.port}),
        resolver=resolver_of({name: addresses}),
    )
    assert await refused(origin.url("/ok", host=name), policy) == "address"
    assert origin.seen == []


async def test_literal_and_redirected_internal_addresses_are_refused(origin: Origin) -> None:
    policy = policy_for(origin, {"ten.test": ["10.0.0.1"]})
    assert await refused(origin.url("/ok", host="127.0.0.2"), policy) == "address"
    assert await refused(origin.url("/ok", host="[::1]"), policy) == "address"
    for target in (
        f"http://127.0.0.2:{origin.port}/ok",
        f"http://[::ffff:7f00:1]:{origin.port}/ok",
        f"http://ten.test:{origin.port}/ok",
        "http://localhost/ok",
    ):
        origin.routes["/hop"] = static(302, b"", Location=target)
        assert await refused(origin.url("/hop"), policy) in ("address", "resolve", "port")
    assert [r.path for r in origin.seen] == ["/hop"] * 4


async def test_schemes_ports_and_urls_are_checked(origin: Origin) -> None:
    policy = policy_for(origin)
    for url in ("file:///etc/passwd", "gopher://127.0.0.1:70/x", "ftp://127.0.0.1/", "//x/y"):
        assert await refused(url, policy) in ("scheme", "url")
    assert await refused("http://127.0.0.1:22/", policy) == "port"
    assert await refused(f"http://user:pw@127.0.0.1:{origin.port}/ok", policy) == "url"
    assert await refused("http://" + "a" * 3000, policy) == "url"
    assert await refused(f"http://nowhere.test:{origin.port}/", policy) == "resolve"
    origin.routes["/to-file"] = static(302, b"", Location="file:///etc/passwd")
    assert await refused(origin.url("/to-file"), policy) == "scheme"


async def test_redirects_are_followed_at_most_three_times(origin: Origin) -> None:
    policy = policy_for(origin)
    got = await fetch(origin.url("/to-ok"), policy)
    assert got.body == b"<title>hi</title>"
    origin.routes["/loop"] = static(302, b"", Location="/loop")
    assert await refused(origin.url("/loop"), policy) == "redirects"
    assert [r.path for r in origin.seen].count("/loop") == 4
    # A POST is never redirected: the 3xx comes back as it is.
    moved = await fetch(origin.url("/to-ok"), policy, method="POST", body=b"x")
    assert moved.status == 302


async def test_bodies_are_capped_and_slow_answers_time_out(origin: Origin) -> None:
    policy = policy_for(origin)
    assert await refused(origin.url("/endless"), policy) == "too_large"
    image = Limits(max_bytes=1024 * 1024, content_types=("image/",))
    assert await refused(origin.url("/huge.png"), policy, image) == "too_large"
    assert await refused(origin.url("/unsized.png"), policy, image) == "too_large"
    assert await refused(origin.url("/bomb"), policy) == "too_large"  # counted decoded
    assert await refused(origin.url("/drip"), policy, Limits(deadline_s=0.3)) == "timeout"
    assert await refused(origin.url("/ok"), policy, image) == "content_type"
    html = Limits(content_types=("text/html",))
    assert (await fetch(origin.url("/ok"), policy, html)).content_type == "text/html"


async def test_https_checks_the_certificate_against_the_name(nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("secure.test").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    origin = make_origin()
    await nursery.start(serve_origin, origin, server_context)
    table = {"secure.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
    policy = policy_for(origin, table, ssl_context=client_context)
    got = await fetch(origin.url("/echo", host="secure.test", scheme="https"), policy)
    assert f"host: secure.test:{origin.port}" in got.body.decode()
    # Same address, another name: the certificate does not match it.
    url = origin.url("/echo", host="other.test", scheme="https")
    assert await refused(url, policy) == "network"


PRIVATE_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
]


@given(st.sampled_from(PRIVATE_V4), st.integers(0, 2**32 - 1))
def test_internal_ipv4_is_refused_in_every_disguise(network: str, bits: int) -> None:
    net = ipaddress.IPv4Network(network)
    v4 = net.network_address + (bits % net.num_addresses)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80))
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4))
    teredo = ipaddress.IPv6Address(
        (0x20010000 << 96) | (int(ipaddress.IPv4Address("8.8.8.8")) << 64) | (~int(v4) & 0xFFFFFFFF)
    )
    for address in (v4, mapped, sixtofour, nat64, teredo):
        assert refusal(address) is not None, address


@given(st.ip_addresses(v=6))
def test_ipv6_refusal_never_crashes(address: ipaddress.IPv6Address) -> None:
    why = refusal(address)
    if address.is_loopback or address.is_private or address.is_link_local:
        assert why is not None


def test_public_addresses_pass() -> None:
    for text in ("93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946"):
        assert refusal(ipaddress.ip_address(text)) is None
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow_test_loopback=True) is None
    assert refusal(ipaddress.ip_address("127.0.0.2"), allow_test_loopback=True) is not None
