"""Request bodies: whatever bytes a client sends, decoding yields a valid Struct or a 400 whose
`fields` name what was wrong, never another exception (which would be a 500).

The properties go through the real `relay.rest.http.body()` inside a bare Quart request context,
so they cover exactly the exception handling the routes rely on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from quart_trio import QuartTrio

from relay.chat import commands
from relay.errors import BadRequest
from relay.rest import bodies, http

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy


REQUESTS: list[type[commands.Request]] = [
    bodies.Register,
    bodies.Login,
    bodies.ChallengeRequest,
    bodies.KeyLogin,
    bodies.Refresh,
    commands.UpdateMe,
    commands.AddKey,
]
ALL_FIELDS = sorted({name for kind in REQUESTS for name in kind.__struct_fields__})

app = QuartTrio(__name__)


async def decode(kind: type[commands.Request], raw: bytes) -> commands.Request | BadRequest:
    """Run the real `body()` on `raw`; a BadRequest is returned, anything else propagates."""
    async with app.test_request_context("/", method="POST", data=raw):
        try:
            return await http.body(kind)
        except BadRequest as e:
            return e


def check_outcome(kind: type[commands.Request], raw: bytes, outcome: object) -> None:
    if isinstance(outcome, BadRequest):
        assert outcome.status == 400
        assert outcome.message
        if outcome.code == "invalid_field":
            assert outcome.fields, outcome.message
            assert all(isinstance(k, str) and k for k in outcome.fields)
            assert all(isinstance(v, str) and v for v in outcome.fields.values())
        elif outcome.code == "malformed_json":
            assert outcome.fields == {}
        else:
            assert outcome.code == "missing_body"
            assert raw == b""
    else:
        assert type(outcome) is kind
        # A decoded body re-encodes to JSON that decodes to the same Struct.
        assert msgspec.json.decode(msgspec.json.encode(outcome), type=kind) == outcome


JSON_SCALARS: SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300)
)
JSON_VALUES: SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Objects that look like request bodies: the real field names (plus a stranger) with any values.
FIELD_VALUES: SearchStrategy[Any] = (
    JSON_VALUES
    | st.text(min_size=0, max_size=300)
    | st.from_regex(r"[A-Za-z0-9_.]{0,40}", fullmatch=True)
)
BODY_LIKE: SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.sampled_from([*ALL_FIELDS, "admin", "id"]), FIELD_VALUES, max_size=5
)
kinds = st.sampled_from(REQUESTS)


@given(kinds, st.binary(max_size=400))
async def test_arbitrary_bytes(kind: type[commands.Request], raw: bytes) -> None:
    check_outcome(kind, raw, await decode(kind, raw))


@given(kinds, JSON_VALUES)
async def test_arbitrary_json(kind: type[commands.Request], value: Any) -> None:
    raw = json.dumps(value).encode()
    check_outcome(kind, raw, await decode(kind, raw))


@given(kinds, BODY_LIKE)
async def test_body_like_objects(kind: type[commands.Request], value: dict[str, Any]) -> None:
    raw = json.dumps(value).encode()
    outcome = await decode(kind, raw)
    check_outcome(kind, raw, outcome)
    if isinstance(outcome, BadRequest):
        # Well-formed JSON can only fail validation, and the field named is one the client sent
        # or one the Struct has.
        assert outcome.code == "invalid_field"
        assert set(outcome.fields) <= {"$", *value, *kind.__struct_fields__}


@given(kinds, st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=60))
async def test_invalid_utf8_inside_json(kind: type[commands.Request], junk: bytes, at: int) -> None:
    """msgspec raises UnicodeDecodeError (not DecodeError) for bad UTF-8 inside a string."""
    text = json.dumps({"username": "x" * at})
    raw = text[:-2].encode() + b"\xff" + junk + b'"}'
    check_outcome(kind, raw, await decode(kind, raw))


async def test_the_error_codes() -> None:
    empty = await decode(bodies.Login, b"")
    assert isinstance(empty, BadRequest)
    assert empty.code == "missing_body"
    for raw in [
        b"{",
        b"\xff",
        b'{"username": "a\xff"}',
        b"nul",
        b'{"username": "ab", "password": "x"}x',
    ]:
        outcome = await decode(bodies.Login, raw)
        assert isinstance(outcome, BadRequest)
        assert outcome.code == "malformed_json", raw


# -- the messages `invalid()` turns into fields -------------------------------------------------


def validation_error(kind: type[commands.Request], value: Any) -> BadRequest:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(json.dumps(value).encode(), type=kind)
    error = http.invalid(str(info.value))
    assert error.status == 400
    assert error.code == "invalid_field"
    return error


@pytest.mark.parametrize(
    ("kind", "value", "field", "reason"),
    [
        (bodies.Register, {"username": "a"}, "username", "Expected `str` of length >= 2"),
        (bodies.Register, {"username": "a" * 33}, "username", "Expected `str` of length <= 32"),
        (bodies.Register, {"username": "a-b"}, "username", "Expected `str` matching regex"),
        (bodies.Register, {"username": 12}, "username", "Expected `str`, got `int`"),
        (bodies.Register, {}, "username", "Object missing required field `username`"),
        (bodies.Register, {"username": "ab", "password": "1234567"}, "password", "length >= 8"),
        (bodies.Register, {"username": "ab", "password": "x" * 257}, "password", "length <= 256"),
        (bodies.Register, {"username": "ab", "display_name": "a\nb"}, "display_name", "regex"),
        (bodies.Register, {"username": "ab", "display_name": ""}, "display_name", "length >= 1"),
        (bodies.Register, {"username": "ab", "admin": True}, "admin", "unknown field `admin`"),
        (bodies.Register, ["ab"], "$", "Expected `object`, got `array`"),
        (bodies.Register, "ab", "$", "Expected `object`, got `str`"),
        (bodies.Login, {"username": "ab"}, "password", "missing required field `password`"),
        (bodies.Login, {"username": "", "password": "x"}, "username", "length >= 1"),
        (bodies.KeyLogin, {"username": "a", "challenge": "", "signature": "s"}, "challenge", ">="),
        (
            bodies.KeyLogin,
            {"username": "a", "challenge": "c", "signature": "s" * 129},
            "signature",
            "<=",
        ),
        (bodies.Refresh, {"refresh_token": None}, "refresh_token", "got `null`"),
        (commands.UpdateMe, {"password": None}, "password", "got `null`"),
        (commands.UpdateMe, {"display_name": 5}, "display_name", "got `int`"),
        (commands.AddKey, {"public_key": "k", "extra": 1}, "extra", "unknown field `extra`"),
    ],
)
def test_invalid_names_the_field(
    kind: type[commands.Request], value: Any, field: str, reason: str
) -> None:
    error = validation_error(kind, value)
    assert list(error.fields) == [field]
    assert reason in error.fields[field]
    assert error.message.startswith(f"{field}: ")


def test_invalid_with_unparseable_message() -> None:
    error = http.invalid("something odd")
    assert error.fields == {"$": "something odd"}
    assert error.code == "invalid_field"


def test_invalid_nested_path() -> None:
    error = http.invalid("Expected `int`, got `str` - at `$.keys[0].id`")
    assert error.fields == {"keys[0].id": "Expected `int`, got `str`"}
    error = http.invalid("Object contains unknown field `x` - at `$.user`")
    assert error.fields == {"user.x": "Object contains unknown field `x`"}


# -- valid bodies ---------------------------------------------------------------------------------

USERNAMES = st.from_regex(r"[A-Za-z0-9_.]{2,32}", fullmatch=True)
PASSWORDS = st.text(min_size=8, max_size=256)
DISPLAY_NAMES = st.from_regex(r"[^\x00-\x1f\x7f]{1,64}", fullmatch=True)
BASE64ISH = st.text(min_size=1, max_size=128)

REGISTERS = st.builds(
    bodies.Register,
    username=USERNAMES,
    password=st.none() | PASSWORDS,
    public_key=st.none() | BASE64ISH,
    display_name=st.none() | DISPLAY_NAMES,
)


@given(REGISTERS)
async def test_register_round_trip(register: bodies.Register) -> None:
    raw = msgspec.json.encode(register)
    assert msgspec.json.decode(raw, type=bodies.Register) == register
    assert await decode(bodies.Register, raw) == register


@given(
    st.builds(
        commands.UpdateMe,
        display_name=st.just(msgspec.UNSET) | st.none() | DISPLAY_NAMES,
        password=st.just(msgspec.UNSET) | PASSWORDS,
        current_password=st.just(msgspec.UNSET) | st.text(min_size=1, max_size=256),
    )
)
async def test_update_me_round_trip(update: commands.UpdateMe) -> None:
    raw = msgspec.json.encode(update)
    assert await decode(commands.UpdateMe, raw) == update


async def test_update_me_tells_null_from_absent() -> None:
    cleared = await decode(commands.UpdateMe, b'{"display_name": null}')
    assert cleared == commands.UpdateMe(display_name=None)
    untouched = await decode(commands.UpdateMe, b"{}")
    assert isinstance(untouched, commands.UpdateMe)
    assert untouched.display_name is msgspec.UNSET
    assert untouched.password is msgspec.UNSET


async def test_lengths_count_characters_not_bytes() -> None:
    register = await decode(
        bodies.Register, json.dumps({"username": "ab", "password": "é" * 8}).encode()
    )
    assert isinstance(register, bodies.Register)
    assert register.password == "é" * 8
    too_long = await decode(
        bodies.Register, json.dumps({"username": "ab", "password": "é" * 257}).encode()
    )
    assert isinstance(too_long, BadRequest)
    assert list(too_long.fields) == ["password"]
