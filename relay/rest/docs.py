"""The API's own description: `GET /v1/api/openapi.json` (relay.rest.openapi) and the reference
page `GET /v1/api/docs` (relay.rest.reference), both built from the app's routes on first use
and kept, since the routes do not change while the app runs."""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Blueprint, Response, current_app

from relay import __version__
from relay.rest.openapi import document
from relay.rest.reference import CSP, render


def docs_blueprint() -> Blueprint:
    bp = Blueprint("apidocs", __name__, url_prefix="/v1/api")
    # The document leaves out its own routes, and the Prometheus page (text, docs/metrics.md).
    own = {f"{bp.name}.openapi_json", f"{bp.name}.reference", "metrics.scrape"}
    built: dict[str, bytes] = {}

    def the_document() -> dict[str, Any]:
        app = current_app
        pages = {e for e in app.view_functions if e.startswith("webclient.")}  # HTML, not API
        rules = app.url_map.iter_rules()
        return document(rules, app.view_functions, version=__version__, skip=own | pages)

    @bp.get("/openapi.json")
    async def openapi_json() -> Response:
        if "json" not in built:
            built["json"] = msgspec.json.encode(the_document())
        return Response(built["json"], content_type="application/json")

    @bp.get("/docs")
    async def reference() -> Response:
        if "html" not in built:
            built["html"] = render(the_document()).encode()
        response = Response(built["html"], content_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return bp
