"""Message search through the real server: both routes, every parameter, highlights, what the
caller may not see (never listed, never counted), and bad parameters (400, never 500)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import httpx
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from relay.permissions import P
from tests.conftest import settings_for, start_server
from tests.rest.conftest import gather, join, new_server, post

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path
    from typing import Any

    from tests.rest.conftest import Person


def q(**params: Any) -> str:
    pairs = []
    for name, value in params.items():
        for one in value if isinstance(value, list) else [value]:
            pairs.append((name, one))
    return urlencode(pairs)


async def test_search_a_server_with_every_parameter(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner, member, other = await gather(
        partial(people, "owner"), partial(people, "member"), partial(people, "other")
    )
    server, general = await new_server(owner)
    await join(owner, server, member, other)
    side = (
        await owner.call("POST", f"/servers/{server}/channels", {"name": "side", "type": "text"})
    )["id"]
    a = await post(owner, general, "Le Café ouvre à neuf heures")
    b = await post(member, general, f"café au lait? <@{other.id}> https://example.com")
    c = await post(owner, side, "cafeteria menu 東京タワー")
    await owner.call("PUT", f"/channels/{general}/pins/{a}")

    def ids(found: dict[str, Any]) -> list[str]:
        return [m["id"] for m in found["messages"]]

    base = f"/servers/{server}/messages/search"
    found = await member.call("GET", f"{base}?{q(content='CAFE')}")
    assert found["total_results"] == 2
    assert set(ids(found)) == {a, b}
    marks = {h["message_id"]: h["ranges"] for h in found["highlights"]}
    contents = {m["id"]: m["content"] for m in found["messages"]}
    assert {m: [contents[m][s:e] for s, e in marks[m]] for m in contents} == {
        a: ["Café"],
        b: ["café"],
    }
    everything = q(content="caf*", sort="oldest")
    assert ids(await member.call("GET", f"{base}?{everything}")) == [a, b, c]
    assert ids(await member.call("GET", f"{base}?{q(content='東京')}")) == [c]
    assert ids(await member.call("GET", f"{base}?{q(content='caf*', channel_id=side)}")) == [c]
    assert ids(await member.call("GET", f"{base}?{q(content='caf* -lait', sort='oldest')}")) == [
        a,
        c,
    ]
    assert ids(await member.call("GET", f"{base}?{q(author_id=member.id)}")) == [b]
    assert ids(await member.call("GET", f"{base}?{q(mentions=other.id)}")) == [b]
    assert ids(await member.call("GET", f"{base}?{q(has='link')}")) == [b]
    assert ids(await member.call("GET", f"{base}?{q(pinned='true')}")) == [a]
    assert ids(await member.call("GET", f"{base}?{q(pinned='false', sort='oldest')}")) == [b, c]
    assert ids(await member.call("GET", f"{base}?{q(before=c, after=a)}")) == [b]
    page = await member.call("GET", f"{base}?{q(content='caf*', sort='newest', limit=1, offset=1)}")
    assert (page["total_results"], ids(page)) == (3, [b])
    phrase = q(content='"ouvre à neuf"')
    assert ids(await member.call("GET", f"{base}?{phrase}")) == [a]

    # Hidden channels: neither listed nor counted, whether VIEW or READ_HISTORY is missing.
    hide = {"type": "member", "allow": "0", "deny": str(int(P.READ_MESSAGE_HISTORY))}
    await owner.call("PUT", f"/channels/{side}/permissions/{member.id}", hide)
    found = await member.call("GET", f"{base}?{everything}")
    assert (found["total_results"], ids(found)) == (2, [a, b])
    narrowed = await member.call("GET", f"{base}?{q(content='caf*', channel_id=side)}")
    assert narrowed["total_results"] == 0
    hide = {"type": "role", "allow": "0", "deny": str(int(P.VIEW_CHANNEL))}
    await owner.call("PUT", f"/channels/{general}/permissions/{server}", hide)
    assert (await member.call("GET", f"{base}?{everything}"))["total_results"] == 0
    assert (await other.call("GET", f"{base}?{everything}"))["total_results"] == 1
    assert (await owner.call("GET", f"{base}?{everything}"))["total_results"] == 3
    # Not a member: 404, as for any server one is not in.
    outsider = await people("outsider")
    assert (await outsider.error("GET", f"{base}?{everything}"))[:2] == (404, "unknown_server")


async def test_search_a_dm(people: Callable[[str], Awaitable[Person]]) -> None:
    ann, ben, eve = await gather(
        partial(people, "ann"), partial(people, "ben"), partial(people, "eve")
    )
    server, general = await new_server(ann)
    await join(ann, server, ben, eve)
    dm = (await ann.call("POST", "/users/@me/channels", {"recipient_id": ben.id}))["id"]
    mine = await post(ann, dm, "secret Plans for Friday")
    await post(ann, general, "public plans")
    found = await ben.call("GET", f"/channels/{dm}/messages/search?{q(content='plans')}")
    assert [m["id"] for m in found["messages"]] == [mine]
    assert found["total_results"] == 1
    assert (await eve.error("GET", f"/channels/{dm}/messages/search?content=plans"))[:2] == (
        404,
        "unknown_channel",
    )


BAD: list[dict[str, Any]] = [
    {"content": ""},
    {"content": "-only -excluded"},
    {"content": "x" * 513},
    {"limit": "26"},
    {"limit": "0"},
    {"limit": "ten"},
    {"offset": "5001"},
    {"offset": "-1"},
    {"sort": "random"},
    {"has": "video"},
    {"pinned": "yes"},
    {"author_id": "abc"},
    {"channel_id": "0"},
    {"mentions": ["1"] * 26},
    {"before": "9" * 30},
]


async def test_bad_parameters_are_400_naming_them(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    owner = await people("owner")
    server, general = await new_server(owner)
    for params in BAD:
        for path in (f"/servers/{server}", f"/channels/{general}"):
            status, payload = await owner.status("GET", f"{path}/messages/search?{q(**params)}")
            assert status == 400, (params, payload)
            assert payload["error"]["code"] == "invalid_field"
            assert set(payload["error"]["fields"]) == set(params)
    assert (await owner.error("GET", "/servers/123/messages/search"))[:2] == (
        404,
        "unknown_server",
    )


async def test_any_content_gives_results_or_400(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Hypothesis over the route: any `content` answers 200 or 400, never 500 (its own server,
    with a search budget that lets the examples through)."""
    running, shutdown = await start_server(nursery, settings_for(tmp_path, search_rate=10_000))
    async with running.client() as client:
        key = SigningKey.generate()
        await client.register("fuzzer", public_key=bytes(key.verify_key))
        await client.login_with_key("fuzzer", key)
        server = await client.request("POST", "/v1/api/servers", json={"name": "s"})
        server_id = server.json()["id"]
        general = next(c["id"] for c in server.json()["channels"] if c["type"] == "text")
        for text in ('say "hi" NOT AND OR NEAR(a b)', "col:umn ^start * - + {x}", "🎉 東京"):
            await client.request(
                "POST", f"/v1/api/channels/{general}/messages", json={"content": text}
            )
        headers = {"Authorization": f"Bearer {client.access_token}"}

    def examples() -> None:
        with httpx.Client(base_url=running.url, headers=headers) as http:

            @settings(max_examples=80, deadline=None)
            @given(st.text(max_size=80))
            def answers(text: str) -> None:
                response = http.get(
                    f"/v1/api/servers/{server_id}/messages/search", params={"content": text}
                )
                assert response.status_code in (200, 400), (text, response.text)

            answers()

    await trio.to_thread.run_sync(examples)
    await shutdown()


async def test_threads_webhooks_and_embeds_are_searched(
    people: Callable[[str], Awaitable[Person]],
) -> None:
    """What other paths write is indexed too: a thread's messages (seen with its parent's
    permissions), a webhook's messages, and messages with embeds (`has=embed`)."""
    owner, member = await gather(partial(people, "owner"), partial(people, "member"))
    server, general = await new_server(owner)
    await join(owner, server, member)
    thread = (await owner.call("POST", f"/channels/{general}/threads", {"name": "t"}))["id"]
    in_thread = await post(owner, thread, "zeppelin in a thread")
    hook = await owner.call("POST", f"/channels/{general}/webhooks", {"name": "ci"})
    sent = await owner.call(
        "POST", f"/webhooks/{hook['id']}/{hook['token']}?wait=true", {"content": "zeppelin build"}
    )
    embed = {"title": "card", "description": "zeppelin", "type": "rich"}
    with_embed = await owner.call(
        "POST", f"/channels/{general}/messages", {"content": "look", "embeds": [embed]}
    )
    base = f"/servers/{server}/messages/search"
    found = await member.call("GET", f"{base}?{q(content='zeppelin', sort='oldest')}")
    assert [m["id"] for m in found["messages"]] == [in_thread, sent["id"]]
    assert [
        m["id"] for m in (await member.call("GET", f"{base}?{q(has='embed')}"))["messages"]
    ] == [with_embed["id"]]
    hide = {"type": "member", "allow": "0", "deny": str(int(P.VIEW_CHANNEL))}
    await owner.call("PUT", f"/channels/{general}/permissions/{member.id}", hide)
    found = await member.call("GET", f"{base}?{q(content='zeppelin')}")
    assert (found["total_results"], found["messages"]) == (0, [])
