from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.media import urls

KEY = urls.signing_key(bytes(32))
PATH = "/v1/files/attachments/123/a.png"


def parts(signed: str) -> tuple[str, str, str]:
    path, _, query = signed.partition("?")
    ex, sig = (item.split("=", 1)[1] for item in query.split("&"))
    return path, ex, sig


def test_signed_url_verifies_until_it_expires() -> None:
    path, ex, sig = parts(urls.sign(KEY, PATH, 1_000))
    assert path == PATH
    assert urls.verify(KEY, PATH, ex, sig, now=999.0)
    assert urls.verify(KEY, PATH, ex, sig, now=1_000.0)
    assert not urls.verify(KEY, PATH, ex, sig, now=1_000.5)  # expired
    assert not urls.verify(KEY, PATH, "2000", sig, now=0)  # a later expiry, same signature
    assert not urls.verify(KEY, "/v1/files/attachments/124/a.png", ex, sig, now=0)
    assert not urls.verify(urls.signing_key(bytes([1]) * 32), PATH, ex, sig, now=0)
    assert not urls.verify(KEY, PATH, None, sig, now=0)
    assert not urls.verify(KEY, PATH, ex, None, now=0)


@given(st.text(max_size=30), st.text(max_size=80))
@settings(max_examples=200)
def test_garbage_never_verifies_and_never_raises(ex: str, sig: str) -> None:
    assert not urls.verify(KEY, PATH, ex, sig, now=0)
