"""Search and mentions routes: /v1/api/servers/{id}/messages/search,
/v1/api/channels/{id}/messages/search and the mentions inbox /v1/api/users/@me/mentions.
Each decodes the query string, calls relay.chat and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType
from quart import Blueprint, Response, request

from relay.chat import mentions as chat_mentions
from relay.chat import objects
from relay.chat import search as chat_search
from relay.rest.apidoc import doc
from relay.rest.http import QueryId, json_response, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime

SEARCH_ERRORS = ("invalid_field", "missing_permission", "rate_limited")


class SearchQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Every parameter is optional; the repeatable ones may be given several times."""

    content: (
        Annotated[
            str,
            Meta(
                max_length=512,
                description='words, "quoted phrases", prefix*, -excluded; case and accents'
                " do not matter",
            ),
        ]
        | UnsetType
    ) = UNSET
    author_id: Annotated[list[QueryId], Meta(description="by these authors")] | UnsetType = UNSET
    channel_id: Annotated[list[QueryId], Meta(description="only these channels")] | UnsetType = (
        UNSET
    )
    mentions: Annotated[list[QueryId], Meta(description="mentioning these users")] | UnsetType = (
        UNSET
    )
    has: (
        Annotated[
            list[Literal["link", "file", "image", "embed"]], Meta(description="has each of these")
        ]
        | UnsetType
    ) = UNSET
    pinned: Annotated[bool, Meta(description="pinned (true) or not (false)")] | UnsetType = UNSET
    before: Annotated[QueryId, Meta(description="older than this message id")] | UnsetType = UNSET
    after: Annotated[QueryId, Meta(description="newer than this message id")] | UnsetType = UNSET
    sort: (
        Annotated[
            Literal["relevance", "newest", "oldest"],
            Meta(description="default: relevance with content, else newest"),
        ]
        | UnsetType
    ) = UNSET
    limit: Annotated[int, Meta(ge=1, le=25, description="how many, at most")] = 25
    offset: Annotated[int, Meta(ge=0, le=5000, description="skip this many matches")] = 0


class MentionsQuery(msgspec.Struct, frozen=True, kw_only=True):
    before: Annotated[QueryId, Meta(description="older than this message id")] | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=1, le=100, description="how many, at most")] = 25
    server_id: Annotated[QueryId, Meta(description="only from this server")] | UnsetType = UNSET


def _search_request() -> chat_search.SearchRequest:
    args = request.args
    return chat_search.SearchRequest(
        content=args.get("content"),
        author_id=args.getlist("author_id"),
        channel_id=args.getlist("channel_id"),
        mentions=args.getlist("mentions"),
        has=args.getlist("has"),
        pinned=args.get("pinned"),
        before=args.get("before"),
        after=args.get("after"),
        sort=args.get("sort"),
        limit=args.get("limit"),
        offset=args.get("offset"),
    )


def search_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("search", __name__, url_prefix="/v1/api")

    @bp.get("/servers/<server_id>/messages/search")
    @doc(
        "Search the messages of a server's channels the caller may read",
        response=chat_search.SearchResults,
        query=SearchQuery,
        errors=("unknown_server", *SEARCH_ERRORS),
    )
    async def search_server(server_id: str) -> Response:
        who = principal(rt)
        found = await chat_search.search_server(rt.chat, who.user_id, server_id, _search_request())
        return json_response(found)

    @bp.get("/channels/<channel_id>/messages/search")
    @doc(
        "Search the messages of one channel (a DM, or a server channel)",
        response=chat_search.SearchResults,
        query=SearchQuery,
        errors=("unknown_channel", "not_a_text_channel", *SEARCH_ERRORS),
    )
    async def search_channel(channel_id: str) -> Response:
        who = principal(rt)
        found = await chat_search.search_channel(
            rt.chat, who.user_id, channel_id, _search_request()
        )
        return json_response(found)

    @bp.get("/users/@me/mentions")
    @doc(
        "Messages that mention the caller (directly, by role, or @everyone/@here), newest first",
        response=list[objects.Message],
        query=MentionsQuery,
        errors=("invalid_field",),
    )
    async def my_mentions() -> Response:
        who = principal(rt)
        args = request.args
        found = await chat_mentions.inbox(
            rt.chat, who.user_id, args.get("before"), args.get("limit"), args.get("server_id")
        )
        return json_response(found)

    return bp
