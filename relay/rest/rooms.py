"""App-room routes: /v1/api/rooms and /v1/api/summary.

Reads need no token: the public listing, a public room by id, and the summary. Changes need an
account token; PATCH and DELETE only the room's creator. A private room is visible by id to its
creator only (anyone else gets 404), and the secret is shown to the creator only. Rooms live in
the room manager (`rt.rooms`), not in the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET
from quart import Blueprint, Response, request

from relay.chat import commands, objects
from relay.chat.args import field_error, snowflake
from relay.chat.objects import iso
from relay.errors import NotFound
from relay.rest.http import body, json_response, no_content, principal

if TYPE_CHECKING:
    from relay.rooms.manager import RoomRecord
    from relay.runtime import Runtime

PAGE = 50
MAX_PAGE = 100


def room_out(record: RoomRecord, viewer: int | None) -> objects.Room:
    return objects.Room(
        id=str(record.id),
        secret=record.secret if viewer == record.creator_id else UNSET,
        max_clients=record.max_clients,
        current_clients=record.current_clients,
        status=record.status,
        protocol=record.protocol,
        host_id=record.host_id,
        public=record.public,
        metadata=msgspec.Raw(record.metadata),
        creator_id=str(record.creator_id),
        created_at=iso(record.created_at),
    )


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
    settings = rt.settings

    def max_clients_ok(value: int) -> int:
        if value > settings.room_max_clients:
            raise field_error("max_clients", f"must be from 1 to {settings.room_max_clients}")
        return value

    def metadata_json(value: dict[str, Any] | None) -> bytes:
        data = msgspec.json.encode(value or {})
        if len(data) > settings.room_metadata_bytes:
            limit = settings.room_metadata_bytes
            raise field_error("metadata", f"must be at most {limit} bytes as JSON")
        return data

    def viewer() -> int | None:
        """The caller's user id if the request carries a token (a bad token is still a 401)."""
        if request.headers.get("Authorization") is None:
            return None
        return principal(rt).user_id

    @bp.post("/rooms")
    async def create_room() -> Response:
        who = principal(rt)
        data = await body(commands.CreateRoom)
        record = await rt.rooms.create(
            who.user_id,
            data.protocol,
            max_clients_ok(data.max_clients),
            data.public,
            metadata_json(data.metadata),
        )
        return json_response(room_out(record, who.user_id), 201)

    @bp.get("/rooms")
    async def list_rooms() -> Response:
        after, limit = _page_args()
        return json_response([room_out(r, None) for r in rt.rooms.public_page(after, limit)])

    @bp.get("/rooms/<room_id>")
    async def get_room(room_id: str) -> Response:
        user_id = viewer()
        record = rt.rooms.get(snowflake(room_id, "room"))
        if not record.public and record.creator_id != user_id:
            raise NotFound("unknown room", code="unknown_room")
        return json_response(room_out(record, user_id))

    @bp.patch("/rooms/<room_id>")
    async def update_room(room_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.UpdateRoom)
        record = await rt.rooms.update(
            snowflake(room_id, "room"),
            who.user_id,
            max_clients=None if data.max_clients is UNSET else max_clients_ok(data.max_clients),
            public=None if data.public is UNSET else data.public,
            metadata=None if data.metadata is UNSET else metadata_json(data.metadata),
        )
        return json_response(room_out(record, who.user_id))

    @bp.delete("/rooms/<room_id>")
    async def delete_room(room_id: str) -> Response:
        who = principal(rt)
        await rt.rooms.delete(snowflake(room_id, "room"), who.user_id)
        return no_content()

    @bp.get("/summary")
    async def summary() -> Response:
        total, per_protocol = rt.rooms.summary()
        return json_response(
            objects.Summary(
                number_of_rooms=total.number_of_rooms,
                max_clients=rt.rooms.capacity,
                current_clients=total.current_clients,
                committed_clients=total.committed_clients,
                protocols={
                    name: objects.ProtocolCounts(
                        number_of_rooms=c.number_of_rooms,
                        current_clients=c.current_clients,
                        committed_clients=c.committed_clients,
                    )
                    for name, c in per_protocol.items()
                },
            )
        )

    return bp
