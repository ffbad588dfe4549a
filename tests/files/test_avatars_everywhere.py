"""Where avatars and icons meet the rest of chat: message authors carry the user's avatar_url
(REST and gateway, fresh after a change), PATCH /users/@me takes a multipart avatar, group DMs
have an icon (CHANNEL_UPDATE carries icon_url), and gateway op 12 claims two-phase uploads."""

from __future__ import annotations

import io
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from PIL import Image

from relay.client import open_gateway
from relay.permissions import DEFAULT_EVERYONE, P
from tests.files.test_attachments import fetch
from tests.gateway.test_send import MESSAGE_SEND, next_ack
from tests.media import samples
from tests.rest.test_messages import join, messages_path, new_member

if TYPE_CHECKING:
    from tests.rest.test_messages import World


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def test_authors_carry_avatars_and_patch_me_takes_one(files_world: World) -> None:
    w = files_world
    async with open_gateway(w.running.ws_url) as gw:
        await gw.identify(w.bob.token)
        before = await w.alice.client.call("POST", messages_path(w.text), {"content": "a"})
        assert "avatar_url" not in before["author"]
        # PATCH /users/@me as multipart: the avatar and payload_json together.
        png = samples.image("PNG", (800, 600))
        form: dict[str, Any] = {
            "payload_json": (None, b'{"display_name": "Alice A."}'),
            "avatar": ("me.png", png, "image/png"),
        }
        r = await w.alice.client.request("PATCH", "/v1/api/users/@me", files=form)
        assert r.status_code == 200, r.text
        me = r.json()
        assert me["display_name"] == "Alice A."
        avatar = me["avatar_url"]
        assert size_of((await fetch(w.bob, avatar)).content) == (512, 512)
        sent = await w.alice.client.call("POST", messages_path(w.text), {"content": "b"})
        assert sent["author"]["avatar_url"] == avatar
        while (event := await gw.dispatch("MESSAGE_CREATE"))["d"]["id"] != sent["id"]:
            pass
        assert event["d"]["author"]["avatar_url"] == avatar
        history = await w.bob.client.call("GET", messages_path(w.text) + "?limit=2")
        assert [m["author"].get("avatar_url") for m in history] == [avatar, avatar]
    # A new avatar shows on the next message at once (the writer's cache follows it).
    jpeg = samples.image("JPEG", (100, 100), "blue")
    r = await w.alice.client.request("PATCH", "/v1/api/users/@me", files={"avatar": ("a", jpeg)})
    assert r.status_code == 200, r.text
    newer = await w.alice.client.call("POST", messages_path(w.text), {"content": "c"})
    assert newer["author"]["avatar_url"] == r.json()["avatar_url"] != avatar
    # Bad forms change nothing.
    for files, code in [
        ({"avatar": ("x.png", b"not an image")}, "bad_image"),
        ({"other": ("x", b"1")}, "malformed_form"),
        ({"payload_json": (None, b'{"nope": 1}'), "avatar": ("a", jpeg)}, "invalid_field"),
    ]:
        r = await w.alice.client.request("PATCH", "/v1/api/users/@me", files=files)
        assert (r.status_code, r.json()["error"]["code"]) == (400, code), r.text
    me = await w.alice.client.call("GET", "/v1/api/users/@me")
    assert (me["display_name"], me["avatar_url"]) == ("Alice A.", newer["author"]["avatar_url"])


async def test_group_dm_icon(files_world: World) -> None:
    w = files_world
    async with AsyncExitStack() as stack:
        carol = await new_member(stack, w.running, "carol")
        await join(w.alice, w.server_id, carol)
        group = await w.alice.client.call(
            "POST", "/v1/api/users/@me/channels", {"recipients": [w.bob.id, carol.id]}
        )
        assert group["icon_url"] is None
        icon_path = f"/v1/api/channels/{group['id']}/icon"
        gw = await stack.enter_async_context(open_gateway(w.running.ws_url))
        await gw.identify(carol.token)
        # Any recipient (not only the owner) sets it; everyone in it hears CHANNEL_UPDATE.
        r = await w.bob.client.request("PUT", icon_path, content=samples.image("PNG", (700, 300)))
        assert r.status_code == 200, r.text
        icon = r.json()["icon_url"]
        event = await gw.dispatch("CHANNEL_UPDATE")
        assert (event["d"]["id"], event["d"]["icon_url"]) == (group["id"], icon)
        assert size_of((await fetch(carol, icon)).content) == (300, 300)
        async with open_gateway(w.running.ws_url) as later:
            ready = await later.identify(carol.token)
        listed = ready["private_channels"]
        assert next(c for c in listed if c["id"] == group["id"])["icon_url"] == icon
        # Not a recipient, not a group DM, not an image: refused, nothing changed.
        png = samples.image("PNG")
        outsider = await w.eve.client.request("PUT", icon_path, content=png)
        assert (outsider.status_code, outsider.json()["error"]["code"]) == (404, "unknown_channel")
        for channel in (w.text, w.dm):
            r = await w.alice.client.request("PUT", f"/v1/api/channels/{channel}/icon", content=png)
            assert (r.status_code, r.json()["error"]["code"]) == (400, "not_a_group_dm")
        r = await w.alice.client.request("PUT", icon_path, content=b"GIF89a broken")
        assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_image")
        # Removed: null in CHANNEL_UPDATE, and the old URL stops working.
        gone = await w.alice.client.request("DELETE", icon_path)
        assert gone.status_code == 204
        assert (await gw.dispatch("CHANNEL_UPDATE"))["d"]["icon_url"] is None
        assert (await fetch(carol, icon)).status_code == 404
    # Other channels carry no icon_url at all.
    dm = await w.alice.client.call("POST", "/v1/api/users/@me/channels", {"recipient_id": w.bob.id})
    assert dm["id"] == w.dm
    assert "icon_url" not in dm


async def test_gateway_send_claims_uploads(files_world: World) -> None:
    w = files_world
    up = await w.bob.client.request(
        "POST", f"/v1/api/channels/{w.text}/attachments?filename=notes.txt", content=b"hello"
    )
    assert up.status_code == 201, up.text
    upload = {"id": up.json()["upload_id"]}
    async with open_gateway(w.running.ws_url) as gw:
        await gw.identify(w.bob.token)
        d = {"channel_id": w.text, "content": "", "nonce": "n1", "attachments": [upload]}
        await gw.send(MESSAGE_SEND, d)
        ack = await next_ack(gw)
        assert "error" not in ack, ack
        while (event := await gw.dispatch("MESSAGE_CREATE"))["d"]["id"] != ack["id"]:
            pass
        (attachment,) = event["d"]["attachments"]
        assert attachment["filename"] == "notes.txt"
        assert (await fetch(w.bob, attachment["url"])).content == b"hello"
        # Claimed once; a bad id, a repeated one, no ATTACH_FILES: refused in the ack.
        roles = f"/v1/api/servers/{w.server_id}/roles/{w.server_id}"
        for attachments, code in [
            ([upload], "invalid_field"),
            ([{"id": "x"}], "invalid_field"),
            ([upload, upload], "invalid_field"),
        ]:
            d = {"channel_id": w.text, "content": "", "nonce": "n2", "attachments": attachments}
            await gw.send(MESSAGE_SEND, d)
            assert (await next_ack(gw))["error"]["code"] == code
        fresh = await w.bob.client.request(
            "POST", f"/v1/api/channels/{w.text}/attachments?filename=b.txt", content=b"b"
        )
        everyone = DEFAULT_EVERYONE & ~P.ATTACH_FILES
        await w.alice.client.call("PATCH", roles, {"permissions": str(everyone)})
        d = {
            "channel_id": w.text,
            "content": "",
            "nonce": "n3",
            "attachments": [{"id": fresh.json()["upload_id"]}],
        }
        await gw.send(MESSAGE_SEND, d)
        assert (await next_ack(gw))["error"]["code"] == "missing_permission"
