"""Message search: a server's channels, or one channel (a DM), through the full-text index.

The edges hand over the request's parameters as text (`SearchRequest`); they are checked here
(400 invalid_field naming the parameter), the channels the caller may search are worked out by
storage with relay.permissions (VIEW_CHANNEL and READ_MESSAGE_HISTORY after overwrites), and
only those are searched: a hidden message is neither listed nor counted. See docs/search.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

import msgspec

from relay.chat.args import field_error, id_field, snowflake
from relay.chat.messages import readable_channel
from relay.chat.objects import Message, message_out
from relay.errors import NotFound
from relay.storage.fulltext import Query, QueryError, highlights, parse
from relay.storage.search import Has, SearchFilter, Sort

if TYPE_CHECKING:
    from relay.chat.context import Chat

MAX_LIMIT = 25
DEFAULT_LIMIT = 25
MAX_OFFSET = 5000
MAX_IDS = 25  # values of one repeatable id parameter (channel_id, author_id, mentions)
HAS = frozenset(get_args(Has))
SORTS = frozenset(get_args(Sort))


class SearchRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A search's parameters as the client sent them (None: not given)."""

    content: str | None = None
    author_id: list[str] = []
    channel_id: list[str] = []
    mentions: list[str] = []
    has: list[str] = []
    pinned: str | None = None
    before: str | None = None
    after: str | None = None
    sort: str | None = None
    limit: str | None = None
    offset: str | None = None


class Highlight(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    ranges: list[list[int]]  # [start, end] pairs: code point offsets into the content, end excluded


class SearchResults(msgspec.Struct, frozen=True, kw_only=True):
    total_results: int  # every visible match, not only this page
    messages: list[Message]
    highlights: list[Highlight]  # one per message, in the same order


def _ids(values: list[str], field: str) -> list[int]:
    if len(values) > MAX_IDS:
        raise field_error(field, f"at most {MAX_IDS} values")
    return sorted({id_field(value, field) for value in values})


def _number(text: str | None, field: str, low: int, high: int, default: int) -> int:
    if text is None:
        return default
    # Length first: int() of thousands of digits is slow.
    if not (0 < len(text) <= 4 and text.isascii() and text.isdigit()) or not (
        low <= int(text) <= high
    ):
        raise field_error(field, f"must be an integer from {low} to {high}")
    return int(text)


def checked(req: SearchRequest) -> tuple[SearchFilter, list[int]]:
    """The filter a request asks for, and the channel ids it narrows to (empty: all)."""
    query: Query | None = None
    if req.content is not None:
        try:
            query = parse(req.content)
        except QueryError as e:
            raise field_error("content", str(e)) from None
    if len(req.has) > len(HAS) or not set(req.has) <= HAS:
        raise field_error("has", f"each must be one of {', '.join(sorted(HAS))}")
    if req.sort is not None and req.sort not in SORTS:
        raise field_error("sort", f"must be one of {', '.join(sorted(SORTS))}")
    if req.pinned not in (None, "true", "false"):
        raise field_error("pinned", "must be true or false")
    sort = req.sort or ("relevance" if query is not None else "newest")
    wanted = SearchFilter(
        query=query,
        author_ids=_ids(req.author_id, "author_id"),
        mentions=_ids(req.mentions, "mentions"),
        has=sorted(set(req.has)),  # type: ignore[arg-type]  # checked against HAS above
        pinned=None if req.pinned is None else req.pinned == "true",
        before=None if req.before is None else id_field(req.before, "before"),
        after=None if req.after is None else id_field(req.after, "after"),
        sort=sort,  # type: ignore[arg-type]  # checked against SORTS above
        limit=_number(req.limit, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT),
        offset=_number(req.offset, "offset", 0, MAX_OFFSET, 0),
    )
    return wanted, _ids(req.channel_id, "channel_id")


async def search_server(
    chat: Chat, user_id: int, server_id: str, req: SearchRequest
) -> SearchResults:
    """Search the server's channels the user may read (404 unknown_server if not a member);
    `channel_id` narrows to some of them (others given are ignored, as if empty)."""
    sid = snowflake(server_id, "server")
    wanted, narrow = checked(req)
    await _spend(chat, user_id)
    channels = await chat.store.read(chat.q.search.searchable_channels, sid, user_id)
    if channels is None:
        raise NotFound("unknown server", code="unknown_server")
    if narrow:
        wanted_ids = set(narrow)
        channels = [c for c in channels if c in wanted_ids]
    return await _run(chat, user_id, channels, wanted)


async def search_channel(
    chat: Chat, user_id: int, channel_id: str, req: SearchRequest
) -> SearchResults:
    """Search one channel (a DM, or a server channel) whose history the user may read."""
    wanted, _narrow = checked(req)
    await _spend(chat, user_id)
    channel = await readable_channel(chat, user_id, channel_id)
    return await _run(chat, user_id, [channel.id], wanted)


async def _spend(chat: Chat, user_id: int) -> None:
    if (refused := await chat.search_refused(user_id)) is not None:
        raise refused


async def _run(
    chat: Chat, user_id: int, channels: list[int], wanted: SearchFilter
) -> SearchResults:
    page = await chat.store.read(chat.q.search.search, user_id, channels, wanted)
    marks = [
        Highlight(
            message_id=str(row.id),
            ranges=[list(r) for r in highlights(row.content, wanted.query)] if wanted.query else [],
        )
        for row in page.messages
    ]
    return SearchResults(
        total_results=page.total,
        messages=[message_out(row) for row in page.messages],
        highlights=marks,
    )
