"""Request decoding, JSON responses and the error shape shared by every route.

Bodies are decoded straight from bytes into msgspec Structs (no dict detour); msgspec's
validation errors become 400s with the offending field named in `fields`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import unquote

import msgspec
from msgspec import Meta
from quart import Response, g, request

from relay.chat.args import field_error, id_field
from relay.errors import BadRequest, Forbidden, RelayError

if TYPE_CHECKING:
    from relay.accounts import Principal
    from relay.runtime import Runtime

T = TypeVar("T")
PAGE = 50  # ?limit= of a members or bans page when not given
MAX_PAGE = 100
_PATH = re.compile(r" - at `\$\.?([^`]*)`")
_NAMED = re.compile(r"(?:unknown|missing required) field `([^`]*)`")
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_encoder = msgspec.json.Encoder()


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    code: Annotated[str, Meta(description="stable, snake_case: what went wrong")]
    message: Annotated[str, Meta(description="for people; may change")]
    fields: Annotated[
        dict[str, str],
        Meta(description="the offending field, parameter or header, and why; or `permission`"),
    ] = msgspec.field(default_factory=dict)


class Error(msgspec.Struct, frozen=True, kw_only=True):
    """Every error response of the REST API has this shape."""

    error: ErrorDetail


AfterId = Annotated[
    str,
    Meta(
        pattern=r"^(0|[1-9][0-9]{0,18})$",
        description="list what comes after this id (0: from the start)",
    ),
]
QueryId = Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,18}$")]
Limit = Annotated[int, Meta(ge=1, le=MAX_PAGE, description="how many, at most")]


class PageQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Pages go by id: for the next page, give the last id of this one as after."""

    after: AfterId = "0"
    limit: Limit = PAGE


async def body(kind: type[T]) -> T:
    """Decode the request body as `kind`. Quart enforces MAX_CONTENT_LENGTH while reading, so an
    oversize body is refused (413) before it is read whole."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    raw = await request.get_data(cache=False)
    if not raw:
        raise BadRequest("a JSON request body is required", code="missing_body")
    try:
        return decoder.decode(raw)  # type: ignore[no-any-return]
    except msgspec.ValidationError as e:
        raise invalid(str(e)) from None
    except (
        msgspec.DecodeError,
        UnicodeDecodeError,  # msgspec raises it for bad UTF-8
        RecursionError,  # and this for JSON nested too deeply
    ) as e:
        raise BadRequest(f"the body is not valid JSON: {e}", code="malformed_json") from None


def invalid(message: str) -> BadRequest:
    """A 400 naming the field msgspec rejected: "Expected `int`, got `str` - at `$.age`"."""
    match = _PATH.search(message)
    field, reason = (match.group(1), message[: match.start()]) if match else ("", message)
    named = _NAMED.search(reason)  # "Object contains unknown field `admin`" is at `$`
    if named is not None:
        field = f"{field}.{named.group(1)}" if field else named.group(1)
    return field_error(field or "$", reason)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status=status, content_type="application/json")


def no_content() -> Response:
    return Response(b"", status=204)


def error_response(error: RelayError) -> Response:
    detail = ErrorDetail(code=error.code, message=error.message, fields=error.fields)
    response = json_response(Error(error=detail), error.status)
    response.headers.update(error.headers)
    return response


def principal(rt: Runtime) -> Principal:
    """The caller, from the request's bearer token; noted for the request's log line."""
    who = rt.accounts.authenticate(request.headers.get("Authorization"))
    g.user_id = who.user_id
    return who


AUDIT_REASON_HEADER = "X-Audit-Log-Reason"
MAX_AUDIT_REASON = 512


def audit_reason() -> str | None:
    """The reason a client gives for a change, for the audit log: the `X-Audit-Log-Reason`
    header, URL-encoded (headers are Latin-1), at most 512 characters once decoded."""
    raw = request.headers.get(AUDIT_REASON_HEADER)
    if raw is None or not raw.strip():
        return None
    reason = unquote(raw).strip()  # undecodable bytes become U+FFFD
    if len(reason) > MAX_AUDIT_REASON or any(ord(c) < 0x20 or ord(c) == 0x7F for c in reason):
        why = f"at most {MAX_AUDIT_REASON} characters, no control characters"
        raise BadRequest(
            f"{AUDIT_REASON_HEADER}: {why}", code="invalid_field", fields={AUDIT_REASON_HEADER: why}
        )
    return reason


def client_ip() -> str:
    """The client's address, the key of every per-IP limit: the TCP peer's, or behind a trusted
    proxy the one its X-Forwarded-For names (the app sets `remote_addr` so before any route)."""
    return request.remote_addr or "unknown"


async def optional_body(kind: type[T]) -> T:
    """A body whose fields are all optional may be left out altogether."""
    if not await request.get_data(cache=True):
        return kind()
    return await body(kind)


def page_args() -> tuple[int, int]:
    """`?after=ID&limit=N`: after defaults to the start (0 is accepted too), limit to 50."""
    after_text = request.args.get("after")
    after = 0
    if after_text is not None and after_text != "0":
        after = id_field(after_text, "after")
    limit_text = request.args.get("limit")
    limit = PAGE
    if limit_text is not None:
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 3):
            raise field_error("limit", f"must be an integer from 1 to {MAX_PAGE}")
        limit = int(limit_text)
        if not 1 <= limit <= MAX_PAGE:
            raise field_error("limit", f"must be an integer from 1 to {MAX_PAGE}")
    return after, limit


def no_bots(who: Principal) -> Principal:
    """Refuse a bot a route that is for people's accounts only (passwords, keys, logins)."""
    if who.bot:
        raise Forbidden("bots cannot use this route", code="bots_not_allowed")
    return who


def no_bot_header() -> None:
    """Refuse a login or refresh sent with `Authorization: Bot ...`: bots never log in."""
    scheme = (request.headers.get("Authorization") or "").partition(" ")[0]
    if scheme.lower() == "bot":
        raise Forbidden("bots cannot log in; they use their token", code="bots_not_allowed")
