"""Thread and group DM routes under /v1/api/channels: starting threads, listing a channel's
active and archived threads, thread members, and a group DM's recipients. Each decodes, calls
relay.chat.threads or relay.chat.group_dms and encodes. Changing and deleting a thread or a
group DM (leaving it) are the channel routes' (relay.rest.servers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType
from quart import Blueprint, Response

from relay.chat import commands, group_dms, objects, threads
from relay.rest.apidoc import doc
from relay.rest.http import Limit, QueryId, body, json_response, no_content, principal
from relay.rest.messages import query_id, query_limit

if TYPE_CHECKING:
    from relay.runtime import Runtime

THREAD_ERRORS = (
    "unknown_channel",
    "not_a_text_channel",
    "missing_permission",
    "timed_out",
    "too_many_threads",
)


class ArchivedQuery(msgspec.Struct, frozen=True, kw_only=True):
    before: Annotated[QueryId, Meta(description="threads before this id")] | UnsetType = UNSET
    limit: Limit = 50


def threads_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("threads", __name__, url_prefix="/v1/api/channels")

    @bp.post("/<channel_id>/threads")
    @doc(
        "Start a thread in a text channel (CREATE_THREADS)",
        body=commands.CreateThread,
        response=objects.Channel,
        status=201,
        errors=THREAD_ERRORS,
    )
    async def start_thread(channel_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.CreateThread)
        return json_response(await threads.start(rt.chat, who.user_id, channel_id, data), 201)

    @bp.post("/<channel_id>/messages/<message_id>/threads")
    @doc(
        "Start a thread from a message (CREATE_THREADS, READ_MESSAGE_HISTORY)",
        body=commands.CreateThread,
        response=objects.Channel,
        status=201,
        errors=(*THREAD_ERRORS, "unknown_message", "thread_exists"),
    )
    async def start_thread_from(channel_id: str, message_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.CreateThread)
        started = await threads.start(rt.chat, who.user_id, channel_id, data, message_id)
        return json_response(started, 201)

    @bp.get("/<channel_id>/threads/active")
    @doc(
        "The channel's active threads, newest first",
        response=list[objects.Channel],
        errors=("unknown_channel", "not_a_text_channel"),
    )
    async def active_threads(channel_id: str) -> Response:
        who = principal(rt)
        found = await threads.listing(
            rt.chat,
            who.user_id,
            channel_id,
            archived=False,
            limit=rt.settings.max_threads_per_channel,
        )
        return json_response(found)

    @bp.get("/<channel_id>/threads/archived")
    @doc(
        "The channel's archived threads, newest first (READ_MESSAGE_HISTORY)",
        response=list[objects.Channel],
        query=ArchivedQuery,
        errors=("unknown_channel", "not_a_text_channel", "missing_permission"),
    )
    async def archived_threads(channel_id: str) -> Response:
        who = principal(rt)
        found = await threads.listing(
            rt.chat,
            who.user_id,
            channel_id,
            archived=True,
            before=query_id("before"),
            limit=query_limit(),
        )
        return json_response(found)

    @bp.get("/<channel_id>/thread-members")
    @doc("A thread's members", response=list[objects.ThreadMember], errors=("unknown_channel",))
    async def thread_members(channel_id: str) -> Response:
        who = principal(rt)
        return json_response(await threads.members(rt.chat, who.user_id, channel_id))

    @bp.put("/<channel_id>/thread-members/@me")
    @doc("Join a thread", status=204, errors=("unknown_channel",))
    async def join_thread(channel_id: str) -> Response:
        who = principal(rt)
        await threads.add_member(rt.chat, who.user_id, channel_id, "@me")
        return no_content()

    @bp.delete("/<channel_id>/thread-members/@me")
    @doc("Leave a thread", status=204, errors=("unknown_channel",))
    async def leave_thread(channel_id: str) -> Response:
        who = principal(rt)
        await threads.remove_member(rt.chat, who.user_id, channel_id, "@me")
        return no_content()

    @bp.put("/<channel_id>/thread-members/<user_id>")
    @doc(
        "Add someone who can see the thread (one who may post in it, or MANAGE_THREADS)",
        status=204,
        errors=(
            "unknown_channel",
            "unknown_user",
            "unknown_member",
            "missing_permission",
            "timed_out",
            "thread_locked",
        ),
    )
    async def add_thread_member(channel_id: str, user_id: str) -> Response:
        who = principal(rt)
        await threads.add_member(rt.chat, who.user_id, channel_id, user_id)
        return no_content()

    @bp.delete("/<channel_id>/thread-members/<user_id>")
    @doc(
        "Remove someone from a thread (MANAGE_THREADS, or its starter while it is unlocked)",
        status=204,
        errors=("unknown_channel", "unknown_user", "missing_permission"),
    )
    async def remove_thread_member(channel_id: str, user_id: str) -> Response:
        who = principal(rt)
        await threads.remove_member(rt.chat, who.user_id, channel_id, user_id)
        return no_content()

    # -- group DMs -----------------------------------------------------------------------------

    @bp.put("/<channel_id>/recipients/<user_id>")
    @doc(
        "Add someone who shares a server with the caller to a group DM (its owner)",
        status=204,
        errors=(
            "unknown_channel",
            "unknown_user",
            "not_a_group_dm",
            "not_group_owner",
            "no_shared_server",
            "too_many_recipients",
        ),
    )
    async def add_recipient(channel_id: str, user_id: str) -> Response:
        who = principal(rt)
        await group_dms.add_recipient(rt.chat, who.user_id, channel_id, user_id)
        return no_content()

    @bp.delete("/<channel_id>/recipients/<user_id>")
    @doc(
        "Remove someone from a group DM (its owner; to leave, delete the channel)",
        status=204,
        errors=(
            "unknown_channel",
            "unknown_user",
            "not_a_group_dm",
            "not_group_owner",
            "unknown_recipient",
            "invalid_field",
        ),
    )
    async def remove_recipient(channel_id: str, user_id: str) -> Response:
        who = principal(rt)
        await group_dms.remove_recipient(rt.chat, who.user_id, channel_id, user_id)
        return no_content()

    return bp
