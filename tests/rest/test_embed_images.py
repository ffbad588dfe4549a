"""Embed images through Relay's media store, end to end: a link preview's OpenGraph image, a
direct image link and a sent rich embed's image, thumbnail and icons are fetched from a local
origin (127.0.0.1, allowed by the test setting), stored, and shown as Relay URLs whose bytes
decode as the image; readers never get the origin's URLs. An image goes when no message shows
it any more (deleted or edited away), and stays while another message still does."""

from __future__ import annotations

import io
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import httpx
import trio
from PIL import Image

from relay.client import open_gateway
from tests.conftest import settings_for, start_server
from tests.files.test_attachments import fetch
from tests.media import samples
from tests.netfetch.origin import Origin, serve_origin, static
from tests.rest.test_messages import join, messages_path, new_member
from tests.rest.test_previews import next_update

if TYPE_CHECKING:
    from pathlib import Path

    import trio

IMAGES = "/v1/files/images/"


def page(image: str) -> bytes:
    return (
        f'<html><head><meta property="og:title" content="Photo page">'
        f'<meta property="og:image" content="{image}"></head></html>'
    ).encode()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def test_embed_images_are_served_by_relay(nursery: trio.Nursery, tmp_path: Path) -> None:
    photo = samples.image("PNG", (40, 30), "red")
    origin = Origin(
        {
            "/page": static(200, page("/photo.png")),
            "/photo.png": static(200, photo, "image/png"),
            "/pic.jpg": static(200, samples.image("JPEG", (64, 48), "blue"), "image/jpeg"),
            "/icon.gif": static(200, samples.image("GIF", (16, 16), "green"), "image/gif"),
            "/fake.png": static(200, b"\x89PNG not really", "image/png"),
        }
    )
    await nursery.start(serve_origin, origin)
    settings = settings_for(
        tmp_path, fetch_allow_test_loopback=True, fetch_ports=[origin.port], preview_workers=1
    )
    running, shutdown = await start_server(nursery, settings)
    async with AsyncExitStack() as stack:
        alice = await new_member(stack, running, "alice")
        server = await alice.client.call("POST", "/v1/api/servers", {"name": "Home"})
        text = next(c["id"] for c in server["channels"] if c["type"] == "text")
        path = messages_path(text)
        gw = await stack.enter_async_context(open_gateway(running.ws_url))
        await gw.identify(alice.token)

        async def post(body: dict[str, Any]) -> dict[str, Any]:
            sent: dict[str, Any] = await alice.client.call("POST", path, body)
            embeds: dict[str, Any] = await next_update(gw, sent["id"])
            for e in embeds["embeds"]:  # never the origin's image URLs
                shown = [e.get(k, {}).get("url") for k in ("image", "thumbnail")]
                shown += [e.get(k, {}).get("icon_url") for k in ("author", "footer")]
                assert all(u.startswith(IMAGES) for u in shown if u is not None), e
            assert "pending" not in str(embeds)
            return embeds

        async def served(url: str) -> Image.Image | None:
            got = await fetch(alice, url)
            return decoded(got.content) if got.status_code == 200 else None

        # A page's OpenGraph image and a direct image link become Relay URLs.
        previewed = await post({"content": f"{origin.url('/page')} {origin.url('/pic.jpg')}"})
        link, direct = previewed["embeds"]
        thumb = link["thumbnail"]
        assert thumb["url"].startswith(IMAGES)
        assert (thumb["width"], thumb["height"]) == (40, 30)
        image = await served(thumb["url"])
        assert image is not None
        assert image.size == (40, 30)
        pixel = image.convert("RGB").getpixel((20, 15))
        assert isinstance(pixel, tuple)
        assert pixel[0] > 240  # red, give or take WebP's rounding
        assert max(pixel[1:]) < 16
        assert direct["type"] == "image"
        assert direct["url"] == origin.url("/pic.jpg")
        assert direct["thumbnail"]["url"].startswith(IMAGES)
        blue = await served(direct["thumbnail"]["url"])
        assert blue is not None
        assert blue.size == (64, 48)

        # A sent rich embed: image, thumbnail and both icons filled in; a fake image left out.
        rich = {
            "title": "Build",
            "image": {"url": origin.url("/photo.png")},
            "thumbnail": {"url": origin.url("/fake.png")},
            "author": {"name": "CI", "icon_url": origin.url("/icon.gif")},
            "footer": {"text": "ci", "icon_url": origin.url("/icon.gif")},
        }
        filled = await post({"embeds": [rich]})
        (embed,) = filled["embeds"]
        assert embed["image"]["url"] == thumb["url"]  # the same bytes are stored once
        assert "thumbnail" not in embed
        icon = embed["author"]["icon_url"]
        assert icon.startswith(IMAGES)
        assert embed["footer"]["icon_url"] == icon
        green = await served(icon)
        assert green is not None
        assert green.size == (16, 16)
        (history,) = await alice.client.call("GET", f"{path}?limit=1")
        assert history["embeds"] == filled["embeds"]

        # Deleting the preview message: its JPEG goes, the PNG stays (the embed still shows it).
        await alice.client.call("DELETE", messages_path(text, previewed["id"]))
        assert await served(direct["thumbnail"]["url"]) is None
        assert await served(thumb["url"]) is not None
        # Editing the embed's images away releases them; nothing of them is served any more.
        edited = await alice.client.call(
            "PATCH", messages_path(text, filled["id"]), {"embeds": [{"title": "Build"}]}
        )
        assert edited["embeds"] == [{"type": "rich", "title": "Build"}]
        assert await served(thumb["url"]) is None
        assert await served(icon) is None
    await shutdown()


async def test_webhook_embeds_avatars_mentions_and_files(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    origin = Origin(
        {
            "/avatar.png": static(200, samples.image("PNG", (600, 600), "green"), "image/png"),
            "/chart.png": static(200, samples.image("PNG", (300, 200), "blue"), "image/png"),
        }
    )
    await nursery.start(serve_origin, origin)
    settings = settings_for(tmp_path, fetch_allow_test_loopback=True, fetch_ports=[origin.port])
    running, shutdown = await start_server(nursery, settings)
    async with AsyncExitStack() as stack:
        alice = await new_member(stack, running, "alice")
        bob = await new_member(stack, running, "bob")
        server = await alice.client.call("POST", "/v1/api/servers", {"name": "Home"})
        await join(alice, server["id"], bob)
        text = next(c["id"] for c in server["channels"] if c["type"] == "text")
        made = await alice.client.call("POST", f"/v1/api/channels/{text}/webhooks", {"name": "CI"})
        hook = f"/v1/api/webhooks/{made['id']}/{made['token']}?wait=true"
        gw = await stack.enter_async_context(open_gateway(running.ws_url))
        await gw.identify(bob.token)
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=running.url))

        # Embeds, allowed_mentions and an avatar fetched and served by Relay.
        body = {
            "content": f"deployed, <@{bob.id}>",
            "avatar_url": origin.url("/avatar.png"),
            "allowed_mentions": {"parse": []},
            "embeds": [{"title": "Deploy", "image": {"url": origin.url("/chart.png")}}],
        }
        r = await http.post(hook, json=body)
        assert r.status_code == 200, r.text
        sent = r.json()
        assert sent["mentions"] == []  # allowed_mentions: nobody
        avatar = sent["author"]["avatar_url"]
        assert avatar.startswith(IMAGES)
        got = await fetch(bob, avatar)
        assert decoded(got.content).size == (512, 512)  # avatars are at most 512 px
        assert sent["embeds"] == [{"type": "rich", "title": "Deploy"}]  # image after the commit
        (embed,) = (await next_update(gw, sent["id"]))["embeds"]
        assert embed["image"]["url"].startswith(IMAGES)
        chart = decoded((await fetch(bob, embed["image"]["url"])).content)
        assert chart.size == (300, 200)
        mentioned = await http.post(
            hook, json={"content": f"<@{bob.id}>", "allowed_mentions": {"users": [bob.id]}}
        )
        assert mentioned.json()["mentions"] == [bob.id]

        # Files as multipart, as a user's message; a file alone is a message.
        files: dict[str, Any] = {
            "payload_json": (None, b'{"content": "the log", "username": "Nightly"}'),
            "files[0]": ("build.log", b"line 1\nline 2\n", "text/plain"),
        }
        r = await http.post(hook, files=files)
        assert r.status_code == 200, r.text
        with_file = r.json()
        assert with_file["author"]["username"] == "Nightly"
        (attachment,) = with_file["attachments"]
        assert attachment["filename"] == "build.log"
        assert (await fetch(bob, attachment["url"])).content == b"line 1\nline 2\n"
        alone = await http.post(hook, files={"files[0]": ("a.txt", b"x", "text/plain")})
        assert alone.status_code == 200, alone.text
        assert alone.json()["content"] == ""
        # A bad token stores no file; a bad payload is a 400.
        bad_token = hook.replace(made["token"], made["token"] + "x")
        refused = await http.post(bad_token, files=files)
        assert refused.status_code == 401
        bad = {**files, "payload_json": (None, b'{"embeds": [{}]}')}
        assert (await http.post(hook, files=bad)).status_code == 400

        # Deleting the message releases its avatar and embed image.
        await alice.client.call("DELETE", messages_path(text, sent["id"]))
        assert (await fetch(bob, avatar)).status_code == 404
        assert (await fetch(bob, embed["image"]["url"])).status_code == 404
    await shutdown()
