"""Which stored images a message's embeds name: exactly the digests of Relay image URLs in the
text, whatever else is around them."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.chat.imagerefs import embed_image_digests, image_digests
from relay.media.urls import image_path

digests = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=50)
@given(st.lists(digests, max_size=4), st.text(max_size=200))
def test_image_digests_finds_exactly_relay_image_urls(found: list[str], noise: str) -> None:
    embeds = [{"image": {"url": image_path(d)}, "description": noise} for d in found]
    text = json.dumps(embeds, ensure_ascii=False)
    assert image_digests(text) == list(dict.fromkeys(found))


def test_other_urls_are_not_images() -> None:
    digest = "a" * 64
    assert image_digests(f"/v1/files/avatars/1/{digest}.webp https://x.org/{digest}.webp") == []
    assert image_digests(f"/v1/files/images/{digest[:-1]}.webp") == []
    assert image_digests(None) == []


def test_only_image_slots_count() -> None:
    a, b, c = (image_path(x * 64) for x in "abc")
    embeds: list[dict[str, Any]] = [
        {"description": a, "url": a, "thumbnail": {"url": b}},
        {"author": {"name": a, "icon_url": c}, "footer": {"text": a}},
    ]
    assert embed_image_digests(embeds) == ["b" * 64, "c" * 64]
