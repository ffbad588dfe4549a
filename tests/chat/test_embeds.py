"""The embed validator: hypothesis over decoded requests (every input is refused with a field
named, or stored within Discord's limits with no image URL left visible), and the preview
cache's bound and expiry."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.chat.embeds import (
    MAX_TOTAL_CHARS,
    EmbedIn,
    EmbedsIn,
    checked_embeds,
    embeds_of,
    pending_images,
)
from relay.chat.previews import PreviewCache
from relay.errors import BadRequest

decoder = msgspec.json.Decoder(EmbedsIn)
# Short arbitrary text, or long text near the limits (cheap to make: one repeated character).
text = st.text(max_size=40) | st.builds(
    lambda n, ch: ch * n,
    st.sampled_from([0, 255, 256, 257, 1024, 1025, 2048, 2049, 4096, 4097]),
    st.sampled_from(["x", "é", "\U0001f600"]),
)
url = st.sampled_from(["https://a.org/x.png", "http://b.org/", "ftp://c.org/", "nope", ""])
field = st.fixed_dictionaries(
    {"name": text, "value": text}, optional={"inline": st.booleans() | st.integers()}
)
embed: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "title": text,
        "description": text,
        "url": url,
        "color": st.integers(-5, 0x1000005),
        "timestamp": st.sampled_from(["2026-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00", "x"]),
        "fields": st.lists(field, max_size=27),
        "author": st.fixed_dictionaries({"name": text}, optional={"icon_url": url}),
        "footer": st.fixed_dictionaries({"text": text}, optional={"icon_url": url}),
        "image": st.fixed_dictionaries({"url": url}),
        "thumbnail": st.fixed_dictionaries({"url": url}),
        "type": st.sampled_from(["rich", "link"]),
        "extra": st.none(),
    },
)


@settings(max_examples=80, deadline=None)
@given(st.lists(embed, max_size=12))
def test_every_request_is_refused_naming_a_field_or_stored_within_limits(
    given_embeds: list[dict[str, Any]],
) -> None:
    refused: Exception | None = None
    try:
        embeds: list[EmbedIn] = decoder.decode(msgspec.json.encode(given_embeds))
        stored = checked_embeds(embeds)
    except (msgspec.ValidationError, BadRequest) as e:
        refused = e
    if isinstance(refused, msgspec.ValidationError):
        assert " - at `$" in str(refused)  # the edge names the field from this
        return
    if isinstance(refused, BadRequest):
        assert refused.code == "invalid_field"
        assert refused.fields
        return
    shown = embeds_of(stored)
    assert len(shown) == len(given_embeds) <= 10
    total = 0
    for out in shown:
        assert out.type == "rich"
        assert out.image is None
        assert out.thumbnail is None
        assert out.author is None or out.author.icon_url is None
        assert out.footer is None or out.footer.icon_url is None
        total += len(out.title or "") + len(out.description or "")
        total += sum(len(f.name) + len(f.value) for f in out.fields)
        total += len(out.footer.text) if out.footer else 0
        total += len(out.author.name) if out.author else 0
    assert total <= MAX_TOTAL_CHARS
    asked = sum(
        ("image" in e)
        + ("thumbnail" in e)
        + ("icon_url" in e.get("author", {}))
        + ("icon_url" in e.get("footer", {}))
        for e in given_embeds
    )
    raw = msgspec.json.decode(stored) if stored else []
    assert sum(len(pending_images(e)) for e in raw) == asked


def test_the_preview_cache_is_bounded_and_expires() -> None:
    cache = PreviewCache(max_entries=2, ttl_s=10)
    cache.put("a", None, now=0)
    cache.put("b", None, now=0)
    assert cache.get("a", now=0.5) == (True, None)  # a is now the most recently used
    cache.put("c", None, now=0.5)
    assert len(cache) == 2
    assert cache.get("b", now=0.5) == (False, None)  # the least recently used went
    assert cache.get("a", now=0.9) == (True, None)
    assert cache.get("a", now=1.1) == (False, None)  # failures live a tenth of the TTL


@pytest.mark.parametrize("bad", ["", "x", '[{"title": 5}]', "{}", "[1]"])
def test_malformed_embeds_are_validation_errors(bad: str) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        decoder.decode(bad)
