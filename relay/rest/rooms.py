"""App-room routes: /v1/api/rooms and /v1/api/summary. Each decodes, calls relay.chat.rooms
with the room manager (`rt.rooms`) and encodes.

Reads need no token: the public listing, a public room by id, and the summary. Changes need an
account token; PATCH and DELETE only the room's creator. A private room is visible by id to its
creator only (anyone else gets 404), and the secret is shown to the creator only. Rooms live in
the room manager, not in the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from relay.chat import commands, objects
from relay.chat import rooms as chat_rooms
from relay.chat.args import field_error, snowflake
from relay.errors import NotFound
from relay.rest.apidoc import doc
from relay.rest.http import PageQuery, body, json_response, no_content, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime

PAGE = 50
MAX_PAGE = 100


def _page_args() -> tuple[int, int]:
    """`?after=ID&limit=N`: after defaults to the start (0), limit to 50 (1-100)."""
    after = 0
    after_text = request.args.get("after")
    if after_text is not None and after_text != "0":
        after = snowflake_arg(after_text, "after")
    limit = PAGE
    limit_text = request.args.get("limit")
    if limit_text is not None:
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 3):
            raise field_error("limit", f"must be an integer from 1 to {MAX_PAGE}")
        limit = int(limit_text)
        if not 1 <= limit <= MAX_PAGE:
            raise field_error("limit", f"must be an integer from 1 to {MAX_PAGE}")
    return after, limit


def snowflake_arg(text: str, name: str) -> int:
    try:
        return snowflake(text)
    except NotFound:
        raise field_error(name, "must be a room id") from None


def rooms_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("rooms", __name__, url_prefix="/v1/api")

    def viewer() -> int | None:
        """The caller's user id if the request carries a token (a bad token is still a 401)."""
        if request.headers.get("Authorization") is None:
            return None
        return principal(rt).user_id

    async def redirect(room_id: str) -> Response | None:
        """Cluster mode: a room that lives on another node is found there (307, docs/cluster.md
        #app-rooms); None: answer here."""
        place = await chat_rooms.elsewhere(rt.rooms, room_id)
        if place is None:
            return None
        query = request.query_string.decode()
        location = place.http + request.path + (f"?{query}" if query else "")
        return Response("", status=307, headers={"Location": location})

    @bp.post("/rooms")
    @doc(
        "Create an app room",
        body=commands.CreateRoom,
        response=objects.Room,
        status=201,
        errors=("too_many_rooms", "capacity_exceeded", "rooms_unavailable"),
    )
    async def create_room() -> Response:
        who = principal(rt)
        data = await body(commands.CreateRoom)
        return json_response(await chat_rooms.create_room(rt.rooms, who.user_id, data), 201)

    @bp.get("/rooms")
    @doc("A page of the public rooms, by id", response=list[objects.Room], query=PageQuery)
    async def list_rooms() -> Response:
        after, limit = _page_args()
        return json_response(await chat_rooms.public_rooms(rt.rooms, after, limit))

    @bp.get("/rooms/<room_id>")
    @doc(
        "A room: a public one, or a private one of the caller's (the secret: the creator's only)",
        response=objects.Room,
        errors=("unknown_room",),
        auth="optional",
    )
    async def get_room(room_id: str) -> Response:
        if moved := await redirect(room_id):
            return moved
        return json_response(chat_rooms.get_room(rt.rooms, viewer(), room_id))

    @bp.patch("/rooms/<room_id>")
    @doc(
        "Change a room (its creator only)",
        body=commands.UpdateRoom,
        response=objects.Room,
        errors=("unknown_room", "not_creator", "capacity_exceeded", "room_busy"),
    )
    async def update_room(room_id: str) -> Response:
        if moved := await redirect(room_id):
            return moved
        who = principal(rt)
        data = await body(commands.UpdateRoom)
        return json_response(await chat_rooms.update_room(rt.rooms, who.user_id, room_id, data))

    @bp.delete("/rooms/<room_id>")
    @doc(
        "Close a room (its creator only)",
        errors=("unknown_room", "not_creator", "room_busy"),
    )
    async def delete_room(room_id: str) -> Response:
        if moved := await redirect(room_id):
            return moved
        who = principal(rt)
        await chat_rooms.delete_room(rt.rooms, who.user_id, room_id)
        return no_content()

    @bp.get("/summary")
    @doc("All rooms in numbers", response=objects.Summary)
    async def summary() -> Response:
        return json_response(await chat_rooms.cluster_summary(rt.rooms))

    return bp
