"""`GET /metrics` on the REST port, for an operator who set `metrics_token`: Prometheus scrapes
it with `Authorization: Bearer <metrics_token>` (its `authorization` scrape setting). Without
the token, or with another one, 401. With no `metrics_token` the route does not exist (the
app registers this blueprint only then); `metrics_port` serves the same page without a token
on its own bind (relay.telemetry).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from relay.errors import Unauthorized
from relay.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from relay.metrics import Metrics


def metrics_blueprint(metrics: Metrics, token: str) -> Blueprint:
    bp = Blueprint("metrics", __name__)
    expected = f"Bearer {token}".encode()

    @bp.get("/metrics")
    async def scrape() -> Response:
        """Every metric in the Prometheus text format; needs the metrics token."""
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: the token is a secret
            error = Unauthorized("this needs the metrics token", code="bad_metrics_token")
            error.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            raise error
        return Response(metrics.exposition(), content_type=CONTENT_TYPE)

    return bp
