"""The OpenAPI 3.1 document of the REST API, generated from the routes themselves.

`document(rules, views)` walks the app's URL rules and each view's `@doc` record
(relay.rest.apidoc) and builds the document: path parameters from the rule, the request body,
success responses and query parameters from the route's own msgspec types (their JSON Schema is
msgspec's, `schema_components`, so it is the schema the route decodes with), bearer auth and the
audit-reason header from what the view calls, and one error response per status with the codes
it can carry. It is pure: no I/O, and the same app gives the same document.

Error handling: a route the document cannot describe truthfully (no `@doc`, a body it decodes
but does not declare, an unknown error code, an undescribed path parameter) is a programming
error; `document` raises `DocError` naming every such route, so the test that builds the
document fails until the route is described.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from relay.rest.apidoc import ERRORS, Doc, ErrorSpec, doc_of
from relay.rest.http import AUDIT_REASON_HEADER, Error

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping

    from werkzeug.routing import Rule

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{name}"
METHODS = ("get", "put", "post", "patch", "delete")  # HEAD and OPTIONS are automatic
ID: Mapping[str, Any] = {"type": "string", "pattern": r"^[1-9][0-9]{0,18}$"}
PATH_PARAMS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "server_id": ("the server's id", ID),
    "channel_id": ("the channel's id", ID),
    "message_id": ("the message's id", ID),
    "user_id": ("the user's id", ID),
    "role_id": ("the role's id (the server's id for @everyone)", ID),
    "target_id": ("the role's id, or the member's user id", ID),
    "session_id": ("the login session's id", ID),
    "room_id": ("the room's id", ID),
    "app_id": ("the application's id", ID),
    "webhook_id": ("the webhook's id", ID),
    "token": (
        "the webhook's token",
        {"type": "string", "minLength": 1, "maxLength": 256, "pattern": r"^[A-Za-z0-9_-]+$"},
    ),
    "code": ("the invite's code", {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,32}$"}),
    "emoji": (
        "one emoji, URL-encoded",
        {"type": "string", "minLength": 1, "maxLength": 32, "examples": ["👍"]},
    ),
}
_ARGUMENT = re.compile(r"<(?:([^<>:]+):)?([^<>]+)>")
_AUTH_ERRORS = (
    "missing_token",
    "invalid_token",
    "token_expired",
    "session_revoked",
    "invalid_bot_token",
)
_RATE_HEADERS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "Retry-After": ("seconds to wait", {"type": "integer", "minimum": 1}),
    "X-RateLimit-Limit": ("the refusing limit's size", {"type": "integer"}),
    "X-RateLimit-Remaining": ("always 0 in a refusal", {"type": "integer"}),
    "X-RateLimit-Reset-After": ("seconds until a request is taken", {"type": "number"}),
}


class DocError(Exception):
    """Routes that the document cannot describe; the message lists every one."""


def document(
    rules: Iterable[Rule],
    views: Mapping[str, Callable[..., Any]],
    *,
    title: str = "Relay",
    version: str = "0",
    skip: Collection[str] = (),
) -> dict[str, Any]:
    """The OpenAPI document of these URL rules (`app.url_map.iter_rules()`) and their views
    (`app.view_functions`); endpoints in `skip` are left out (the document's own routes).

    Raises:
        DocError: some route has no `@doc` or one that does not match what it does.
    """
    problems: list[str] = []
    operations: list[tuple[str, str, str, Callable[..., Any], Doc]] = []
    for rule in rules:
        if rule.endpoint in skip or getattr(rule, "websocket", False):
            continue
        view = views[rule.endpoint]
        found = doc_of(view)
        if found is None:
            problems.append(f"{rule.rule} ({rule.endpoint}): no @doc")
            continue
        for method in METHODS:
            if method.upper() in (rule.methods or ()):
                operations.append(
                    (_path_of(rule.rule, problems), method, rule.endpoint, view, found)
                )

    types = _types_of(d for *_, d in operations)
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(types, refs, strict=True))
    # Query Structs become parameters, not schemas.
    names = {d.query.__name__ for *_, d in operations if d.query is not None}
    queries = {name: components.pop(name) for name in names}

    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    for path, method, endpoint, view, d in operations:
        name = view.__name__
        if name in seen_ids:
            problems.append(f"{endpoint}: operationId {name} is also {seen_ids[name]}'s")
        seen_ids[name] = endpoint
        tag = endpoint.partition(".")[0]
        tags.setdefault(tag, _first_line(sys.modules[view.__module__].__doc__))
        operation = _operation(path, endpoint, view, d, schema_of, queries, problems)
        paths.setdefault(path, {})[method] = {"tags": [tag], **operation}
    if problems:
        raise DocError("routes the OpenAPI document cannot describe:\n  " + "\n  ".join(problems))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "The REST API of Relay. Errors share one shape, `Error`; ids are "
            "strings; times are ISO 8601 UTC.",
        },
        "tags": [{"name": name, "description": text} for name, text in tags.items()],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "an access token from POST /v1/api/auth/login; a bot sends "
                    "`Authorization: Bot <token>` instead (docs/bots.md)",
                }
            },
        },
    }


def _path_of(rule: str, problems: list[str]) -> str:
    def braces(match: re.Match[str]) -> str:
        if match.group(1) not in (None, "default", "string"):
            problems.append(f"{rule}: converter {match.group(1)} is not described")
        return "{" + match.group(2) + "}"

    return _ARGUMENT.sub(braces, rule)


def _types_of(docs: Iterable[Doc]) -> list[Any]:
    """Every type a schema is needed for, once each, in first-use order."""
    found: list[Any] = [Error]
    for d in docs:
        for kind in (d.body, d.response, d.query):
            if kind is not None and kind not in found:
                found.append(kind)
    return found


def _calls(view: Callable[..., Any], name: str) -> bool:
    """Whether the view's own code names `name` (a module function it calls)."""
    return name in view.__code__.co_names


def _operation(
    path: str,
    endpoint: str,
    view: Callable[..., Any],
    d: Doc,
    schema_of: Mapping[Any, Any],
    queries: Mapping[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    where = f"{path} ({endpoint})"
    operation: dict[str, Any] = {"operationId": view.__name__, "summary": d.summary}
    description = inspect.getdoc(view)
    if description:
        operation["description"] = description

    parameters: list[dict[str, Any]] = []
    for name in re.findall(r"\{([^}]+)\}", path):
        if name not in PATH_PARAMS:
            problems.append(f"{where}: path parameter {name} is not in PATH_PARAMS")
            continue
        text, schema = PATH_PARAMS[name]
        text = d.path.get(name, text)
        parameters.append(
            {"name": name, "in": "path", "required": True, "description": text, "schema": schema}
        )
    if d.query is not None:
        query = queries[d.query.__name__]
        parameters.extend(_query_parameters(query))
        if query.get("description"):
            operation["description"] = "\n\n".join(
                text for text in (operation.get("description"), query["description"]) if text
            )
    audited = _calls(view, "audit_reason")
    if audited:
        parameters.append(
            {
                "name": AUDIT_REASON_HEADER,
                "in": "header",
                "required": False,
                "description": "why, for the server's audit log: URL-encoded, at most 512 "
                "characters once decoded, no control characters",
                "schema": {"type": "string", "pattern": r"^[^\x00-\x1f\x7f]*$"},
            }
        )
    if parameters:
        operation["parameters"] = parameters

    optional_body = _calls(view, "optional_body")
    decodes = optional_body or _calls(view, "body")
    if decodes and d.body is None:
        problems.append(f"{where}: decodes a body but @doc has no body=")
    if d.body is not None and not decodes:
        problems.append(f"{where}: @doc has body= but the route decodes none")
    if d.body is not None:
        operation["requestBody"] = {
            "required": not optional_body,
            "content": {"application/json": {"schema": schema_of[d.body]}},
        }

    auth = d.auth or ("bearer" if _calls(view, "principal") else "none")
    if auth == "none" and _calls(view, "principal"):
        problems.append(f"{where}: @doc says auth='none' but the route calls principal")
    if auth == "bearer":
        operation["security"] = [{"bearer": []}]
    elif auth == "optional":
        operation["security"] = [{}, {"bearer": []}]
    else:
        operation["security"] = []

    errors: list[ErrorSpec] = list(d.errors)
    if d.body is not None:
        errors += ["malformed_json", "invalid_field", "payload_too_large", "request_timeout"]
        if not optional_body:
            errors.append("missing_body")
    if d.query is not None or audited:
        errors.append("invalid_field")
    if auth == "bearer":
        errors += _AUTH_ERRORS
    elif auth == "optional":
        errors += [c for c in _AUTH_ERRORS if c != "missing_token"]
    errors += ["rate_limited", "too_many_connections"]  # of every request

    responses: dict[str, Any] = {}
    for status, when in sorted(d.responses.items()):
        responses[str(status)] = _success(status, when, d.response, schema_of)
    for status, codes in sorted(_by_status(errors, where, problems).items()):
        error = _error_response(status, codes, schema_of[Error])
        success = responses.get(str(status))
        if success is not None:  # /readyz's 503: its own body, or an error's
            error["description"] = f"{success['description']}; or an error:\n{error['description']}"
            error["content"]["application/json"]["schema"] = {
                "anyOf": [
                    success["content"]["application/json"]["schema"],
                    error["content"]["application/json"]["schema"],
                ]
            }
        responses[str(status)] = error
    operation["responses"] = responses
    return operation


def _query_parameters(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", "")
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "description": description,
                "schema": prop,
            }
        )
    return parameters


def _success(status: int, when: str, kind: Any, schema_of: Mapping[Any, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": when or _REASONS.get(status, "success")}
    if status != 204 and kind is not None:
        response["content"] = {"application/json": {"schema": schema_of[kind]}}
    return response


_REASONS = {200: "OK", 201: "created", 204: "done, no content"}


def _by_status(
    errors: Iterable[ErrorSpec], where: str, problems: list[str]
) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for error in errors:
        status, code = error if isinstance(error, tuple) else (None, error)
        known = ERRORS.get(code)
        if known is None:
            problems.append(f"{where}: error code {code} is not in relay.rest.apidoc.ERRORS")
            continue
        if status is None:
            status = known.statuses[0]
        elif status not in known.statuses:
            problems.append(f"{where}: {code} is never {status}")
            continue
        codes = grouped.setdefault(status, [])
        if code not in codes:
            codes.append(code)
    return grouped


def _error_response(status: int, codes: list[str], error_ref: Any) -> dict[str, Any]:
    lines = "\n".join(f"- `{code}`: {ERRORS[code].meaning}" for code in codes)
    response: dict[str, Any] = {
        "description": lines,
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [
                        error_ref,
                        {
                            "type": "object",
                            "properties": {
                                "error": {
                                    "type": "object",
                                    "properties": {"code": {"enum": codes}},
                                }
                            },
                        },
                    ]
                }
            }
        },
    }
    if status == 429:
        response["headers"] = {
            name: {"description": text, "required": True, "schema": schema}
            for name, (text, schema) in _RATE_HEADERS.items()
        }
    return response


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n\n")[0].replace("\n", " ")
