"""schemathesis over every operation of the OpenAPI document, against the real server.

Each operation gets a fresh world made over HTTP (an owner and a member, a server with its
channels, a message with a reaction, a role, an invite, an app room), so that most generated
requests name things that exist and reach the chat layer, not just a 404 for a random id. The
examples are drawn from a fixed seed (`derandomize`), so a run is repeatable; set
RELAY_FUZZ_EXAMPLES for a longer, different search.

Checked for every response: no 5xx, and a status, content type, headers and body that the
document allows (so an error code the document does not list for that operation fails too);
and that data the document calls invalid is refused.
"""

from __future__ import annotations

import base64
import itertools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from nacl.signing import SigningKey
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from relay.crypto import KEY_LOGIN_PREFIX

if TYPE_CHECKING:
    from schemathesis import Case

    from tests.rest.conftest import SharedServer

API = "/v1/api"
EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "6"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
_serial = itertools.count(1)


@dataclass
class World:
    token: str
    path: dict[str, str]  # a real value for each path parameter name


def person(http: httpx.Client, name: str) -> tuple[str, str, SigningKey]:
    """Register and log in with a fresh key: (user id, access token, key)."""
    key = SigningKey.generate()
    username = f"{name}_{next(_serial)}"
    public = base64.b64encode(bytes(key.verify_key)).decode()
    user = call(http, "POST", "/auth/register", None, username=username, public_key=public)
    challenge = call(http, "POST", "/auth/challenge", None, username=username)["challenge"]
    signature = key.sign(KEY_LOGIN_PREFIX + base64.b64decode(challenge)).signature
    login = call(
        http,
        "POST",
        "/auth/login/key",
        None,
        username=username,
        challenge=challenge,
        signature=base64.b64encode(signature).decode(),
    )
    return user["id"], login["access_token"], key


def call(http: httpx.Client, method: str, path: str, token: str | None, **body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = http.request(method, API + path, json=body or None, headers=headers)
    assert response.is_success, (method, path, response.status_code, response.text)
    return response.json() if response.content else None


def make_world(http: httpx.Client) -> World:
    _owner_id, owner, _ = person(http, "owner")
    member_id, member, _ = person(http, "member")
    server = call(http, "POST", "/servers", owner, name="Fuzz")
    server_id = server["id"]
    text = next(c["id"] for c in server["channels"] if c["type"] == "text")
    invite = call(http, "POST", f"/servers/{server_id}/invites", owner)
    call(http, "POST", f"/invites/{invite['code']}", member)
    message = call(http, "POST", f"/channels/{text}/messages", member, content="hi @everyone")
    call(
        http, "PUT", f"/channels/{text}/messages/{message['id']}/reactions/%F0%9F%91%8D/@me", owner
    )
    role = call(http, "POST", f"/servers/{server_id}/roles", owner, name="fuzzed")
    room = call(http, "POST", "/rooms", owner, max_clients=4, protocol="host")
    sessions = call(http, "GET", "/auth/sessions", member)
    app = call(http, "POST", "/applications", owner, name="Fuzzbot")
    webhook = call(http, "POST", f"/channels/{text}/webhooks", owner, name="Fuzzhook")
    return World(
        token=owner,
        path={
            "server_id": server_id,
            "channel_id": text,
            "message_id": message["id"],
            "user_id": member_id,
            "role_id": role["id"],
            "target_id": role["id"],
            "session_id": sessions[0]["id"],  # the member's: revoking it spares the owner
            "room_id": room["id"],
            "code": invite["code"],
            "emoji": "👍",
            "app_id": app["id"],
            "webhook_id": webhook["id"],
            "token": webhook["token"],
        },
    )


def test_every_operation_keeps_to_the_document(shared_server: SharedServer) -> None:
    with (
        httpx.Client(base_url=shared_server.url, timeout=10) as http,
        requests.Session() as session,
    ):
        document = http.get(f"{API}/openapi.json").json()
        schema = schemathesis.openapi.from_dict(document)
        failures: list[str] = []
        operations = 0
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            operations += 1
            world = make_world(http)
            for mode, drawn, examples in runs(operation):
                failure = run_operation(
                    operation, mode, drawn, examples, world, shared_server.url, session
                )
                if failure is not None:
                    failures.append(f"{operation.label} ({mode.value}, drawn {drawn}): {failure}")
        assert operations == sum(len(methods) for methods in document["paths"].values())
        assert not failures, f"{len(failures)} failed:\n\n" + "\n\n".join(failures)


def runs(operation: Any) -> list[tuple[GenerationMode, frozenset[str], int]]:
    """An operation's runs (mode, path parameters drawn rather than naming what exists,
    examples), in an order that leaves the world standing for the next: negative data (which
    is refused, so changes nothing), then positive data with each path parameter drawn in turn
    (an unknown id where the others exist), then positive data naming what exists (which may
    delete it)."""
    names = [p.name for p in operation.path_parameters]
    return [
        (GenerationMode.NEGATIVE, frozenset(), EXAMPLES),
        *((GenerationMode.POSITIVE, frozenset({name}), max(1, EXAMPLES // 3)) for name in names),
        (GenerationMode.POSITIVE, frozenset(), EXAMPLES),
    ]


def run_operation(
    operation: Any,
    mode: GenerationMode,
    drawn: frozenset[str],
    examples: int,
    world: World,
    base_url: str,
    session: requests.Session,
) -> str | None:
    """None if every example passed, else what failed."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize="RELAY_FUZZ_EXAMPLES" not in os.environ,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Case[Any]) -> None:
        meta = case.meta
        negative_path = meta is not None and meta.is_negative_at(ParameterLocation.PATH)
        negative_headers = meta is not None and meta.is_negative_at(ParameterLocation.HEADER)
        if not negative_path:
            for name in case.path_parameters or {}:
                if name not in drawn:
                    case.path_parameters[name] = world.path[name]
        auth = {} if negative_headers else {"Authorization": f"Bearer {world.token}"}
        case.call_and_validate(base_url=base_url, session=session, headers=auth, checks=CHECKS)

    try:
        check()
    except Unsatisfiable:  # nothing to negate in an operation without inputs
        assert mode is GenerationMode.NEGATIVE, operation.label
    except (Failure, FailureGroup) as e:  # failed checks, with the request that failed them
        return str(e)
    return None


pytestmark = pytest.mark.filterwarnings("default")  # schemathesis' own are not our failures
