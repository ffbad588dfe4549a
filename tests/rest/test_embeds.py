"""Rich embeds on send and edit through the real server: the shape readers get, Discord's
limits (400 naming the field), EMBED_LINKS, SUPPRESS_EMBEDS, history; and that no image URL a
sender gave is ever handed to readers (they wait for Relay's media store)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.client import open_gateway
from relay.permissions import DEFAULT_EVERYONE, P
from tests.rest.conftest import join, new_server, set_everyone

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tests.rest.conftest import Person, SharedServer

FULL = {
    "title": "Build passed",
    "description": "All 1,234 tests passed.",
    "url": "https://ci.example.org/run/1",
    "color": 0x22BB33,
    "timestamp": "2026-12-06T05:00:00+01:00",
    "fields": [
        {"name": "branch", "value": "main", "inline": True},
        {"name": "time", "value": "4m"},
    ],
    "author": {"name": "CI", "url": "https://ci.example.org", "icon_url": "https://x.org/i.png"},
    "footer": {"text": "relay-ci", "icon_url": "https://x.org/f.png"},
    "image": {"url": "https://tracker.example.com/pixel.png"},
    "thumbnail": {"url": "https://tracker.example.com/thumb.png"},
}


async def bad_field(person: Person, path: str, body: dict[str, Any], method: str = "POST") -> str:
    """The field a 400 invalid_field names."""
    status, payload = await person.status(method, path, body)
    assert status == 400, payload
    assert payload["error"]["code"] == "invalid_field", payload
    fields: dict[str, str] = payload["error"]["fields"]
    assert len(fields) == 1, fields
    return next(iter(fields))


async def test_rich_embeds_are_stored_shown_and_never_leak_image_urls(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    alice, bob = await people("alice"), await people("bob")
    server_id, text = await new_server(alice)
    await join(alice, server_id, bob)
    path = f"/channels/{text}/messages"
    sent = await alice.call("POST", path, {"embeds": [FULL, {"description": "second"}]})
    assert sent["content"] == ""
    first, second = sent["embeds"]
    assert first == {
        "type": "rich",
        "title": "Build passed",
        "description": "All 1,234 tests passed.",
        "url": "https://ci.example.org/run/1",
        "timestamp": "2026-12-06T04:00:00.000Z",
        "color": 0x22BB33,
        "fields": [
            {"name": "branch", "value": "main", "inline": True},
            {"name": "time", "value": "4m", "inline": False},
        ],
        "author": {"name": "CI", "url": "https://ci.example.org"},
        "footer": {"text": "relay-ci"},
    }
    assert second == {"type": "rich", "description": "second"}
    (read,) = await bob.call("GET", f"{path}?limit=1")
    assert read["embeds"] == sent["embeds"]
    assert "x.org" not in str(read)
    assert "tracker" not in str(read)
    assert "pending" not in str(read)

    # Edits: embeds alone, flags alone, content alone keep the rest.
    mid = sent["id"]
    edited = await alice.call("PATCH", f"{path}/{mid}", {"embeds": [{"title": "Build failed"}]})
    assert edited["embeds"] == [{"type": "rich", "title": "Build failed"}]
    hidden = await alice.call("PATCH", f"{path}/{mid}", {"flags": 4})
    assert (hidden["embeds"], hidden["flags"]) == ([], 4)
    shown = await alice.call("PATCH", f"{path}/{mid}", {"flags": 0, "content": "now with text"})
    assert shown["embeds"] == [{"type": "rich", "title": "Build failed"}]
    cleared = await alice.call("PATCH", f"{path}/{mid}", {"embeds": None})
    assert cleared["embeds"] == []
    assert cleared["content"] == "now with text"


async def test_embed_limits_are_400s_naming_the_field(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    alice = await people("alice")
    _, text = await new_server(alice)
    path = f"/channels/{text}/messages"
    cases: list[tuple[Any, str]] = [
        ([{"title": "t" * 257}], "embeds[0].title"),
        ([{"description": "d" * 4097}], "embeds[0].description"),
        ([{"fields": [{"name": "n" * 257, "value": "v"}]}], "embeds[0].fields[0].name"),
        ([{"fields": [{"name": "n", "value": "v" * 1025}]}], "embeds[0].fields[0].value"),
        ([{"fields": [{"name": "n", "value": "v"}] * 26}], "embeds[0].fields"),
        ([{"footer": {"text": "f" * 2049}}], "embeds[0].footer.text"),
        ([{"author": {"name": "a" * 257}}], "embeds[0].author.name"),
        ([{"title": "x"}] * 11, "embeds"),
        ([{"description": "d" * 4000}, {"description": "d" * 2001}], "embeds"),  # 6001 in all
        ([{"color": 0x1000000}], "embeds[0].color"),
        ([{"url": "javascript:alert(1)"}], "embeds[0].url"),
        ([{"image": {"url": "file:///etc/passwd"}}], "embeds[0].image.url"),
        ([{"timestamp": "yesterday"}], "embeds[0].timestamp"),
        ([{"title": "x", "video": {}}], "embeds[0].video"),
        ([{}], "embeds[0]"),
        ("not a list", "embeds"),
    ]
    for embeds, field in cases:
        assert await bad_field(alice, path, {"embeds": embeds}) == field, embeds
    assert await bad_field(alice, path, {"content": "x", "flags": 1}) == "flags"
    assert await bad_field(alice, path, {"content": ""}) == "content"
    mid = (await alice.call("POST", path, {"content": "hi"}))["id"]
    assert await bad_field(alice, f"{path}/{mid}", {}, "PATCH") == "content"
    edit = {"embeds": [{"title": "t" * 257}]}
    assert await bad_field(alice, f"{path}/{mid}", edit, "PATCH") == "embeds[0].title"
    # 6000 exactly is fine
    full = [{"description": "d" * 4000}, {"description": "d" * 2000}]
    assert len((await alice.call("POST", path, {"embeds": full}))["embeds"]) == 2


async def test_embeds_need_embed_links(people: Callable[[str], Awaitable[Person]]) -> None:
    alice, bob = await people("alice"), await people("bob")
    server_id, text = await new_server(alice)
    await join(alice, server_id, bob)
    await set_everyone(alice, server_id, DEFAULT_EVERYONE & ~P.EMBED_LINKS)
    path = f"/channels/{text}/messages"
    status, code, permission = await bob.error("POST", path, {"embeds": [{"title": "x"}]})
    assert (status, code, permission) == (403, "missing_permission", "EMBED_LINKS")
    mid = (await bob.call("POST", path, {"content": "plain"}))["id"]
    status, code, _ = await bob.error("PATCH", f"{path}/{mid}", {"embeds": [{"title": "x"}]})
    assert (status, code) == (403, "missing_permission")
    # Removing embeds or suppressing them needs no EMBED_LINKS.
    assert (await bob.call("PATCH", f"{path}/{mid}", {"embeds": [], "flags": 4}))["flags"] == 4


async def test_gateway_sends_take_the_suppress_flag(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    alice = await people("alice")
    _, text = await new_server(alice)
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(alice.token)

        async def ack_of(nonce: str, flags: int) -> dict[str, Any]:
            d = {"channel_id": text, "content": "hi", "nonce": nonce, "flags": flags}
            await gw.send(12, d)
            while (frame := await gw.receive())["op"] != 13:
                pass
            ack: dict[str, Any] = frame["d"]
            assert ack["nonce"] == nonce
            return ack

        sent = await ack_of("s1", 4)
        created = await gw.dispatch("MESSAGE_CREATE")
        assert (created["d"]["id"], created["d"]["flags"]) == (sent["id"], 4)
        refused = await ack_of("s2", 1)
        assert refused["error"]["code"] == "invalid_field"
        assert "flags" in refused["error"]["fields"]
