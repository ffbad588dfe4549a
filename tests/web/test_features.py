"""The web client's threads, search and voice in a real Chromium, two people each: a thread
started from a message and used by both, a search that finds a message with its highlight and
jumps to it through older history, and a voice channel where each hears the other (Chromium's
fake microphone, Opus through WebCodecs, the server's encrypted WebSocket media)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx
from playwright.sync_api import expect

from tests.web.test_client import PAGE_ERRORS, message, person, ready, send, shoot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.web.conftest import WebServer


def rest(server: WebServer, page: Page, method: str, path: str, body: Any = None) -> Any:
    token = page.evaluate("relay.api.session.access_token")
    r = httpx.request(
        method,
        f"{server.url}/v1/api{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


def pair(browser: Browser, server: WebServer, a: str, b: str) -> tuple[Page, Page, str]:
    """Two people in a new server of the first (created in the page, joined by the invite link)."""
    first = person(browser, server, a)
    first.click("#create-server")
    first.fill("#server-name", f"{a}'s")
    first.press("#server-name", "Enter")
    expect(first.locator("#server-header h2")).to_have_text(f"{a}'s")
    server_id = first.evaluate("relay.shell.serverId")
    code = rest(
        server, first, "POST", f"/servers/{server_id}/invites", {"max_age": 600, "max_uses": 0}
    )["code"]
    second = person(browser, server, b)
    second.goto(f"/invite/{code}")
    ready(second)
    second.click("#accept-invite")
    expect(second.locator("#server-header h2")).to_have_text(f"{a}'s")
    return first, second, server_id


def test_threads_and_search(browser: Browser, web_server: WebServer) -> None:
    ada, bob, server_id = pair(browser, web_server, "tada", "tbob")
    send(ada, "let us plan the launch party")
    expect(message(bob, "launch party")).to_have_count(1)

    # ada starts a thread from her message; the pane opens beside the chat.
    starter = message(ada, "launch party")
    starter.hover()
    starter.locator(".start-thread").click()
    ada.fill("#thread-name", "Launch")
    ada.press("#thread-name", "Enter")
    pane = ada.locator("#thread-pane")
    expect(pane.locator(".channel-title")).to_have_text("🧵 Launch")
    expect(pane.locator("#thread-state")).to_contain_text("1 member")

    # bob sees the thread under the message, live, opens it and posts: he becomes a member.
    link = message(bob, "launch party").locator(".thread-link")
    expect(link).to_contain_text("🧵 Launch")
    link.click()
    bob_pane = bob.locator("#thread-pane")
    expect(bob_pane.locator("#thread-join")).to_have_text("Join")
    bob.fill("#thread-composer", "count me in")
    bob.press("#thread-composer", "Enter")
    expect(pane.locator(".message", has_text="count me in")).to_have_count(1)
    expect(pane.locator("#thread-state")).to_contain_text("2 members")
    expect(bob_pane.locator("#thread-join")).to_have_text("Leave")
    # The channel's own list does not show thread messages.
    expect(
        ada.locator("section.chat:not(.thread-chat) .message", has_text="count me in")
    ).to_have_count(0)

    # ada reacts to bob's thread message, bob edits it; each sees the other's change live.
    theirs = pane.locator(".message", has_text="count me in")
    theirs.hover()
    theirs.locator(".quick-react").first.click()
    expect(bob_pane.locator(".message", has_text="count me in").locator(".reaction")).to_have_text(
        "👍 1"
    )
    bob.press("#thread-composer", "ArrowUp")
    bob_pane.locator(".edit-box").fill("count me in, with cake")
    bob_pane.locator(".edit-box").press("Enter")
    expect(pane.locator(".message", has_text="with cake").locator(".edited")).to_have_count(1)
    shoot(ada, "thread")

    # ada locks and archives it: bob sees both states and can no longer post.
    ada.click("#thread-lock")
    ada.click("#thread-archive")
    expect(bob_pane.locator("#thread-state .archived")).to_have_text("Archived")
    expect(bob_pane.locator("#thread-state .locked")).to_contain_text("Locked")
    expect(bob.locator("#thread-composer")).to_be_disabled()
    # bob leaves it; ada's count follows. The channel's thread list has it among the archived.
    bob.click("#thread-join")  # "Leave"
    expect(bob_pane.locator("#thread-join")).to_have_text("Join")
    expect(pane.locator("#thread-state")).to_contain_text("1 member")
    bob.click("#thread-close")
    expect(bob_pane).to_be_hidden()
    bob.click("#threads-button")
    expect(bob.locator("#archived-threads .thread-entry")).to_contain_text(["Launch"])
    bob.keyboard.press("Escape")
    # A thread started in the channel (no message) shows among the active ones.
    ada.click("#threads-button")
    ada.click("#new-thread")
    ada.fill("#thread-name", "Side talk")
    ada.press("#thread-name", "Enter")
    expect(pane.locator(".channel-title")).to_have_text("🧵 Side talk")
    bob.click("#threads-button")
    expect(bob.locator("#active-threads .thread-entry")).to_contain_text(["Side talk"])
    bob.keyboard.press("Escape")

    # Search: 50 newer messages push the party out of the first history page; bob reloads,
    # finds it (from:, the word highlighted) and jumps to it, which loads the older pages.
    channel_id = ada.evaluate("relay.shell.chat.channelId")
    token = ada.evaluate("relay.api.session.access_token")
    with httpx.Client(
        base_url=f"{web_server.url}/v1/api", headers={"Authorization": f"Bearer {token}"}
    ) as http:
        for i in range(50):
            assert http.post(
                f"/channels/{channel_id}/messages", json={"content": f"filler {i}"}
            ).is_success
    bob.reload()
    ready(bob)
    bob.locator(f"[data-server='{server_id}']").click()
    expect(message(bob, "filler 49")).to_have_count(1)
    expect(message(bob, "launch party")).to_have_count(0)
    bob.fill("#search-input", "from:tada PARTY")
    bob.press("#search-input", "Enter")
    expect(bob.locator("#search-total")).to_contain_text("1 result")
    expect(bob.locator("#search-results mark")).to_have_text(["party"])
    bob.fill("#search-input", "from:nobody party")  # refused in the page, before any request
    bob.press("#search-input", "Enter")
    expect(bob.locator(".toast", has_text="No one called nobody here")).to_have_count(1)
    bob.fill("#search-input", "party sort:sideways")
    bob.press("#search-input", "Enter")
    expect(bob.locator(".toast", has_text="sort: takes newest")).to_have_count(1)
    bob.fill("#search-input", "has:link")
    bob.press("#search-input", "Enter")
    expect(bob.locator("#search-total")).to_contain_text("0 results")
    bob.fill("#search-input", "from:tada PARTY")
    bob.press("#search-input", "Enter")
    bob.locator("#search-results .jump").click()
    jumped = message(bob, "launch party")
    expect(jumped).to_have_class(re.compile("jumped"))
    expect(jumped).to_be_in_viewport()
    assert PAGE_ERRORS == []


def test_voice(browser: Browser, web_server: WebServer) -> None:
    ada, bob, server_id = pair(browser, web_server, "vada", "vbob")
    ada_id, bob_id = ada.evaluate("relay.store.me.id"), bob.evaluate("relay.store.me.id")
    rest(
        web_server,
        ada,
        "POST",
        f"/servers/{server_id}/channels",
        {"name": "Lounge", "type": "voice"},
    )
    for page in (ada, bob):
        page.locator("button.channel.voice", has_text="Lounge").click()
        expect(page.locator("#voice-status")).to_have_text("Voice connected")
    for page in (ada, bob):
        expect(page.locator(".voice-member")).to_have_count(2)
    # Each sees the other speaking (the fake microphone beeps) and decodes the other's audio.
    ada.wait_for_function(f"() => relay.shell.voice.conn?.heard.has('{bob_id}')")
    bob.wait_for_function(f"() => relay.shell.voice.conn?.heard.has('{ada_id}')")
    for page in (ada, bob):
        page.wait_for_function(
            "() => relay.shell.voice.stats.decoded >= 10 && relay.shell.voice.stats.played >= 10"
        )

    # The connections break (gateway and voice): both RESUME and the audio goes on.
    before = bob.evaluate("relay.shell.voice.stats.decoded")
    web_server.cutter.cut()
    for page in (ada, bob):
        ready(page)
        page.wait_for_function("() => relay.shell.voice.stats.resumed === 1")
        expect(page.locator("#voice-status")).to_have_text("Voice connected")
    bob.wait_for_function(f"() => relay.shell.voice.stats.decoded > {before} + 10")

    # ada shares her screen (Chromium's fake one): bob sees LIVE, watches, and frames decode
    # (the first after his key frame request); when she stops, his view closes.
    ada.click("#voice-screen")
    ada_entry = bob.locator(f".voice-member[data-user='{ada_id}']")
    expect(ada_entry.locator(".live")).to_have_count(1)
    ada_entry.locator(".watch").click()
    bob.wait_for_function("() => relay.shell.voice.viewer?.stats.frames >= 3")
    ada.wait_for_function("() => relay.shell.voice.conn.screen.stats.keyRequests >= 1")
    shoot(bob, "voice")
    ada.click("#voice-screen")
    expect(bob.locator("#screen-view")).to_have_count(0)
    expect(ada_entry.locator(".live")).to_have_count(0)

    # Self mute shows to the other; a server mute by the owner shows to both.
    ada.click("#voice-mute")
    expect(bob.locator(f".voice-member[data-user='{ada_id}'] .self-mute")).to_have_count(1)
    ada.locator(f".voice-member[data-user='{bob_id}'] .voice-name").click()
    ada.click("#voice-mod-mute")
    expect(bob.locator("#voice-server-mute")).to_be_visible()
    expect(ada.locator(f".voice-member[data-user='{bob_id}'] .server-mute")).to_have_count(1)
    bob.click("#voice-deafen")
    expect(ada.locator(f".voice-member[data-user='{bob_id}'] .self-deaf")).to_have_count(1)
    expect(bob.locator("#voice-deafen")).to_have_attribute("aria-pressed", "true")

    bob.click("#voice-leave")
    expect(ada.locator(".voice-member")).to_have_count(1)
    expect(bob.locator("#voice-panel")).to_be_hidden()

    # A refused microphone: a clear message, and bob joins to listen, self-muted.
    bob.evaluate(
        "() => { navigator.mediaDevices.getUserMedia = "
        "() => Promise.reject(new DOMException('no', 'NotAllowedError')); }"
    )
    bob.locator("button.channel.voice", has_text="Lounge").click()
    expect(bob.locator("#voice-status")).to_contain_text("Microphone access was refused")
    expect(bob.locator("#voice-mute")).to_have_attribute("aria-pressed", "true")
    expect(ada.locator(".voice-member")).to_have_count(2)
    bob.wait_for_function("() => relay.shell.voice.conn?.key !== undefined")
    # ada disconnects him (MOVE_MEMBERS): his panel goes, the channel shows her alone.
    ada.locator(f".voice-member[data-user='{bob_id}'] .voice-name").click()
    ada.click("#voice-mod-disconnect")
    expect(bob.locator("#voice-panel")).to_be_hidden()
    expect(ada.locator(".voice-member")).to_have_count(1)
    assert PAGE_ERRORS == []
