"""GitHub delivery summaries (relay.chat.github), without a server: any body gives a summary
or a 400, never another exception, and a summary always fits in a message."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.chat import github
from relay.chat.commands import MAX_CONTENT_CHARS
from relay.errors import BadRequest

EVENTS = st.sampled_from([*github.EVENTS, "ping", "star", ""])
# JSON text cannot hold lone surrogates: GitHub never sends them, and encoding them fails.
NAME = st.characters(codec="utf-8", exclude_characters="\n`")
TEXT = st.characters(codec="utf-8")
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(event=EVENTS, body=st.binary(max_size=200) | JSON.map(msgspec.json.encode))
def test_any_body_is_summarised_or_refused(event: str, body: bytes) -> None:
    code: str | None = None
    try:
        text = github.summary(event, body)
    except BadRequest as e:
        code = e.code
    else:
        assert text is None or 0 < len(text) <= MAX_CONTENT_CHARS
    assert code in {None, "malformed_json", "invalid_field"}


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(st.text(TEXT, max_size=300), max_size=30),
    repo=st.text(NAME, min_size=1, max_size=500),
    branch=st.text(NAME, max_size=500),
)
def test_push_summaries_fit_and_count_commits(messages: list[str], repo: str, branch: str) -> None:
    body = {
        "ref": f"refs/heads/{branch}",
        "repository": {"full_name": repo},
        "commits": [{"id": f"{n:040x}", "message": m} for n, m in enumerate(messages)],
    }
    text = github.summary("push", msgspec.json.encode(body))
    assert text is not None
    assert len(text) <= MAX_CONTENT_CHARS
    if messages and len(text) < MAX_CONTENT_CHARS:
        noun = "commit" if len(messages) == 1 else "commits"
        assert f"pushed {len(messages)} {noun} to" in text
        listed = min(len(messages), github.MAX_COMMITS)
        assert text.count("\n`") == listed
