"""A local Web Push service for tests: https on 127.0.0.1 (a trustme certificate), one path per
subscription. Each request's VAPID JWT is checked (ES256 signature with the key in `k`, which
must be the server's, aud, exp, sub) and its payload decrypted with the subscription's own
private key and auth secret, made here as a browser would (cryptography, P-256)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import http_ece  # type: ignore[import-untyped]
import jwt
import trio
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relay.webpush import b64url, unb64url
from tests.netfetch.origin import Origin, response, serve_origin

if TYPE_CHECKING:
    from pathlib import Path

    from tests.netfetch.origin import Request


@dataclass
class Received:
    at: float  # trio time
    payload: dict[str, Any]
    headers: dict[str, str]


@dataclass
class UserAgent:
    """One browser subscription: its keys, what it received, and the statuses it answers
    with (the last one repeats)."""

    path: str
    statuses: list[tuple[int, dict[str, str]]] = field(default_factory=lambda: [(201, {})])
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))
    received: list[Received] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def keys(self) -> dict[str, str]:
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"p256dh": b64url(point), "auth": b64url(self.auth)}


class PushService:
    def __init__(self, tmp_path: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = tmp_path / "push-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.origin = Origin({})
        self.vapid_key = ""  # the server's public key (base64url), set by the test
        self.agents: dict[str, UserAgent] = {}
        self.changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        await nursery.start(serve_origin, self.origin, context)

    def agent(
        self, name: str, statuses: list[tuple[int, dict[str, str]]] | None = None
    ) -> UserAgent:
        agent = UserAgent(f"/push/{name}")
        if statuses is not None:
            agent.statuses = statuses
        self.agents[agent.path] = agent
        self.origin.routes[agent.path] = self._route(agent)
        return agent

    def subscription(self, agent: UserAgent) -> dict[str, Any]:
        return {"endpoint": self.origin.url(agent.path, scheme="https"), "keys": agent.keys()}

    def _route(self, agent: UserAgent) -> Any:
        async def route(request: Request, stream: trio.abc.Stream) -> None:
            agent.attempts.append(trio.current_time())
            status, extra = agent.statuses.pop(0) if len(agent.statuses) > 1 else agent.statuses[0]
            if 200 <= status < 300:
                try:
                    payload = self.check(request, agent)
                except Exception as e:  # a test failure, reported by the test
                    agent.errors.append(repr(e))
                    status = 400
                else:
                    agent.received.append(Received(trio.current_time(), payload, request.headers))
            await stream.send_all(response(status, b"", "text/plain", **extra))
            self.changed.set()
            self.changed = trio.Event()

        return route

    def check(self, request: Request, agent: UserAgent) -> dict[str, Any]:
        """The JWT checked and the payload decrypted, as a push service and a browser would."""
        scheme, _, params = request.headers["authorization"].partition(" ")
        assert scheme == "vapid"
        fields = dict(p.strip().split("=", 1) for p in params.split(","))
        assert fields["k"] == self.vapid_key
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
        claims = jwt.decode(
            fields["t"],
            public,
            algorithms=["ES256"],
            audience=f"https://127.0.0.1:{self.origin.port}",
            options={"require": ["exp", "aud", "sub"]},
        )
        assert claims["sub"].startswith(("mailto:", "https://"))
        assert time.time() < claims["exp"] <= time.time() + 24 * 3600
        assert request.headers["content-encoding"] == "aes128gcm"
        assert int(request.headers["ttl"]) >= 0
        assert request.headers["urgency"] in ("very-low", "low", "normal", "high")
        plain = http_ece.decrypt(
            request.body, private_key=agent.key, auth_secret=agent.auth, version="aes128gcm"
        )
        payload: dict[str, Any] = json.loads(plain)
        return payload

    async def wait_for(self, agent: UserAgent, count: int, timeout_s: float = 5.0) -> None:
        """Until `agent` has received `count` pushes (and answered)."""
        with trio.fail_after(timeout_s):
            while len(agent.received) < count:
                await self.changed.wait()
