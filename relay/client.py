"""An async Relay client (Trio; httpx for REST) for tests, scripts and benchmarks.

Typed helpers raise ApiError for any non-2xx answer; `request` returns the raw response, for
callers that want to look at errors themselves.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Self

import httpx

if TYPE_CHECKING:
    from types import TracebackType

    from nacl.signing import SigningKey

KEY_LOGIN_PREFIX = b"relay-login-v1:"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: dict[str, str]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        raise ApiError(
            response.status_code, error["code"], error["message"], error.get("fields", {})
        )
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http_error", response.text[:200], {}) from None


class RelayClient:
    """One user's view of a Relay server. Remembers the tokens of its last login."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.user: dict[str, Any] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self, method: str, path: str, *, json: Any = None, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        """Send a request, with the current access token unless `token` is given ("" for none)."""
        headers = dict(kw.pop("headers", {}))
        bearer = self.access_token if token is None else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        return await self.http.request(method, path, json=json, headers=headers, **kw)

    async def call(self, method: str, path: str, json: Any = None) -> Any:
        response = await self.request(method, path, json=json)
        _raise_for(response)
        return response.json() if response.content else None

    # -- accounts ------------------------------------------------------------------------------

    async def register(
        self,
        username: str,
        password: str | None = None,
        *,
        public_key: bytes | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"username": username}
        if password is not None:
            body["password"] = password
        if public_key is not None:
            body["public_key"] = base64.b64encode(public_key).decode()
        if display_name is not None:
            body["display_name"] = display_name
        result: dict[str, Any] = await self.call("POST", "/v1/api/auth/register", body)
        return result

    def _remember(self, result: dict[str, Any]) -> dict[str, Any]:
        self.access_token = result["access_token"]
        self.refresh_token = result["refresh_token"]
        self.user = result.get("user", self.user)
        return result

    async def login(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        return self._remember(await self.call("POST", "/v1/api/auth/login", body))

    async def challenge(self, username: str) -> bytes:
        result = await self.call("POST", "/v1/api/auth/challenge", {"username": username})
        return base64.b64decode(result["challenge"])

    async def login_with_key(self, username: str, key: SigningKey) -> dict[str, Any]:
        challenge = await self.challenge(username)
        signature = key.sign(KEY_LOGIN_PREFIX + challenge).signature
        body = {
            "username": username,
            "challenge": base64.b64encode(challenge).decode(),
            "signature": base64.b64encode(signature).decode(),
        }
        return self._remember(await self.call("POST", "/v1/api/auth/login/key", body))

    async def refresh(self) -> dict[str, Any]:
        body = {"refresh_token": self.refresh_token}
        return self._remember(await self.call("POST", "/v1/api/auth/refresh", body))

    async def logout(self) -> None:
        await self.call("POST", "/v1/api/auth/logout")
        self.access_token = self.refresh_token = None

    async def me(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/v1/api/users/@me")
        return result
