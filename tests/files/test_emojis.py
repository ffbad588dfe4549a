"""Custom emoji: limits, permissions, SERVER_EMOJIS_UPDATE, `<:name:id>` and reactions."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from relay.chat.emojis import parse_custom_emojis
from relay.client import open_gateway
from relay.permissions import P
from relay.storage import emojis as stored
from tests.files.test_attachments import fetch
from tests.media import samples
from tests.rest.test_messages import messages_path

if TYPE_CHECKING:
    from tests.rest.test_messages import World


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_emoji_lifecycle_and_limits(files_world: World) -> None:
    w = files_world
    path = f"/v1/api/servers/{w.server_id}/emojis"
    async with open_gateway(w.running.ws_url) as gw:
        await gw.identify(w.bob.token)
        emoji = await w.alice.client.call(
            "POST", path, {"name": "party_blob", "image": b64(samples.image("PNG", (400, 300)))}
        )
        event = await gw.dispatch("SERVER_EMOJIS_UPDATE")
        assert event["d"]["emojis"] == [emoji]
    assert emoji["animated"] is False
    got = await fetch(w.eve, emoji["url"])
    assert Image.open(io.BytesIO(got.content)).size == (128, 128)
    assert await w.bob.client.call("GET", path) == [emoji]
    assert (await w.eve.client.request("GET", path)).status_code == 404

    animated = await w.alice.client.call(
        "POST", path, {"name": "spin", "image": b64(samples.animated_gif(3))}
    )
    assert animated["animated"] is True

    # Bad names, images and sizes.
    for body, status, code in [
        ({"name": "x", "image": b64(samples.image("PNG"))}, 400, "invalid_field"),
        ({"name": "no-dash", "image": b64(samples.image("PNG"))}, 400, "invalid_field"),
        ({"name": "ok_name", "image": "***"}, 400, "invalid_field"),
        ({"name": "ok_name", "image": "A" * 400_000}, 400, "invalid_field"),  # the schema bound
        ({"name": "ok_name", "image": b64(samples.HTML)}, 400, "bad_image"),
        (
            {"name": "ok_name", "image": b64(b"\x89PNG\r\n\x1a\n" + bytes(256 * 1024 - 7))},
            413,
            "file_too_large",
        ),
    ]:
        r = await w.alice.client.request("POST", path, json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text

    # Bob (no CREATE_EMOJIS beyond @everyone's default?) renames Alice's: MANAGE_EMOJIS needed.
    one = f"{path}/{emoji['id']}"
    r = await w.bob.client.request("PATCH", one, json={"name": "mine"})
    assert r.status_code == 403
    renamed = await w.alice.client.call("PATCH", one, {"name": "party"})
    assert renamed["name"] == "party"

    # As a reaction (name:id) and in text.
    message = await w.bob.client.call(
        "POST", messages_path(w.text), {"content": f"hi <:party:{emoji['id']}>"}
    )
    react = f"{messages_path(w.text, message['id'])}/reactions"
    ok = await w.bob.client.request("PUT", f"{react}/{quote('party:' + emoji['id'])}/@me")
    assert ok.status_code == 204
    again = await w.bob.client.call("GET", messages_path(w.text, message["id"]))
    assert again["reactions"][0]["emoji"] == f"party:{emoji['id']}"
    r = await w.bob.client.request("PUT", f"{react}/{quote('ghost:123456789')}/@me")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_emoji")

    # Deleting it: the URL stops working.
    assert (await w.alice.client.request("DELETE", one)).status_code == 204
    assert (await fetch(w.eve, emoji["url"])).status_code == 404
    r = await w.alice.client.request("DELETE", one)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_emoji")


async def test_fifty_still_emoji_per_server(files_world: World) -> None:
    w = files_world
    rt = w.running.runtime
    sid = int(w.server_id)

    def fill(db: object) -> None:
        for i in range(stored.MAX_STATIC):
            stored.create_emoji(db, 10**9 + i, sid, int(w.alice.id), f"e{i}", "0" * 64, False, 0)  # type: ignore[arg-type]

    await rt.store.write(fill)
    r = await w.alice.client.request(
        "POST",
        f"/v1/api/servers/{w.server_id}/emojis",
        json={"name": "one_more", "image": b64(samples.image("PNG"))},
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "too_many_emojis")
    assert int(P.CREATE_EMOJIS)  # the bit exists (relay/permissions.py)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["", "a"]),
            st.from_regex(r"[A-Za-z0-9_]{2,32}", fullmatch=True),
            st.integers(1, 10**18),
        ),
        max_size=8,
    ),
    st.text(alphabet="<>: ab", max_size=20),
)
@settings(max_examples=100)
def test_parse_custom_emojis_finds_exactly_the_tokens(
    tokens: list[tuple[str, str, int]], filler: str
) -> None:
    text = filler.join(f"<{a}:{name}:{i}>" for a, name, i in tokens)
    found = parse_custom_emojis(text)
    expected: dict[int, tuple[str, int, bool]] = {}
    for a, name, i in tokens:
        expected.setdefault(i, (name, i, a == "a"))
    if ":" not in filler and "<" not in filler and ">" not in filler:
        assert found == list(expected.values())
    assert all(f":{name}:{i}>" in text for name, i, _ in found)
