"""The web client in a real Chromium: two people chatting live, key login, and a dropped
gateway connection that loses and duplicates nothing. One browser for the module; each person
is a browser context of their own (separate storage, like two machines)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import httpx
from playwright.sync_api import expect

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page, ViewportSize

    from tests.web.conftest import WebServer

PASSWORD = "a long password"
# WEB_SCREENSHOTS=docs/img pytest tests/web: save the main screens there (docs/web.md's).
SHOTS = os.environ.get("WEB_SCREENSHOTS")
PAGE_ERRORS: list[str] = []  # uncaught exceptions in any page: none expected


def person(browser: Browser, server: WebServer, username: str, *, register: bool = True) -> Page:
    context: BrowserContext = browser.new_context(base_url=server.url)
    page = context.new_page()
    page.on("pageerror", lambda e: PAGE_ERRORS.append(f"{username}: {e}"))
    page.on("dialog", lambda d: d.accept(d.default_value or "spam"))
    page.goto("/")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#register" if register else "#login")
    ready(page)
    return page


def shoot(page: Page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/web-{name}.png")


def ready(page: Page) -> None:
    """The gateway is connected and READY (or RESUMED) came: the banner is gone."""
    expect(page.locator("#connection")).to_have_attribute("data-status", "ready")
    expect(page.locator("#connection")).to_be_hidden()


def message(page: Page, text: str) -> Locator:
    return page.locator(".message[data-id]", has=page.locator(".content", has_text=text))


def send(page: Page, text: str) -> None:
    page.fill("#composer", text)
    page.press("#composer", "Enter")
    expect(message(page, text)).to_have_count(1)


def test_two_people_chat_live(browser: Browser, web_server: WebServer) -> None:
    ada = person(browser, web_server, "ada")
    ada.click("#create-server")
    ada.fill("#server-name", "Tour")
    ada.press("#server-name", "Enter")
    expect(ada.locator("#server-header h2")).to_have_text("Tour")
    ada.click("#invite-button")
    link = ada.input_value("#invite-link")
    assert re.fullmatch(re.escape(web_server.url) + r"/invite/[A-Za-z0-9_-]+", link)
    ada.keyboard.press("Escape")

    # bob opens the link logged out: he registers, then sees the invite's preview and joins.
    bob_context = browser.new_context(base_url=web_server.url)
    bob = bob_context.new_page()
    bob.on("dialog", lambda d: d.accept())
    bob.on("pageerror", lambda e: PAGE_ERRORS.append(f"bob: {e}"))
    bob.goto(link)
    bob.fill("#username", "bob")
    bob.fill("#password", PASSWORD)
    bob.click("#register")
    expect(bob.locator("#invite-server")).to_have_text("Tour")
    bob.click("#accept-invite")
    expect(bob.locator("#server-header h2")).to_have_text("Tour")
    expect(ada.locator(".member[data-status=online]")).to_have_count(2)  # bob, live, online

    # Messages both ways, live; typing is seen by the other.
    send(ada, "hello bob")
    expect(message(bob, "hello bob")).to_have_count(1)
    bob.type("#composer", "hi ")
    expect(ada.locator("#typing")).to_contain_text("bob is typing")
    # A mention through the autocomplete: "@ad" offers ada, Enter picks her.
    bob.type("#composer", "@ad")
    expect(bob.locator("#suggestions li")).to_have_text(["@ada"])
    bob.press("#composer", "Enter")
    bob.type("#composer", "welcome")
    bob.press("#composer", "Enter")
    mention = message(ada, "welcome")
    expect(mention).to_have_count(1)
    expect(mention.locator(".mention.me")).to_have_text("@ada")
    expect(mention).to_have_class(re.compile("mentioned"))
    expect(ada.locator("#typing")).to_have_text("")  # bob's message ended his typing

    # ada reacts, replies; bob sees both.
    ada_hello = message(ada, "hello bob")
    ada_hello.hover()
    ada_hello.locator(".quick-react").first.click()
    expect(message(bob, "hello bob").locator(".reaction")).to_have_text("👍 1")
    mention.hover()
    mention.locator(".reply").click()
    send(ada, "thanks")
    expect(message(bob, "thanks").locator(".reply-ref")).to_contain_text("welcome")
    shoot(bob, "chat")

    # ada (the owner) pins her message: bob sees the mark and finds it among the pins.
    ada_hello.hover()
    ada_hello.locator(".pin").click()
    expect(message(bob, "hello bob").locator(".pinned-mark")).to_have_count(1)
    bob.click("#pins-button")
    expect(bob.locator(".pins li")).to_have_text(["ada hello bob"])
    bob.keyboard.press("Escape")

    # bob edits (ArrowUp on an empty composer) and deletes; ada sees both.
    bob.press("#composer", "ArrowUp")
    bob.fill(".edit-box", "welcome back")
    bob.press(".edit-box", "Enter")
    expect(message(ada, "welcome back").locator(".edited")).to_have_count(1)
    send(bob, "oops")
    expect(message(ada, "oops")).to_have_count(1)
    bob_oops = message(bob, "oops")
    bob_oops.hover()
    bob_oops.locator(".delete").click()
    expect(message(ada, "oops")).to_have_count(0)

    # An unread badge on a channel ada is not looking at, cleared when she opens it.
    ada.click("#server-settings")
    ada.click("[data-tab=Channels]")
    ada.fill("#new-channel-name", "random")
    ada.click("#create-channel")
    ada.keyboard.press("Escape")
    random = bob.locator(".channel", has_text="random")
    random.click()
    bob.fill("#composer", f"<@{ada.evaluate('relay.store.me.id')}> over here")
    bob.press("#composer", "Enter")
    ada_random = ada.locator(".channel", has_text="random")
    expect(ada_random).to_have_class(re.compile("unread"))
    expect(ada_random.locator(".badge")).to_have_text("1")
    expect(ada).to_have_title("(1) Relay")
    ada.press("#composer", "Alt+ArrowDown")  # the next channel, by keyboard
    expect(ada_random).to_have_attribute("aria-current", "true")
    expect(ada_random.locator(".badge")).to_have_count(0)
    expect(ada_random).not_to_have_class(re.compile("unread"))

    # A reload keeps the session and the history.
    bob.reload()
    ready(bob)
    bob.locator(f"[data-server='{bob.evaluate('[...relay.store.servers.keys()][0]')}']").click()
    expect(message(bob, "hello bob")).to_have_count(1)

    # A DM: ada opens one from bob's card; it shows up on bob's page, unread.
    ada.locator(".member", has_text="bob").locator("button").click()
    ada.click("#open-dm")
    # The DM opens once its POST is answered: typing before that would post in #random.
    expect(ada.locator(".channel-title")).to_have_text("@bob")
    send(ada, "just between us")
    expect(bob.locator("[data-server='@me']")).to_have_class(re.compile("unread"))
    bob.click("[data-server='@me']")
    expect(message(bob, "just between us")).to_have_count(1)
    bob.locator(f"[data-server='{bob.evaluate('[...relay.store.servers.keys()][0]')}']").click()

    # An overwrite denying @everyone SEND_MESSAGES in #general takes bob's composer away, live.
    ada.click(".server-icon[title=Tour]")
    ada.click("#server-settings")
    ada.click("[data-tab=Channels]")
    ada.locator(".channel-admin li", has_text="# general").get_by_text("Permissions").click()
    ada.check(".overwrite-editor [aria-label='deny SEND_MESSAGES']")
    ada.click(".overwrite-editor button[type=submit]")
    expect(bob.locator("#composer")).to_be_disabled()
    ada.keyboard.press("Escape")

    # ada bans bob: his page loses the server; the audit log says so.
    ada.click("#server-settings")
    ada.click("[data-tab=Members]")
    ada.locator(".member-admin li", has_text="bob").locator(".ban").click()
    expect(bob.locator("#server-header h2")).to_have_text("Direct messages")
    expect(bob.locator(".server-icon[title=Tour]")).to_have_count(0)
    ada.click("[data-tab='Audit log']")
    expect(ada.locator("#audit-log")).to_contain_text("member_ban")
    shoot(ada, "moderation")
    assert PAGE_ERRORS == []


def test_key_login(browser: Browser, web_server: WebServer) -> None:
    # At a phone's width, in the dark theme.
    phone: ViewportSize = {"width": 390, "height": 760}
    context = browser.new_context(base_url=web_server.url, viewport=phone, color_scheme="dark")
    page = context.new_page()
    page.on("pageerror", lambda e: PAGE_ERRORS.append(f"keyholder: {e}"))
    page.goto("/")
    page.fill("#username", "keyholder")
    shoot(page, "login-phone")
    page.click("#key-register")
    ready(page)
    # The private key is a CryptoKey in IndexedDB that cannot be exported.
    stored = page.evaluate(
        """async () => {
            const { storedKey } = await import('/web/js/keys.js');
            const key = await storedKey('keyholder');
            return [key.privateKey.extractable, key.privateKey.algorithm.name];
        }"""
    )
    assert stored == [False, "Ed25519"]
    me = page.evaluate("relay.api.call('GET', '/users/@me')")
    assert me["has_password"] is False
    assert len(me["keys"]) == 1
    page.click(".menu-toggle")  # the channels and the account live in a drawer at this width
    page.click("#logout")
    page.fill("#username", "keyholder")
    page.click("#key-login")
    ready(page)
    # Two sessions now (the first was logged out, so one is live: this one), and revoking
    # works from the account dialog.
    # A second login with the same key (elsewhere, as far as the server knows), then the
    # account dialog lists both and revokes the other.
    page.evaluate(
        """async () => {
            const keys = await import('/web/js/keys.js');
            const elsewhere = { save() {}, call: (...args) => relay.api.call(...args) };
            await keys.loginWithKey(elsewhere, 'keyholder');
        }"""
    )
    page.click(".menu-toggle")
    shoot(page, "phone")
    page.click("#account")
    expect(page.locator("#sessions li")).to_have_count(2)
    expect(page.locator("#sessions li strong")).to_have_text(" (this one)")
    page.click("#sessions .revoke")
    expect(page.locator("#sessions li")).to_have_count(1)
    expect(page.locator("#sessions li strong")).to_have_count(1)
    context.close()


def test_reconnect_loses_and_duplicates_nothing(browser: Browser, web_server: WebServer) -> None:
    # ada (in the browser) and cy (over REST) share a server; ada's gateway is cut while cy posts.
    ada = person(browser, web_server, "ada2")
    ada.click("#create-server")
    ada.fill("#server-name", "Net")
    ada.press("#server-name", "Enter")
    expect(ada.locator("#server-header h2")).to_have_text("Net")
    server_id = ada.evaluate("relay.shell.serverId")
    channel_id = ada.evaluate("relay.shell.chat.channelId")
    token = ada.evaluate("relay.api.token()")
    with httpx.Client(base_url=f"{web_server.url}/v1/api") as rest:
        invite = rest.post(
            f"/servers/{server_id}/invites", headers={"Authorization": f"Bearer {token}"}
        ).json()
        rest.post("/auth/register", json={"username": "cy", "password": PASSWORD})
        cy = rest.post("/auth/login", json={"username": "cy", "password": PASSWORD}).json()
        auth = {"Authorization": f"Bearer {cy['access_token']}"}
        rest.post(f"/invites/{invite['code']}", headers=auth).raise_for_status()

        def post(text: str) -> None:
            url = f"/channels/{channel_id}/messages"
            rest.post(url, json={"content": text}, headers=auth).raise_for_status()

        # History: a reload shows the newest 50 (in the channel last open); scrolling up
        # loads the older ones.
        old = [f"old {i}" for i in range(60)]
        for text in old:
            post(text)
        ada.reload()
        ready(ada)
        expect(message(ada, "old 59")).to_have_count(1)
        expect(ada.locator(".message[data-id]")).to_have_count(50)
        ada.locator(".scroller").evaluate("el => { el.scrollTop = 0; }")
        expect(ada.locator(".history-begin")).to_have_count(1)
        expect(ada.locator(".message[data-id]")).to_have_count(60)
        ada.locator(".scroller").evaluate("el => { el.scrollTop = el.scrollHeight; }")

        post("before 1")
        expect(message(ada, "before 1")).to_have_count(1)
        # RESUME: the connection drops and stays down while cy posts.
        web_server.cutter.block()
        web_server.cutter.cut()
        expect(ada.locator("#connection")).to_have_text("Reconnecting…")
        for i in range(5):
            post(f"during {i}")
        web_server.cutter.unblock()
        ready(ada)
        post("after 1")
        expect(message(ada, "after 1")).to_have_count(1)
        texts = ada.locator(".message[data-id] .content").all_inner_texts()
        assert texts == [*old, "before 1", *(f"during {i}" for i in range(5)), "after 1"]
        # The session is forgotten (as after the resume window): a new IDENTIFY and a reload
        # of what came since, still without loss or duplicates.
        ada.evaluate("relay.gateway.sessionId = 'gone'")
        web_server.cutter.block()
        web_server.cutter.cut()
        expect(ada.locator("#connection")).to_have_text("Reconnecting…")
        post("during 5")
        web_server.cutter.unblock()
        ready(ada)
        expect(message(ada, "during 5")).to_have_count(1)
        texts = ada.locator(".message[data-id] .content").all_inner_texts()
        assert texts == [
            *old,
            "before 1",
            *(f"during {i}" for i in range(5)),
            "after 1",
            "during 5",
        ]

        # A rich embed (docs/embeds.md) is shown as text, its title a link that opens apart.
        build = {"title": "Build passed", "url": "https://ci.example.org/1", "color": 2276147}
        fields = [{"name": "branch", "value": "main", "inline": True}]
        body = {"content": "", "embeds": [{**build, "description": "All green", "fields": fields}]}
        url = f"/channels/{channel_id}/messages"
        rest.post(url, json=body, headers=auth).raise_for_status()
        title = ada.locator(".embed .embed-title a")
        expect(title).to_have_text("Build passed")
        expect(title).to_have_attribute("href", "https://ci.example.org/1")
        expect(title).to_have_attribute("rel", "noopener noreferrer nofollow")
        expect(ada.locator(".embed .embed-field")).to_have_text("branchmain")
    assert PAGE_ERRORS == []
