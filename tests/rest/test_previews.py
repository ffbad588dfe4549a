"""Link previews end to end: a message with a link to a local origin (127.0.0.1, allowed by the
test setting) gets its preview as MESSAGE_UPDATE over the gateway; what must not be fetched is
not (links in <>, suppressed messages, internal addresses, senders without EMBED_LINKS); the
cache, edits and broken markup; and never an image URL of the origin in an embed."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio

from relay.client import open_gateway
from relay.permissions import DEFAULT_EVERYONE, P
from tests.conftest import settings_for, start_server
from tests.netfetch.origin import Origin, Request, response, serve_origin, static
from tests.rest.test_messages import join, messages_path, new_member

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import Gateway

PAGE = b"""<!doctype html><html><head>
<title>Fallback title</title>
<meta property="og:title" content="The &amp; Page">
<meta property="og:description" content="What the page is about.">
<meta property="og:site_name" content="Origin">
<meta property="og:image" content="/big.png">
<meta name="theme-color" content="#336699">
<link rel="alternate" type="application/json+oembed" href="/oembed.json">
</head><body>hello</body></html>"""
OEMBED = json.dumps(
    {"type": "rich", "author_name": "Ada", "author_url": "https://ada.example", "title": "x"}
).encode()
BROKEN = (
    b"<html><head><title>Half <b>open</title><meta name=description content='still read'>"
    b"</span><p><div><td></html></html><!-- <meta property=og:title content=unterminated"
)


async def next_update(gw: Gateway, message_id: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            event = await gw.dispatch("MESSAGE_UPDATE")
            if event["d"]["id"] == message_id:
                data: dict[str, Any] = event["d"]
                return data


async def test_previews_arrive_as_message_update(nursery: trio.Nursery, tmp_path: Path) -> None:
    arrived, release = trio.Event(), trio.Event()

    async def slow(request: Request, stream: trio.abc.Stream) -> None:
        arrived.set()
        await release.wait()
        await stream.send_all(response(200, PAGE))

    origin = Origin(
        {
            "/slow": slow,
            "/a": static(200, b"<title>A</title>"),
            "/b": static(200, b"<title>B</title>"),
            "/c": static(200, b"<title>C</title>"),
            "/page": static(200, PAGE),
            "/oembed.json": static(200, OEMBED, "application/json"),
            "/broken": static(200, BROKEN),
            "/hidden": static(200, PAGE),
            "/suppressed": static(200, PAGE),
            "/big.png": static(200, b"\x89PNG" + b"\0" * 1000, "image/png"),
            "/pic.png": static(200, b"\x89PNG" + b"\0" * 1000, "image/png"),
        }
    )
    await nursery.start(serve_origin, origin)
    settings = settings_for(
        tmp_path,
        fetch_allow_test_loopback=True,
        fetch_ports=[origin.port],
        preview_workers=1,  # jobs in order: a later preview proves earlier jobs are done
        preview_queue=2,
    )
    running, shutdown = await start_server(nursery, settings)
    async with AsyncExitStack() as stack:
        alice = await new_member(stack, running, "alice")
        bob = await new_member(stack, running, "bob")
        server = await alice.client.call("POST", "/v1/api/servers", {"name": "Home"})
        await join(alice, server["id"], bob)
        text = next(c["id"] for c in server["channels"] if c["type"] == "text")
        gw = await stack.enter_async_context(open_gateway(running.ws_url))
        await gw.identify(bob.token)
        path = messages_path(text)

        async def post(content: str, **extra: Any) -> dict[str, Any]:
            message: dict[str, Any] = await alice.client.call(
                "POST", path, {"content": content, **extra}
            )
            return message

        # Nothing of these is fetched: a link in <>, a suppressed message, an internal address.
        await post(f"see <{origin.url('/hidden')}>")
        await post(origin.url("/suppressed"), flags=4)
        await post(f"http://127.0.0.2:{origin.port}/page and http://10.0.0.1/ too")
        sent = await post(f"look: {origin.url('/page')}.")
        assert sent["embeds"] == []  # the send never waits for a fetch
        update = await next_update(gw, sent["id"])
        assert update["embeds"] == [
            {
                "type": "link",
                "title": "The & Page",
                "description": "What the page is about.",
                "url": origin.url("/page"),
                "color": 0x336699,
                "author": {"name": "Ada", "url": "https://ada.example"},
                "provider": {"name": "Origin"},
            }
        ]  # no thumbnail: /big.png is not a real image (tests/rest/test_embed_images.py has them)
        assert [r.path for r in origin.seen] == ["/page", "/oembed.json", "/big.png"]
        (stored,) = await bob.client.call("GET", f"{path}?limit=1")
        assert stored["embeds"] == update["embeds"]

        # Cached: the same link again is not fetched again. A direct "image" that is not one
        # gets no embed (asked for as a page, its answer says image: asked for as an image).
        again = await post(f"{origin.url('/page')} {origin.url('/pic.png')}")
        assert (await next_update(gw, again["id"]))["embeds"] == update["embeds"]
        assert [r.path for r in origin.seen][3:] == ["/pic.png", "/pic.png"]

        # An edit to another link: previews dropped at once, the new one follows.
        edit_path = messages_path(text, sent["id"])
        edited = await alice.client.call("PATCH", edit_path, {"content": origin.url("/broken")})
        assert edited["embeds"] == []
        assert (await next_update(gw, sent["id"]))["embeds"] == []  # the edit's own update
        broken = (await next_update(gw, sent["id"]))["embeds"]
        assert broken == [
            {
                "type": "link",
                "title": "Half open",
                "description": "still read",
                "url": origin.url("/broken"),
            }
        ]

        # Without EMBED_LINKS a sender's links get no preview.
        everyone = DEFAULT_EVERYONE & ~P.EMBED_LINKS
        roles = f"/v1/api/servers/{server['id']}/roles/{server['id']}"
        await alice.client.call("PATCH", roles, {"permissions": str(everyone)})
        seen = len(origin.seen)
        await bob.client.call("POST", path, {"content": origin.url("/hidden")})
        last = await post(origin.url("/suppressed"))  # the owner has every permission
        await next_update(gw, last["id"])
        assert [r.path for r in origin.seen][seen:] == ["/suppressed", "/oembed.json", "/big.png"]

        # The send path never waits for a fetch: the origin holds /slow until after the post
        # returned. With the one worker held there, two more jobs fill the queue and the next
        # is dropped (drop newest): /c is never fetched.
        held = await post(origin.url("/slow"))
        assert held["embeds"] == []
        await arrived.wait()  # the worker is held now
        queued = [await post(origin.url(name)) for name in ("/a", "/b")]
        await post(origin.url("/c"))
        assert running.runtime.chat.link_previews is not None
        assert running.runtime.chat.link_previews.dropped == 1
        release.set()
        assert (await next_update(gw, held["id"]))["embeds"][0]["title"] == "The & Page"
        assert (await next_update(gw, queued[0]["id"]))["embeds"][0]["title"] == "A"
        assert (await next_update(gw, queued[1]["id"]))["embeds"][0]["title"] == "B"
        assert "/c" not in [r.path for r in origin.seen]
        metrics = running.runtime.metrics.exposition().decode()
        assert "relay_link_previews_dropped_total 1.0" in metrics
        assert 'relay_link_preview_fetches_total{result="address"} 1.0' in metrics
        assert "relay_link_preview_cache_hits_total 1.0" in metrics
    await shutdown()
