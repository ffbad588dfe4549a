"""HTTPS through hypercorn's certfile/keyfile, with a throwaway CA (trustme)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import httpx
import pytest
import trustme

from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from pathlib import Path

    import trio


async def test_serves_https_with_configured_certificate(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    settings = settings_for(tmp_path, tls_cert=str(cert_path), tls_key=str(key_path))
    running, shutdown = await start_server(nursery, settings)
    assert running.url.startswith("https://127.0.0.1:")

    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with httpx.AsyncClient(base_url=running.url, verify=context) as client:
        response = await client.get("/healthz")
        assert response.status_code == 200
    async with httpx.AsyncClient(base_url=running.url) as untrusting:
        with pytest.raises(httpx.ConnectError):  # a client without the CA refuses the cert
            await untrusting.get("/healthz")
    await shutdown()
