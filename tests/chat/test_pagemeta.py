"""The page metadata parser and the link finder: hypothesis over any text and over generated
pages, plus the cases a preview depends on."""

from __future__ import annotations

import json
from html import escape

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.chat.pagemeta import (
    MAX_DESCRIPTION_CHARS,
    MAX_LINKS,
    MAX_TITLE_CHARS,
    find_links,
    parse_oembed,
    parse_page,
)

BASE = "https://site.example/a/page"
# Text in which tag-like pieces are likely, so broken markup is tried often.
markupish = st.text(
    alphabet=st.sampled_from(list("<>/=\"' !-abcdefghmtlpr&#;x\n")) | st.characters(), max_size=400
)
attribute = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)


@settings(max_examples=300)
@given(markupish)
def test_any_text_parses_to_bounded_clean_fields(html: str) -> None:
    meta = parse_page(html, BASE)
    assert meta.title is None or 0 < len(meta.title) <= MAX_TITLE_CHARS
    assert meta.description is None or 0 < len(meta.description) <= MAX_DESCRIPTION_CHARS
    for url in (meta.url, meta.image, meta.oembed_url):
        assert url is None or url.startswith(("http://", "https://"))
    for text in (meta.title, meta.description, meta.site_name):
        assert text is None or (text.isprintable() and text == text.strip())
    assert meta.color is None or 0 <= meta.color <= 0xFFFFFF


@settings(max_examples=150)
@given(attribute, attribute, attribute, st.booleans())
def test_generated_pages_give_back_what_they_say(
    title: str, description: str, junk: str, close: bool
) -> None:
    html = (
        f"<html><head><meta property='og:title' content='{escape(title)}'>"
        f'<meta name="description" content="{escape(description)}">'
        f"<link rel='alternate stylesheet' type='application/json+oembed' href='/o?x=1'>"
        f"</head><body>{escape(junk)}{'</body></html>' if close else '<div><p'}"
    )
    meta = parse_page(html, BASE)
    expected = " ".join("".join(ch if ch.isprintable() else " " for ch in title).split()) or None
    if expected is not None and len(expected) <= MAX_TITLE_CHARS:
        assert meta.title == expected
    assert meta.oembed_url == "https://site.example/o?x=1"


def test_preferences_and_resolution() -> None:
    meta = parse_page(
        "<title>T</title><meta name=twitter:title content=Tw><meta property=og:title content=Og>"
        "<meta name=twitter:image content='img.png'><meta property=og:url content='//cdn.x/p'>"
        "<meta property=og:image content='javascript:alert(1)'>"
        "<meta name=theme-color content=#abc>",
        BASE,
    )
    assert meta.title == "Og"  # OpenGraph before Twitter before <title>
    assert meta.image == "https://site.example/a/img.png"  # javascript: is no image
    assert meta.url == "https://cdn.x/p"
    assert meta.color == 0xAABBCC
    assert parse_page("<title>  only\n the   title </title>", BASE).title == "only the title"
    assert parse_page("<title>" + "x" * 1000, BASE).title == "x" * (MAX_TITLE_CHARS - 1) + "…"


@given(st.text(max_size=300))
def test_oembed_answers_never_raise(text: str) -> None:
    parse_oembed(text.encode(), BASE)
    answer = parse_oembed(json.dumps({"title": text, "author_url": 5}).encode(), BASE)
    assert answer is not None
    assert answer.author_url is None


def test_links_in_text() -> None:
    assert find_links("no links here, http:/x or ftp://x.org") == []
    assert find_links("a https://x.org/a, (https://x.org/w_(b)) https://x.org/a!") == [
        "https://x.org/a",
        "https://x.org/w_(b)",
    ]
    assert find_links("<https://hidden.org/> but https://shown.org/") == ["https://shown.org/"]
    many = " ".join(f"https://x{i}.org/" for i in range(9))
    assert find_links(many) == [f"https://x{i}.org/" for i in range(MAX_LINKS)]


@given(st.text(max_size=500))
def test_found_links_are_http_urls_at_most_five(text: str) -> None:
    links = find_links(text)
    assert len(links) <= MAX_LINKS
    assert len(set(links)) == len(links)
    for link in links:
        assert link.lower().startswith(("http://", "https://"))
        assert not any(ch.isspace() for ch in link)
        assert f"<{link}>" not in text or text.count(link) > text.count(f"<{link}>")
