"""The OpenAPI document and the reference page: every route described, the document valid
OpenAPI 3.1, error codes in step with the code that raises them, and both served as generated.

The generator is pure, so most of these build the app (no server) and call it directly;
the last ones fetch what the real server serves.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from openapi_spec_validator import validate
from quart import Blueprint, Response
from quart_trio import QuartTrio

import relay
from relay import errors
from relay.app import _HTTP_CODES, create_app
from relay.chat import commands, objects
from relay.rest.apidoc import ERRORS, doc
from relay.rest.http import body, principal
from relay.rest.openapi import DocError, document
from relay.rest.reference import CSP, STYLE, render
from relay.server import _BUSY_BODY
from tests.conftest import settings_for

if TYPE_CHECKING:
    from relay.client import RelayClient
    from tests.conftest import RunningServer

OWN = {"apidocs.openapi_json", "apidocs.reference"}  # the document's own routes
METHODS = {"GET", "PUT", "POST", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> QuartTrio:
    return create_app(settings_for(tmp_path_factory.mktemp("openapi")))


@pytest.fixture(scope="module")
def spec(app: QuartTrio) -> dict[str, Any]:
    return document(app.url_map.iter_rules(), app.view_functions, skip=OWN)


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, methods in spec["paths"].items() for m, op in methods.items()]


def test_every_route_of_the_app_is_in_the_document(app: QuartTrio, spec: dict[str, Any]) -> None:
    routes = {
        (re.sub(r"<([^>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in OWN
        for method in (rule.methods or set()) & METHODS
    }
    pages = {
        ("/", "get"),
        ("/invite/{code}", "get"),
        ("/web/{path:name}", "get"),
        ("/sw.js", "get"),
    }
    documented = {(path, method) for path, method, _ in operations(spec)}
    assert documented == routes - pages
    assert routes >= pages
    assert len(routes) > 60
    assert {rule.endpoint for rule in app.url_map.iter_rules()} >= OWN


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    validate(spec)  # raises on an invalid document
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids))


def test_it_is_generated_from_the_routes_types(spec: dict[str, Any]) -> None:
    post = spec["paths"]["/v1/api/channels/{channel_id}/messages"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateMessage"
    }
    statuses = {"200", "201", "400", "401", "403", "404", "408", "413", "429", "503", "507"}
    assert set(post["responses"]) == statuses
    assert post["security"] == [{"bearer": []}]
    schemas = spec["components"]["schemas"]
    # msgspec's own schema of the body type, bounds and all
    _, expected = msgspec.json.schema_components(
        [commands.CreateMessage], ref_template="#/components/schemas/{name}"
    )
    assert schemas["CreateMessage"] == expected["CreateMessage"]
    assert schemas["CreateMessage"]["properties"]["content"]["maxLength"] == 4000
    assert schemas["CreateMessage"]["additionalProperties"] is False
    assert set(schemas["Message"]["properties"]) == set(objects.Message.__struct_fields__)
    # the error codes of a status are an enum the responses are checked against
    not_found = post["responses"]["404"]["content"]["application/json"]["schema"]
    assert not_found["allOf"][0] == {"$ref": "#/components/schemas/Error"}
    assert not_found["allOf"][1]["properties"]["error"]["properties"]["code"] == {
        "enum": ["unknown_channel"]
    }
    assert set(post["responses"]["429"]["headers"]) == {
        "Retry-After",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset-After",
    }


def test_parameters_come_from_rules_queries_and_calls(spec: dict[str, Any]) -> None:
    def parameters(path: str, method: str) -> dict[str, dict[str, Any]]:
        found = spec["paths"][path][method].get("parameters", [])
        return {f"{p['in']}:{p['name']}": p for p in found}

    history = parameters("/v1/api/channels/{channel_id}/messages", "get")
    assert set(history) == {
        "path:channel_id",
        "query:before",
        "query:after",
        "query:around",
        "query:limit",
    }
    assert history["query:limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 50,
    }
    assert not history["query:before"]["required"]
    audit = parameters("/v1/api/servers/{server_id}/audit-log", "get")
    assert "member_kick" in audit["query:action"]["schema"]["enum"]
    deleting = parameters("/v1/api/channels/{channel_id}", "delete")
    assert set(deleting) == {"path:channel_id", "header:X-Audit-Log-Reason"}
    # auth: none, optional, required
    assert spec["paths"]["/v1/api/auth/login"]["post"]["security"] == []
    assert spec["paths"]["/v1/api/rooms/{room_id}"]["get"]["security"] == [{}, {"bearer": []}]
    invite = spec["paths"]["/v1/api/servers/{server_id}/invites"]["post"]
    assert invite["requestBody"]["required"] is False  # optional_body
    assert "400" in invite["responses"]
    assert "missing_body" not in str(invite["responses"]["400"])


def test_a_route_without_its_description_breaks_the_document() -> None:
    bp = Blueprint("t", __name__)

    @bp.get("/described")
    @doc("Described", response=objects.User)
    async def described() -> Response:
        return Response("")

    @bp.get("/bare/<thing_id>")
    async def bare(thing_id: str) -> Response:
        return Response(thing_id)

    @bp.post("/undeclared-body")
    @doc("Decodes a body it does not declare")
    async def undeclared() -> Response:
        principal(None)  # type: ignore[arg-type]
        await body(commands.CreateMessage)
        return Response("")

    @bp.post("/unknown-code/<mystery>")
    @doc(
        "Raises a code nobody knows",
        errors=("no_such_code", (404, "unknown_user"), (418, "banned")),
    )
    async def unknown_code(mystery: str) -> Response:
        return Response(mystery)

    app = QuartTrio("t")
    app.register_blueprint(bp)
    with pytest.raises(DocError) as raised:
        document(app.url_map.iter_rules(), app.view_functions)
    message = str(raised.value)
    assert "/bare/<thing_id> (t.bare): no @doc" in message
    assert "decodes a body but @doc has no body=" in message
    assert "no_such_code is not in relay.rest.apidoc.ERRORS" in message
    assert "banned is never 418" in message
    assert "path parameter mystery is not in PATH_PARAMS" in message
    assert "Described" not in message


# -- the error codes ---------------------------------------------------------------------------

STATUS_OF = {
    cls.__name__: cls.status
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.RelayError)
}


def raised_codes() -> list[tuple[str, int, str]]:
    """(code, status, where) of every error made in relay/ with a literal code: an error class
    called with code="...", snowflake(text, "what") (404 unknown_what), and the access-token
    errors (401)."""
    found = []
    root = Path(relay.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            where = f"{path.relative_to(root.parent)}:{node.lineno}"
            literal = [
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            ]
            if name in STATUS_OF:
                for keyword in node.keywords:
                    value = keyword.value
                    if keyword.arg == "code" and isinstance(value, ast.Constant):
                        found.append((str(value.value), STATUS_OF[name], where))
            elif name == "snowflake" and len(node.args) == 2 and literal:
                found.append((f"unknown_{literal[0]}", 404, where))
            elif name == "TokenError" and literal:
                found.append((literal[0], 401, where))
    return found


def test_every_error_code_the_server_raises_is_in_the_list_with_its_status() -> None:
    raised = raised_codes()
    assert len(raised) > 80
    wrong = [
        f"{where}: {code} ({status})"
        for code, status, where in raised
        if code not in ERRORS or status not in ERRORS[code].statuses
    ]
    assert not wrong, "add these to relay.rest.apidoc.ERRORS:\n" + "\n".join(wrong)
    for status, code in _HTTP_CODES.items():
        assert status in ERRORS[code].statuses


def test_every_listed_error_code_is_raised_somewhere() -> None:
    from relay.accounts import _REFRESH_ERRORS

    busy = json.loads(_BUSY_BODY)["error"]["code"]  # relay.server answers it before the app
    known = {code for code, _, _ in raised_codes()} | set(_HTTP_CODES.values()) | {busy}
    known |= set(_REFRESH_ERRORS) | {cls.code for cls in vars(errors).values() if _is_error(cls)}
    assert set(ERRORS) - known == set()


def _is_error(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, errors.RelayError)


# -- the reference page --------------------------------------------------------------------------


def test_the_reference_page_lists_every_operation_and_schema(spec: dict[str, Any]) -> None:
    page = render(spec)
    for _, _, operation in operations(spec):
        assert f'id="op-{operation["operationId"]}"' in page
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from elsewhere
    assert "unknown_channel" in page
    assert "Bearer token" in page
    # the one inline style is what the CSP's hash allows
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    assert f"<style>{STYLE}</style>" in page
    assert f"'sha256-{digest}'" in CSP


# -- served by the real server ---------------------------------------------------------------------


async def test_the_server_serves_the_document_and_the_page(
    relay_server: RunningServer, client: RelayClient
) -> None:
    served = await client.request("GET", "/v1/api/openapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    app = create_app(relay_server.settings)
    rules, views = app.url_map.iter_rules(), app.view_functions
    expected = document(rules, views, version=relay.__version__, skip=OWN)
    assert served.json() == msgspec.json.decode(msgspec.json.encode(expected))

    page = await client.request("GET", "/v1/api/docs")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.text == render(expected)
    again = await client.request("GET", "/v1/api/docs")  # built once, served again
    assert again.text == page.text
    assert again.headers["content-security-policy"] == CSP


async def test_each_path_takes_exactly_the_documented_methods(client: RelayClient) -> None:
    """What OPTIONS (and so a 405's Allow) says a path takes is what the document lists there.

    A method is excused only where a path with parameters also matches the URL and the
    document says that request is not one it takes (`GET /messages/bulk-delete` reaches
    `GET /messages/{message_id}`, whose id pattern refuses "bulk-delete": 404 unknown_message).
    A rule that also matches a documented path its parameter allows (`/members/<user_id>` with
    "@me") makes the document wrong there, and fails."""
    served = (await client.request("GET", "/v1/api/openapi.json")).json()
    paths = served["paths"]
    for path, methods in paths.items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        documented = {m.upper() for m in methods} | {"OPTIONS"}
        if "GET" in documented:
            documented.add("HEAD")
        response = await client.request("OPTIONS", url)
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert documented <= allowed, path
        for method in allowed - documented - {"HEAD"}:
            assert not any(
                overlaps(url, other, paths[other][method.lower()])
                for other in paths
                if other != path and method.lower() in paths[other]
            ), f"{method} {path} is served, but the document does not list it there"
            assert any(method.lower() in paths[other] for other in paths), (method, path)


def overlaps(url: str, template: str, operation: dict[str, Any]) -> bool:
    """Whether `url` is a request `operation` (at path `template`) takes by its document."""
    parts, pattern = url.split("/"), template.split("/")
    if len(parts) != len(pattern):
        return False
    schemas = {p["name"]: p["schema"] for p in operation.get("parameters", []) if p["in"] == "path"}
    for part, want in zip(parts, pattern, strict=True):
        name = want[1:-1] if want.startswith("{") else None
        if name is None:
            if part != want:
                return False
        elif not re.search(schemas[name].get("pattern", ""), part):
            return False
    return True
