"""Chat events: each is documented with its intents, and each survives msgpack as a broker
between processes would carry it."""

from __future__ import annotations

import contextlib
import itertools
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.chat import events
from relay.chat.fanout import Change
from relay.protocol.gateway import ALWAYS_INTENT, Intent

ROOT = Path(__file__).resolve().parents[2]
EVENT_CLASSES: list[type[events.ChatEvent]] = list(typing.get_args(events.Event))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def values_of(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a payload type as the API makes them: ints that fit 64 bits, short lists."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        hints = typing.get_type_hints(tp)
        fields = {name: values_of(hints[name]) for name in tp.__struct_fields__}
        return st.builds(tp, **fields)
    origin = typing.get_origin(tp)
    if origin is list:
        return st.lists(values_of(typing.get_args(tp)[0]), max_size=2)
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return st.one_of([values_of(arg) for arg in typing.get_args(tp)])
    simple: dict[Any, st.SearchStrategy[Any]] = {
        int: st.integers(-(2**63), 2**63 - 1),
        str: st.text(max_size=12),
        bool: st.booleans(),
        type(None): st.none(),
        msgspec.UnsetType: st.just(msgspec.UNSET),
        Any: JSON,
    }
    return simple[tp]


def _documented_intents() -> tuple[dict[str, int], dict[str, int]]:
    """The events table of docs/gateway.md: event name -> intent bits, outside DMs and in them."""
    docs = (ROOT / "docs" / "gateway.md").read_text(encoding="utf-8")
    after = docs.split("\n## Events\n", 1)[1].lstrip("\n").splitlines()
    table = "\n".join(itertools.takewhile(lambda line: line.startswith("|"), after))
    names = {i.name: int(i) for i in Intent} | {"always": ALWAYS_INTENT}
    servers: dict[str, int] = {}
    dms: dict[str, int] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        events, column = cells[0], cells[-1]
        here, _, there = column.partition(" (")
        bits = sum(names[n] for n in here.split(" or "))
        dm_bits = names[there.split(": ")[1].rstrip(")")] if there else bits
        for event in events.split(" / "):
            servers[event], dms[event] = bits, dm_bits
    return servers, dms


def test_every_event_is_documented_with_its_intents() -> None:
    servers, dms = _documented_intents()
    names = {str(cls.__struct_config__.tag): cls for cls in EVENT_CLASSES}
    assert set(servers) == set(names)
    for name, cls in names.items():
        assert cls.intent == servers[name], name
        assert (cls.dm_intent or cls.intent) == dms[name], name


@pytest.mark.parametrize("kind", EVENT_CLASSES, ids=lambda c: str(c.__struct_config__.tag))
def test_each_event_round_trips_through_msgpack(kind: type[events.ChatEvent]) -> None:
    @given(values_of(kind))
    @settings(max_examples=30)
    def check(event: events.ChatEvent) -> None:
        data = events.encode(event)
        back = events.decode(data)
        assert back == event
        assert type(back) is kind
        assert msgspec.msgpack.decode(data)["t"] == event.t

    check()


@given(st.one_of([values_of(kind) for kind in typing.get_args(Change)]))
def test_changes_round_trip_through_msgpack(change: Change) -> None:
    data = msgspec.msgpack.encode(change)
    assert msgspec.msgpack.decode(data, type=Change) == change


@given(st.binary(max_size=200))
def test_decoding_garbage_raises_a_msgspec_error(data: bytes) -> None:
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        events.decode(data)
