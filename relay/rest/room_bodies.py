"""Request and response bodies of the app-room API (`/v1/api/rooms`, `/v1/api/summary`).

Requests forbid unknown fields. `max_clients` has its upper bound in the settings
(`room_max_clients`) and `metadata` its size (`room_metadata_bytes`), so both are checked by
the routes after decoding.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from relay.rest.bodies import Request

MaxClients = Annotated[int, Meta(ge=1)]
Protocol = Literal["host", "peer"]


class CreateRoom(Request, frozen=True):
    max_clients: MaxClients
    protocol: Protocol
    public: bool = False
    metadata: dict[str, Any] | None = None  # a JSON object; null or absent: {}


class UpdateRoom(Request, frozen=True):
    max_clients: MaxClients | UnsetType = UNSET
    public: bool | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET  # replaces the whole object


class Room(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    secret: str | UnsetType = UNSET  # only for the room's creator
    max_clients: int
    current_clients: int
    status: str  # empty | open | full | closing
    protocol: str
    host_id: int | None
    public: bool
    metadata: msgspec.Raw
    creator_id: str
    created_at: str


class ProtocolCounts(msgspec.Struct, frozen=True, kw_only=True):
    number_of_rooms: int
    current_clients: int
    committed_clients: int


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    number_of_rooms: int
    max_clients: int  # the server-wide client capacity (room_capacity)
    current_clients: int
    committed_clients: int  # the sum of the rooms' max_clients
    protocols: dict[str, ProtocolCounts]
