"""What a web page says about itself, for link previews: OpenGraph, Twitter card, plain HTML
and oEmbed discovery, read with the standard library's HTML parser (tolerant of broken markup,
no regular expressions over HTML); and the links in a message's text.

Pure functions; the preview workers run `parse_page` in a worker thread (up to 1 MiB of HTML).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import msgspec

MAX_LINKS = 5  # links previewed per message
MAX_TITLE_CHARS = 256
MAX_DESCRIPTION_CHARS = 1024
MAX_NAME_CHARS = 256
MAX_URL_CHARS = 2048
# A link in message text: http(s):// and then anything but white space and <>, with closing
# punctuation left out (as in "see https://x.org/a." or "(https://x.org/a)").
_LINK = re.compile(r"<?https?://[^\s<>]+>?", re.IGNORECASE)
_TRAILING = ".,:;!?'\")]}"


def find_links(content: str) -> list[str]:
    """Up to MAX_LINKS distinct links in `content`, first first. A link written in angle
    brackets (`<https://...>`) is not previewed, as in Discord."""
    found: dict[str, None] = {}
    for match in _LINK.finditer(content):
        text = match.group(0)
        if text.startswith("<") and text.endswith(">"):
            continue
        text = text.removeprefix("<").removesuffix(">")
        while text and text[-1] in _TRAILING:
            if text[-1] == ")" and text.count("(") >= text.count(")"):
                break  # a parenthesis that belongs to the URL (Wikipedia's)
            text = text[:-1]
        if len(text) <= MAX_URL_CHARS and _has_host(text):
            found.setdefault(text)
        if len(found) == MAX_LINKS:
            break
    return list(found)


def _has_host(url: str) -> bool:
    try:
        return bool(urlsplit(url).hostname)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        return False


class PageMeta(msgspec.Struct, frozen=True, kw_only=True):
    title: str | None = None
    description: str | None = None
    site_name: str | None = None
    url: str | None = None  # the page's canonical URL, if it gives one (http/https)
    image: str | None = None  # absolute http(s) URL; fetched only through the image seam
    type: str | None = None  # og:type
    color: int | None = None  # theme-color, as 0xRRGGBB
    oembed_url: str | None = None  # <link rel="alternate" type="application/json+oembed">


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title_parts: list[str] = []
        self.in_title = False
        self.oembed: str | None = None
        self.canonical: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v or "" for k, v in attrs}
        if tag == "meta":
            key = (values.get("property") or values.get("name") or "").strip().lower()
            if key and "content" in values:
                self.meta.setdefault(key, values["content"])  # the first of each wins
        elif tag == "title":
            self.in_title = not self.title_parts
        elif tag == "link":
            rel = values.get("rel", "").lower().split()
            kind = values.get("type", "").strip().lower()
            if "alternate" in rel and kind == "application/json+oembed" and self.oembed is None:
                self.oembed = values.get("href")
            elif "canonical" in rel and self.canonical is None:
                self.canonical = values.get("href")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False

    def handle_data(self, data: str) -> None:
        if self.in_title and sum(map(len, self.title_parts)) < 4 * MAX_TITLE_CHARS:
            self.title_parts.append(data)


def parse_page(html: str, base_url: str) -> PageMeta:
    """The preview facts of an HTML page fetched from `base_url` (relative URLs resolved
    against it). Never raises on any text: broken markup gives what could be read."""
    collector = _Collector()
    try:
        collector.feed(html)
        collector.close()
    except (AssertionError, ValueError):  # html.parser's own complaints about hopeless markup
        pass
    meta = collector.meta

    def first(*keys: str) -> str | None:
        for key in keys:
            value = _clean(meta.get(key))
            if value:
                return value
        return None

    def first_url(*keys: str) -> str | None:
        for key in keys:
            value = _absolute(meta.get(key), base_url)
            if value:
                return value
        return None

    title = first("og:title", "twitter:title") or _clean("".join(collector.title_parts))
    return PageMeta(
        title=_cut(title, MAX_TITLE_CHARS),
        description=_cut(
            first("og:description", "twitter:description", "description"), MAX_DESCRIPTION_CHARS
        ),
        site_name=_cut(first("og:site_name", "application-name"), MAX_NAME_CHARS),
        url=first_url("og:url") or _absolute(collector.canonical, base_url),
        image=first_url("og:image:secure_url", "og:image", "og:image:url", "twitter:image"),
        type=_cut(first("og:type"), 64),
        color=_color(first("theme-color")),
        oembed_url=_absolute(collector.oembed, base_url),
    )


class OEmbed(msgspec.Struct, frozen=True, kw_only=True):
    title: str | None = None
    author_name: str | None = None
    author_url: str | None = None
    provider_name: str | None = None
    provider_url: str | None = None
    thumbnail_url: str | None = None
    type: str | None = None


def parse_oembed(body: bytes, base_url: str) -> OEmbed | None:
    """An oEmbed JSON answer's useful strings (wrong types are left out), or None if it is not
    a JSON object."""
    try:
        data: Any = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(data, dict):
        return None

    def text(key: str, limit: int = MAX_NAME_CHARS) -> str | None:
        value = data.get(key)
        return _cut(_clean(value), limit) if isinstance(value, str) else None

    def link(key: str) -> str | None:
        value = data.get(key)
        return _absolute(value, base_url) if isinstance(value, str) else None

    return OEmbed(
        title=text("title", MAX_TITLE_CHARS),
        author_name=text("author_name"),
        author_url=link("author_url"),
        provider_name=text("provider_name"),
        provider_url=link("provider_url"),
        thumbnail_url=link("thumbnail_url"),
        type=text("type", 16),
    )


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    # Control and other unprintable characters, and runs of white space, become one space.
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split()) or None


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def _absolute(href: str | None, base_url: str) -> str | None:
    """`href` resolved against the page, if it is an http(s) URL of a sane length."""
    if not href:
        return None
    try:
        url = urljoin(base_url, href.strip())
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_CHARS:
        return None
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return None
    return url


def _color(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip().lstrip("#")
    if len(text) == 3:
        text = "".join(ch * 2 for ch in text)
    if len(text) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
        return None
    return int(text, 16)
