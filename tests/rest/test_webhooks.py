"""Incoming webhooks through the real server: managing them (MANAGE_WEBHOOKS), executing them
with their token (overrides, ?wait, bad bodies, stolen/reset tokens, deletion), their own rate
limit under a flood, and GitHub deliveries (samples written here)."""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import pytest
import trio

from relay.client import open_gateway
from relay.permissions import P
from tests.conftest import settings_for
from tests.rest.conftest import API, add_role, gather, give, join, new_server, serve_shared

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from tests.rest.conftest import Person, SharedServer

WEBHOOK_RATE = 5


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServer]:
    settings = settings_for(
        tmp_path_factory.mktemp("webhooks"), presence_grace_s=0.2, webhook_rate=WEBHOOK_RATE
    )
    yield from serve_shared(settings)


async def execute(
    server: SharedServer,
    path: str,
    body: Any = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST to a webhook URL path (under /v1/api) without any user token."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        if content is not None:
            return await http.post(API + path, content=content, headers=headers or {})
        return await http.post(API + path, json=body, headers=headers or {})


def code_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def webhook_world(
    people: Callable[[str], Awaitable[Person]],
) -> tuple[Person, Person, str, str]:
    owner, member = await gather(partial(people, "owner"), partial(people, "member"))
    server, text = await new_server(owner)
    await join(owner, server, member)
    return owner, member, server, text


async def test_managing_webhooks(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, member, server, text = await webhook_world(people)
    other_server, other_text = await new_server(owner, "Elsewhere")
    second = await owner.call(
        "POST", f"/servers/{server}/channels", {"name": "alerts", "type": "text"}
    )
    voice = await owner.call("POST", f"/servers/{server}/channels", {"name": "v", "type": "voice"})
    hooks = f"/channels/{text}/webhooks"

    assert await member.error("POST", hooks, {"name": "CI"}) == (
        403,
        "missing_permission",
        "MANAGE_WEBHOOKS",
    )
    assert (await member.error("GET", f"/servers/{server}/webhooks"))[:2] == (
        403,
        "missing_permission",
    )
    made = await owner.call("POST", hooks, {"name": "CI"})
    assert made["url"] == f"{shared_server.url}/v1/api/webhooks/{made['id']}/{made['token']}"
    assert (made["channel_id"], made["server_id"], made["creator_id"]) == (text, server, owner.id)
    for bad in ({"name": ""}, {"name": "a" * 81}, {"name": "relay bot"}, {"name": "x\ty"},
                {}, {"name": 5}):  # fmt: skip
        assert (await owner.error("POST", hooks, bad))[:2] == (400, "invalid_field"), bad
    assert (await owner.error("POST", f"/channels/{voice['id']}/webhooks", {"name": "v"}))[:2] == (
        400,
        "not_a_text_channel",
    )
    assert (await owner.error("POST", "/channels/123/webhooks", {"name": "v"}))[:2] == (
        404,
        "unknown_channel",
    )
    listed = await owner.call("GET", hooks)
    assert [w["id"] for w in listed] == [made["id"]]
    assert "token" not in listed[0]
    assert [w["id"] for w in await owner.call("GET", f"/servers/{server}/webhooks")] == [made["id"]]
    one = f"/webhooks/{made['id']}"
    assert (await owner.call("GET", one))["name"] == "CI"
    assert (await member.error("GET", one))[:2] == (403, "missing_permission")

    # A member given MANAGE_WEBHOOKS may manage them too.
    role = await add_role(owner, server, int(P.MANAGE_WEBHOOKS))
    await give(owner, server, member, role)
    assert len(await member.call("GET", hooks)) == 1

    # Rename, move within the server; never to another server's channel.
    moved = await owner.call("PATCH", one, {"name": "Builds", "channel_id": second["id"]})
    assert (moved["name"], moved["channel_id"]) == ("Builds", second["id"])
    assert await owner.call("GET", hooks) == []
    assert (await owner.error("PATCH", one, {"channel_id": other_text}))[:2] == (
        404,
        "unknown_channel",
    )
    assert (await owner.error("PATCH", one, {"channel_id": "abc"}))[:2] == (400, "invalid_field")
    assert (await owner.error("PATCH", "/webhooks/1", {"name": "x"}))[:2] == (
        404,
        "unknown_webhook",
    )
    assert (await owner.error("GET", "/webhooks/nope"))[:2] == (404, "unknown_webhook")
    log = await owner.call("GET", f"/servers/{server}/audit-log")
    actions = {e["action"] for e in log}
    assert {"webhook_create", "webhook_update"} <= actions
    assert other_server  # its channel was the refused target above


async def test_executing_a_webhook(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, member, _server, text = await webhook_world(people)
    made = await owner.call("POST", f"/channels/{text}/webhooks", {"name": "Alerts"})
    url = f"/webhooks/{made['id']}/{made['token']}"
    async with open_gateway(shared_server.ws_url) as gw:
        await gw.identify(member.token)
        plain = await execute(shared_server, url, {"content": "disk full"})
        assert plain.status_code == 204, plain.text
        event = (await gw.dispatch("MESSAGE_CREATE"))["d"]
        assert event["webhook_id"] == made["id"]
        assert event["content"] == "disk full"
        assert event["author"] == {
            "id": made["id"],
            "username": "Alerts",
            "display_name": None,
            "bot": True,
        }
        body = {
            "content": f"ping <@{member.id}>",
            "username": "Nightly build",
            "avatar_url": "http://127.0.0.1:9/a.png",  # refused by the fetcher's guard
        }
        waited = await execute(shared_server, f"{url}?wait=true", body)
        assert waited.status_code == 200, waited.text
        message = waited.json()
        assert message["author"]["username"] == "Nightly build"
        assert "avatar_url" not in message["author"]  # never a third party's URL
        assert message["mentions"] == [member.id]
        assert (await gw.dispatch("MESSAGE_CREATE"))["d"]["id"] == message["id"]
    history = await member.call("GET", f"/channels/{text}/messages")
    assert [(m["webhook_id"], m["author"]["username"]) for m in history[-2:]] == [
        (made["id"], "Alerts"),
        (made["id"], "Nightly build"),
    ]
    assert await member.call("GET", f"/users/{made['id']}") | {"created_at": None} == {
        "id": made["id"],
        "username": f"webhook-{made['id']}",
        "display_name": "Alerts",
        "created_at": None,
        "bot": True,
    }
    # People's messages and user objects are as before bots existed.
    people_message = await member.call("POST", f"/channels/{text}/messages", {"content": "x"})
    assert people_message["webhook_id"] is None
    assert "bot" not in people_message["author"]

    # Bad bodies and parameters: 400 with the field named; nothing posted.
    for bad in [
        {},
        {"content": ""},
        {"content": "   "},
        {"content": "x" * 4001},
        {"content": "x", "username": "System"},
        {"content": "x", "username": "my RELAY"},
        {"content": "x", "username": ""},
        {"content": "x", "avatar_url": "javascript:alert(1)"},
        {"content": "x", "avatar_url": "https://"},
        {"content": "x", "avatar_url": "https://a b.example/x.png"},
        {"content": "x", "avatar_url": "ftp://example.com/a.png"},
        {"content": "x", "embed": []},
        {"embeds": [{"title": "x" * 257}]},
        {"embeds": [{}]},
        {"embeds": [{"description": "x" * 4000}, {"description": "x" * 2001}]},
        {"content": "x", "allowed_mentions": {"parse": ["users"], "users": [member.id]}},
        {"content": "x", "allowed_mentions": {"parse": ["nobody"]}},
        {"content": 5},
    ]:
        response = await execute(shared_server, url, bad)
        assert code_of(response) == (400, "invalid_field"), (bad, response.text)
    not_json = await execute(shared_server, url, content=b"{not json", headers={})
    assert code_of(not_json) == (400, "malformed_json")
    assert code_of(await execute(shared_server, f"{url}?wait=maybe", {"content": "x"})) == (
        400,
        "invalid_field",
    )

    # Stolen or guessed tokens: a wrong token is 401, an unknown webhook 404.
    for path, expected in [
        (f"/webhooks/{made['id']}/{made['token']}x", (401, "invalid_webhook_token")),
        (f"/webhooks/{made['id']}/x", (401, "invalid_webhook_token")),
        (f"/webhooks/1/{made['token']}", (404, "unknown_webhook")),
        (f"/webhooks/abc/{made['token']}", (404, "unknown_webhook")),
    ]:
        assert code_of(await execute(shared_server, path, {"content": "x"})) == expected, path
    # A reset token replaces the old one at once.
    reset = await owner.call("POST", f"/webhooks/{made['id']}/reset-token")
    assert code_of(await execute(shared_server, url, {"content": "x"})) == (
        401,
        "invalid_webhook_token",
    )
    new_url = f"/webhooks/{made['id']}/{reset['token']}"
    assert (await execute(shared_server, new_url, {"content": "after reset"})).status_code == 204
    # A deleted webhook's URL is 404 at once; its messages stay.
    await owner.call("DELETE", f"/webhooks/{made['id']}")
    assert code_of(await execute(shared_server, new_url, {"content": "x"})) == (
        404,
        "unknown_webhook",
    )
    assert (await owner.error("DELETE", f"/webhooks/{made['id']}"))[:2] == (404, "unknown_webhook")
    history = await member.call("GET", f"/channels/{text}/messages")
    assert history[-1]["content"] == "after reset"
    # Deleting its channel takes the webhook with it.
    again = await owner.call("POST", f"/channels/{text}/webhooks", {"name": "Again"})
    await owner.call("DELETE", f"/channels/{text}")
    gone = f"/webhooks/{again['id']}/{again['token']}"
    assert code_of(await execute(shared_server, gone, {"content": "x"})) == (404, "unknown_webhook")


async def test_webhook_flood_hits_its_own_limit(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, _, _, text = await webhook_world(people)
    first, second = await gather(
        partial(owner.call, "POST", f"/channels/{text}/webhooks", {"name": "one"}),
        partial(owner.call, "POST", f"/channels/{text}/webhooks", {"name": "two"}),
    )
    url = f"/webhooks/{first['id']}/{first['token']}"
    statuses: list[int] = []

    async def send(n: int) -> None:
        response = await execute(shared_server, url, {"content": f"flood {n}"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1

    async with trio.open_nursery() as nursery:
        for n in range(WEBHOOK_RATE * 3):
            nursery.start_soon(send, n)
    assert sorted(statuses) == [204] * WEBHOOK_RATE + [429] * (WEBHOOK_RATE * 2)
    # Wrong tokens do not spend the webhook's budget, and the other webhook has its own.
    other = f"/webhooks/{second['id']}/{second['token']}"
    assert (await execute(shared_server, other, {"content": "fine"})).status_code == 204
    history = await owner.call("GET", f"/channels/{text}/messages?limit=100")
    assert len([m for m in history if m["webhook_id"] == first["id"]]) == WEBHOOK_RATE


PUSH = {
    "ref": "refs/heads/main",
    "before": "0" * 40,
    "after": "b" * 40,
    "compare": "https://github.com/octo/app/compare/aaaa...bbbb",
    "forced": False,
    "repository": {"id": 1, "full_name": "octo/app", "html_url": "https://github.com/octo/app"},
    "pusher": {"name": "alice", "email": "a@example.com"},
    "sender": {"login": "alice", "id": 7},
    "commits": [
        {
            "id": "1234567890abcdef1234567890abcdef12345678",
            "message": "Fix the flaky test\n\nLong explanation.",
            "author": {"name": "Alice", "email": "a@example.com", "username": "alice"},
            "url": "https://github.com/octo/app/commit/1234567",
        },
        {
            "id": "abcdef1234567890abcdef1234567890abcdef12",
            "message": "Bump version",
            "author": {"name": "Bob", "email": "b@example.com"},
        },
    ],
}
PULL_REQUEST = {
    "action": "closed",
    "number": 5,
    "pull_request": {
        "number": 5,
        "title": "Add webhooks",
        "html_url": "https://github.com/octo/app/pull/5",
        "merged": True,
        "user": {"login": "bob"},
    },
    "repository": {"full_name": "octo/app"},
    "sender": {"login": "carol"},
}
ISSUE = {
    "action": "opened",
    "issue": {"number": 12, "title": "Crash on start", "html_url": "https://github.com/o/i/12"},
    "repository": {"full_name": "octo/app"},
    "sender": {"login": "dave"},
}
RELEASE = {
    "action": "published",
    "release": {"tag_name": "v1.2.0", "name": "Spring", "html_url": "https://github.com/r/1"},
    "repository": {"full_name": "octo/app"},
    "sender": {"login": "erin"},
}


async def test_github_deliveries(
    shared_server: SharedServer, people: Callable[[str], Awaitable[Person]]
) -> None:
    owner, _, _, text = await webhook_world(people)
    made = await owner.call("POST", f"/channels/{text}/webhooks", {"name": "Repo"})
    url = f"/webhooks/{made['id']}/{made['token']}/github"

    async def deliver(event: str, payload: Any) -> httpx.Response:
        return await execute(shared_server, url, payload, headers={"X-GitHub-Event": event})

    ping = await deliver("ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
    assert (ping.status_code, ping.json()) == (200, {"pong": True})
    for event, payload in [
        ("push", PUSH),
        ("pull_request", PULL_REQUEST),
        ("issues", ISSUE),
        ("release", RELEASE),
    ]:
        response = await deliver(event, payload)
        assert response.status_code == 204, (event, response.text)
    sneaky = {**ISSUE, "issue": {"number": 13, "title": f"hi <@{owner.id}>"}}
    assert (await deliver("issues", sneaky)).status_code == 204
    ignored = await deliver("star", {"action": "created", "repository": {"full_name": "o/a"}})
    assert ignored.status_code == 204
    history = await owner.call("GET", f"/channels/{text}/messages")
    assert history[-1]["content"] == f"[octo/app] dave opened issue #13: hi <@{owner.id}>"
    assert history.pop()["mentions"] == []  # text from GitHub mentions nobody
    assert [m["content"] for m in history] == [
        "[octo/app] alice pushed 2 commits to main\n"
        "`1234567` Fix the flaky test - alice\n"
        "`abcdef1` Bump version - Bob\n"
        "https://github.com/octo/app/compare/aaaa...bbbb",
        "[octo/app] carol merged pull request #5: Add webhooks\nhttps://github.com/octo/app/pull/5",
        "[octo/app] dave opened issue #12: Crash on start\nhttps://github.com/o/i/12",
        "[octo/app] erin published release Spring\nhttps://github.com/r/1",
    ]
    assert {m["author"]["username"] for m in history} == {"GitHub"}
    assert {m["webhook_id"] for m in history} == {made["id"]}

    # A form-encoded delivery (GitHub's other content type) is read from its payload field
    # (through another webhook: this one has spent its budget, webhook_rate).
    reopened = {"action": "reopened", "issue": {"number": 1, "title": "t"},
                "repository": {"full_name": "o/a"}}  # fmt: skip
    spare = await owner.call("POST", f"/channels/{text}/webhooks", {"name": "Spare"})
    form = await execute(
        shared_server,
        f"/webhooks/{spare['id']}/{spare['token']}/github",
        content=urlencode({"payload": json.dumps(reopened)}).encode(),
        headers={"X-GitHub-Event": "issues", "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert form.status_code == 204, form.text
    latest = await owner.call("GET", f"/channels/{text}/messages?limit=1")
    assert latest[0]["content"] == "[o/a] someone reopened issue #1: t"

    # Bad deliveries: 400, nothing posted.
    headers = {"X-GitHub-Event": "push", "Content-Type": "application/json"}
    for content, code in [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "invalid_field"),
        (b'{"ref": "refs/heads/main"}', "invalid_field"),
        (b'{"ref": 5, "repository": {"full_name": "o/a"}}', "invalid_field"),
        (b"", "invalid_field"),
        (b"[" * 10_000, "invalid_field"),
        (b'{"a":' * 50_000, "malformed_json"),
    ]:
        response = await execute(shared_server, url, content=content, headers=headers)
        assert code_of(response) == (400, code), content[:20]
    unknown_bad = await execute(
        shared_server, url, content=b"{oops", headers={"X-GitHub-Event": "star"}
    )
    assert code_of(unknown_bad) == (400, "malformed_json")
    no_header = await execute(shared_server, url, PUSH)
    assert code_of(no_header) == (400, "invalid_field")
    wrong = f"/webhooks/{made['id']}/nope/github"
    assert code_of(
        await execute(shared_server, wrong, PUSH, headers={"X-GitHub-Event": "push"})
    ) == (401, "invalid_webhook_token")
    assert code_of(await execute(shared_server, wrong, {}, headers={"X-GitHub-Event": "ping"})) == (
        401,
        "invalid_webhook_token",
    )
    assert len(await owner.call("GET", f"/channels/{text}/messages")) == 6
