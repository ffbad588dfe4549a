"""Avatars, server icons and stored images through the real server."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL import Image

from relay.chat.images import release_image, store_image
from relay.client import open_gateway
from tests.files.test_attachments import fetch
from tests.media import samples

if TYPE_CHECKING:
    from tests.rest.test_messages import World


async def test_avatar_and_icon(files_world: World) -> None:
    w = files_world
    async with open_gateway(w.running.ws_url) as gw:
        await gw.identify(w.alice.token)
        r = await w.alice.client.request(
            "PUT", "/v1/api/users/@me/avatar", content=samples.jpeg_with_gps((900, 600))
        )
        assert r.status_code == 200, r.text
        url = r.json()["avatar_url"]
        event = await gw.dispatch("USER_UPDATE")
        assert event["d"]["avatar_url"] == url
    got = await fetch(w.bob, url)
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/webp"
    assert "public" in got.headers["cache-control"]
    im = Image.open(io.BytesIO(got.content))
    assert im.size == (512, 512)
    assert not im.getexif()
    me = await w.alice.client.call("GET", "/v1/api/users/@me")
    assert me["avatar_url"] == url
    # Member lists and DM recipients name it too (clients draw it beside names).
    members = await w.bob.client.call("GET", f"/v1/api/servers/{w.server_id}/members")
    assert {m["user"]["username"]: m["user"].get("avatar_url") for m in members} == {
        "alice": url,
        "bob": None,
    }
    dm = await w.bob.client.call("GET", f"/v1/api/channels/{w.dm}")
    assert [u.get("avatar_url") for u in dm["recipients"]] == [url, None]  # by id: alice first

    # A new avatar: the old URL stops working.
    r = await w.alice.client.request(
        "PUT", "/v1/api/users/@me/avatar", content=samples.animated_gif(3)
    )
    assert r.status_code == 200
    assert (await fetch(w.bob, url)).status_code == 404
    new = Image.open(io.BytesIO((await fetch(w.bob, r.json()["avatar_url"])).content))
    assert getattr(new, "n_frames", 1) == 3  # animated kept animated
    assert (await w.alice.client.request("DELETE", "/v1/api/users/@me/avatar")).status_code == 204
    assert "avatar_url" not in await w.alice.client.call("GET", "/v1/api/users/@me")

    # Not an image, a corrupt one: 400 bad_image.
    for bad in (samples.HTML, samples.image("PNG")[:70]):
        r = await w.alice.client.request("PUT", "/v1/api/users/@me/avatar", content=bad)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_image")

    # Icons: MANAGE_SERVER; members hear SERVER_UPDATE with the URL.
    icon_path = f"/v1/api/servers/{w.server_id}/icon"
    r = await w.bob.client.request("PUT", icon_path, content=samples.image("PNG", (600, 600)))
    assert r.status_code == 403
    async with open_gateway(w.running.ws_url) as gw:
        await gw.identify(w.bob.token)
        r = await w.alice.client.request("PUT", icon_path, content=samples.image("PNG", (600, 300)))
        assert r.status_code == 200, r.text
        event = await gw.dispatch("SERVER_UPDATE")
        assert event["d"]["icon_url"] == r.json()["icon_url"]
    got = await fetch(w.eve, r.json()["icon_url"])
    assert Image.open(io.BytesIO(got.content)).size == (300, 300)
    servers = await w.bob.client.call("GET", f"/v1/api/servers/{w.server_id}")
    assert servers["icon_url"] == r.json()["icon_url"]


async def test_store_image_for_other_features(files_world: World) -> None:
    chat = files_world.running.runtime.chat
    stored = await store_image(chat, samples.jpeg_with_gps((3000, 1500)))
    assert (stored.width, stored.height) == (640, 1280)
    got = await fetch(files_world.bob, stored.url)
    assert got.status_code == 200
    assert Image.open(io.BytesIO(got.content)).size == (640, 1280)
    await release_image(chat, stored.digest)
    assert (await fetch(files_world.bob, stored.url)).status_code == 404
    assert (
        await fetch(files_world.bob, "/v1/files/images/" + "0" * 64 + ".webp")
    ).status_code == 404


async def test_avatar_over_the_limit_is_cut_early(files_world: World) -> None:
    from relay.chat.images import MAX_IMAGE_BYTES
    from tests.files.test_attachments import raw_send

    w = files_world
    body = samples.image("PNG") + bytes(MAX_IMAGE_BYTES * 2)
    status, answer, sent = await raw_send(
        w.running, w.alice.token, "/v1/api/users/@me/avatar", "image/png", body, method="PUT"
    )
    assert (status, answer["error"]["code"]) == (413, "file_too_large")
    assert sent < MAX_IMAGE_BYTES * 1.5
