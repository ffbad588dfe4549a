"""Liveness and readiness probes."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict
from typing import TYPE_CHECKING, Literal

import msgspec
import trio
from msgspec import UNSET, UnsetType
from quart import Blueprint, Response

from relay.chat.rooms import Counts
from relay.cluster.stats import BrokerHealth
from relay.rest.apidoc import doc
from relay.rest.http import json_response
from relay.storage.sqlite.db import StoreClosed

if TYPE_CHECKING:
    from sqlite_utils import Database

    from relay.runtime import Runtime


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["ok"]


class Readiness(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Only `status` and `checks` while starting."""

    status: Literal["starting", "ready", "unavailable"]
    checks: dict[str, str]  # "database", "actors": "ok" or what is wrong
    actors_running: int | UnsetType = UNSET
    gateway_sessions: int | UnsetType = UNSET
    writes_committed: int | UnsetType = UNSET
    write_batches: int | UnsetType = UNSET
    writes_queued: int | UnsetType = UNSET
    rooms: Counts | UnsetType = UNSET
    byte_relay: dict[str, int] | UnsetType | None = UNSET  # null: the byte relay is off
    broker: BrokerHealth | UnsetType | None = UNSET  # null: no broker (one process)


def _ping(db: Database) -> int:
    return int(db.execute("SELECT 1").fetchone()[0])


def health_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    @doc("Liveness: the process serves HTTP", response=Health)
    async def healthz() -> Response:
        """The process is alive and serving HTTP."""
        return json_response(Health(status="ok"))

    @bp.get("/readyz")
    @doc(
        "Readiness: the database answers and the actors run",
        response=Readiness,
        status={200: "ready", 503: "starting, or a check failed"},
    )
    async def readyz() -> Response:
        """The database answers a read and a write, and the actor registry is running."""
        checks: dict[str, str] = {}
        if not rt.ready:
            return json_response(Readiness(status="starting", checks=checks), 503)
        with trio.move_on_after(2) as scope:
            try:
                await rt.store.read(_ping)
                checks["database"] = "ok"
            except (sqlite3.Error, StoreClosed) as e:
                checks["database"] = f"error: {type(e).__name__}"
        if scope.cancelled_caught:
            checks["database"] = "timeout"
        hub = rt.hub.health()
        checks["actors"] = "ok" if hub.running else "stopped"
        media = rt.chat.media
        if media is not None:
            # Uploads get 507 below the floor; the rest of the server still works, but an
            # operator (or orchestrator) should hear of it here.
            low = await trio.to_thread.run_sync(media.disk_low)
            checks["disk"] = "low: below min_free_disk_bytes, uploads refused" if low else "ok"
        broker = rt.broker_health() if rt.broker_health is not None else None
        if broker is not None:
            # Without its pub/sub connection a node misses other nodes' events: send clients
            # elsewhere until it is back (it resyncs its own sessions meanwhile).
            checks["broker"] = "ok" if broker.connected else "disconnected"
        ok = all(v == "ok" for k, v in checks.items() if k != "disk")  # disk: uploads only
        rooms, _ = rt.rooms.summary()
        return json_response(
            Readiness(
                status="ready" if ok else "unavailable",
                checks=checks,
                actors_running=hub.channel_actors,
                gateway_sessions=hub.sessions,
                writes_committed=rt.store.writes,
                write_batches=rt.store.batches,
                writes_queued=rt.store.queued,
                rooms=rooms,
                byte_relay=asdict(rt.byte_relay.stats) if rt.byte_relay else None,
                broker=broker,
            ),
            200 if ok else 503,
        )

    return bp
