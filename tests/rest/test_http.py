"""The REST layer without a server: timestamps, and the routes against the docs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st

from relay.app import create_app
from relay.chat.objects import iso
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    import trio

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(0, 253_402_300_799_999))  # up to the last millisecond of year 9999
def test_iso_is_the_exact_utc_millisecond(ms: int) -> None:
    expected = (EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
    assert iso(ms) == expected.removesuffix("+00:00") + "Z"


def test_iso_examples() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1_795_000_000_123) == "2026-11-18T11:06:40.123Z"
    assert iso(253_402_300_799_999) == "9999-12-31T23:59:59.999Z"  # float division gave .998


def test_the_docs_document_every_route_and_only_those(tmp_path: Path) -> None:
    """Every method and path the app routes is named in the docs (README.md and docs/*.md: the
    API tables of docs/accounts.md, servers.md and the other pages), and every one named there
    is routed (paths there are relative to /v1/api, except the health checks). With a
    metrics_token, so that the one optional route (GET /metrics) is there too."""
    app = create_app(settings_for(tmp_path, metrics_token="x" * 16))
    routed = {
        (method, re.sub(r"<(?:[^:>]+:)?[^>]+>", "{}", rule.rule).removeprefix("/v1/api"))
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    root = Path(__file__).parents[2]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    documented = {
        (method, re.sub(r"\{[^}]+\}", "{}", path.partition("?")[0]).removeprefix("/v1/api"))
        for method, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`", text)
    }
    assert routed - documented == set()
    assert documented - routed == set()


async def test_requests_over_the_per_address_rate_get_429(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path, http_per_ip=5))
    async with running.client() as client:
        statuses = [(await client.request("GET", "/healthz")).status_code for _ in range(5)]
        assert statuses == [200] * 5
        response = await client.request("GET", "/v1/api/users/@me")  # any route counts
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
    await shutdown()
