"""Liveness and readiness probes."""

from __future__ import annotations

import sqlite3
from dataclasses import asdict
from typing import TYPE_CHECKING

import trio
from quart import Blueprint, Response

from relay.rest.http import json_response
from relay.storage.sqlite.db import StoreClosed

if TYPE_CHECKING:
    from sqlite_utils import Database

    from relay.runtime import Runtime


def _ping(db: Database) -> int:
    return int(db.execute("SELECT 1").fetchone()[0])


def health_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    async def healthz() -> Response:
        """The process is alive and serving HTTP."""
        return json_response({"status": "ok"})

    @bp.get("/readyz")
    async def readyz() -> Response:
        """The database answers a read and a write, and the actor registry is running."""
        checks: dict[str, str] = {}
        if not rt.ready:
            return json_response({"status": "starting", "checks": checks}, 503)
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
        ok = all(v == "ok" for v in checks.values())
        rooms, _ = rt.rooms.summary()
        return json_response(
            {
                "status": "ready" if ok else "unavailable",
                "checks": checks,
                "actors_running": hub.channel_actors,
                "gateway_sessions": hub.sessions,
                "writes_committed": rt.store.writes,
                "write_batches": rt.store.batches,
                "writes_queued": rt.store.queued,
                "rooms": asdict(rooms),
                "byte_relay": asdict(rt.byte_relay.stats) if rt.byte_relay else None,
            },
            200 if ok else 503,
        )

    return bp
