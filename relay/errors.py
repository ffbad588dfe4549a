"""The error tree. Routes raise these; the app's error handler turns them into one JSON shape.

Every REST error is `{"error": {"code": "snake_case", "message": "...", "fields": {...}}}` with the
HTTP status of its class (DESIGN §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Mapping

    from relay.ratelimit import Decision

E = TypeVar("E", bound=BaseException)


class ConfigError(Exception):
    """A setting is missing or invalid; start-up stops with this one line."""


class ListenError(Exception):
    """A listener cannot bind its address (a port in use, say); start-up stops with this one
    line, which names the setting."""


def first_of(group: BaseExceptionGroup[E]) -> E:
    """The first exception of a group, however deeply nested (a nursery's group holds the
    groups of the nurseries inside it)."""
    first = group.exceptions[0]
    return first_of(first) if isinstance(first, BaseExceptionGroup) else first


class RelayError(Exception):
    """An error a client caused or may see: an HTTP status, a stable code and a message."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, fields: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.fields = dict(fields or {})
        self.headers: dict[str, str] = {}


class BadRequest(RelayError):
    status = 400
    code = "bad_request"


class Unauthorized(RelayError):
    status = 401
    code = "unauthorized"


class Forbidden(RelayError):
    status = 403
    code = "forbidden"


class NotFound(RelayError):
    status = 404
    code = "not_found"


class Conflict(RelayError):
    status = 409
    code = "conflict"


class Gone(RelayError):
    """410: the thing existed but can no longer be used (an expired or used-up invite)."""

    status = 410
    code = "gone"


class PayloadTooLarge(RelayError):
    status = 413
    code = "payload_too_large"


class RequestTimeout(RelayError):
    status = 408
    code = "request_timeout"


class InsufficientStorage(RelayError):
    status = 507
    code = "insufficient_storage"


class Unprocessable(RelayError):
    status = 422
    code = "unprocessable"


class RateLimited(RelayError):
    """429 with Retry-After and the X-RateLimit-* headers of the bucket that refused.

    `limit_name` names the limit (its setting, e.g. "login_per_ip", or "slowmode"): the label
    of /metrics' relay_rate_limited_total; clients never see it.
    """

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, limit: int, retry_after_s: float, limit_name: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.limit_name = limit_name
        self.headers = {
            "Retry-After": str(max(1, round(retry_after_s + 0.5))),
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": f"{retry_after_s:.3f}",
        }

    @classmethod
    def refusing(cls, message: str, decision: Decision, limit_name: str) -> RateLimited:
        """The error for a limiter's refusal (`RateLimiter.hit`)."""
        return cls(
            message,
            limit=decision.limit,
            retry_after_s=decision.retry_after_s,
            limit_name=limit_name,
        )


class Unavailable(RelayError):
    status = 503
    code = "unavailable"
