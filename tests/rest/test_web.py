"""The web client's serving (relay/rest/web.py): its files at /, /invite/CODE and /web/...,
the Content-Security-Policy on each, and GET /v1/api/gateway. The client itself is tested in
a browser (tests/web)."""

from __future__ import annotations

import glob
import re
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from relay.config import load_settings
from relay.errors import ConfigError
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    import trio

STATIC = files("relay").joinpath("web", "static")


def csp_directives(header: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


async def test_pages_files_and_gateway(nursery: trio.Nursery, tmp_path: Path) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    port = running.ws_url.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=running.url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert '<script type="module" src="/web/js/main.js">' in page.text
        csp = csp_directives(page.headers["content-security-policy"])
        assert csp["default-src"] == ["'none'"]
        assert csp["script-src"] == ["'self'"]  # no inline script, no other origin
        assert csp["connect-src"] == ["'self'", f"ws://127.0.0.1:{port}"]
        assert csp["frame-ancestors"] == ["'none'"]
        assert page.headers["x-content-type-options"] == "nosniff"

        invite = await http.get("/invite/AbC123")
        assert invite.status_code == 200
        assert invite.content == page.content

        script = await http.get("/web/js/main.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert "content-security-policy" in script.headers
        again = await http.get("/web/js/main.js", headers={"If-None-Match": script.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
        assert (await http.get("/web/app.css")).headers["content-type"].startswith("text/css")

        for missing in ("/web/nope.js", "/web/../relay.db", "/web/%2e%2e/app.py", "/web/js"):
            response = await http.get(missing)
            assert response.status_code == 404, missing
            assert response.json()["error"]["code"] == "unknown_route"
        assert (await http.post("/")).status_code == 405

        # The gateway as the browser sees the host: the name it used, the listener's port.
        gateway = await http.get("/v1/api/gateway")
        assert gateway.json() == {"url": f"ws://127.0.0.1:{port}/v1/gateway"}
        named = await http.get("/v1/api/gateway", headers={"Host": "chat.lan:8080"})
        assert named.json() == {"url": f"ws://chat.lan:{port}/v1/gateway"}
        v6 = await http.get("/v1/api/gateway", headers={"Host": "[::1]:8080"})
        assert v6.json() == {"url": f"ws://[::1]:{port}/v1/gateway"}
    await shutdown()


async def test_public_url_names_the_gateway(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, public_url="https://chat.example.com/relay/")
    running, shutdown = await start_server(nursery, settings)
    async with httpx.AsyncClient(base_url=running.url) as http:
        gateway = await http.get("/v1/api/gateway")
        assert gateway.json() == {"url": "wss://chat.example.com/relay/v1/gateway"}
        csp = csp_directives((await http.get("/")).headers["content-security-policy"])
        assert csp["connect-src"] == ["'self'", "wss://chat.example.com"]
    await shutdown()


@pytest.mark.parametrize(
    "value", ["chat.example.com", "ftp://x", "https://", "https://a b", "javascript:alert(1)"]
)
def test_a_bad_public_url_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="public_url"):
        load_settings({"RELAY_PUBLIC_URL": value})


def test_every_module_the_client_imports_is_there() -> None:
    """The client has no build step: a wrong import path would only show in a browser."""
    for path in STATIC.joinpath("js").iterdir():
        if path.is_dir():
            continue
        for target in re.findall(r'from "(\.[^"]+)"', path.read_text()):
            assert STATIC.joinpath("js", target).is_file(), f"{path.name} imports {target}"
    for sub in STATIC.joinpath("js", "ui").iterdir():
        for target in re.findall(r'from "(\.[^"]+)"', sub.read_text()):
            parts = target.split("/")
            base = STATIC.joinpath("js") if parts[0] == ".." else STATIC.joinpath("js", "ui")
            assert base.joinpath(*[p for p in parts if p not in (".", "..")]).is_file(), target


def test_the_package_data_carries_every_file_of_the_client() -> None:
    """`pip install` copies only what pyproject's package-data names (a glob missed js/ui)."""
    root = Path(__file__).parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["relay"]
    package = root / "relay"
    carried = {
        Path(found)
        for pattern in patterns
        for found in glob.glob(str(package / pattern), recursive=True)
        if Path(found).is_file()
    }
    client = {p for p in (package / "web" / "static").rglob("*") if p.is_file()}
    assert len(client) > 10
    assert client - carried == set()
