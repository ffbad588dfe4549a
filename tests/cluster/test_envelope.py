"""The broker's wire envelope round-trips every kind of publication and refuses anything else."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.chat.events import PresenceUpdateEvent, TypingStartEvent
from relay.chat.fanout import (
    LoginRevoked,
    MemberJoined,
    MemberLeft,
    PermissionsChanged,
    RecipientsChanged,
    ServerDeleted,
)
from relay.chat.objects import Presence, TypingStart
from relay.cluster import envelope
from relay.cluster.broker import frame, unframe
from relay.cluster.envelope import (
    ChangeCast,
    ChannelCast,
    OnlineCast,
    PresenceCast,
    ServerCast,
    UserCast,
)
from relay.storage.audience import ChannelAudience

ids = st.integers(min_value=1, max_value=(1 << 63) - 1)
texts = st.text(max_size=40)
nodes = st.text(min_size=1, max_size=64)
events = st.one_of(
    st.builds(
        PresenceUpdateEvent,
        d=st.builds(
            Presence,
            user_id=ids.map(str),
            status=st.sampled_from(["online", "idle", "dnd", "offline"]),
            activity=st.none() | texts,
        ),
    ),
    st.builds(
        TypingStartEvent,
        d=st.builds(
            TypingStart,
            channel_id=ids.map(str),
            user_id=ids.map(str),
            timestamp=texts,
        ),
    ),
)
changes = st.one_of(
    st.builds(MemberJoined, ids, ids),
    st.builds(MemberLeft, ids, ids),
    st.builds(PermissionsChanged, ids),
    st.builds(ServerDeleted, ids),
    st.builds(LoginRevoked, ids),
    st.builds(RecipientsChanged, ids, st.lists(ids, max_size=10)),
)
audiences = st.builds(ChannelAudience, ids, st.none() | ids, st.lists(ids, max_size=10))
envelopes = st.one_of(
    st.builds(ServerCast, nodes, ids, events),
    st.builds(UserCast, nodes, ids, events, st.booleans()),
    st.builds(ChannelCast, nodes, audiences, events, st.none() | ids),
    st.builds(ChangeCast, nodes, changes),
    st.builds(PresenceCast, nodes, ids, texts, st.none() | texts, st.lists(ids, max_size=20)),
    st.builds(OnlineCast, nodes, ids, st.lists(ids, max_size=50)),
)


@settings(max_examples=150)
@given(envelopes)
def test_every_envelope_round_trips(cast: envelope.Envelope) -> None:
    assert envelope.decode(envelope.encode(cast)) == cast


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_garbage_is_refused_with_a_decode_error(data: bytes) -> None:
    # Anything else (an IndexError, a crash) would escape the suppress and fail the test.
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        envelope.decode(data)


def test_an_unknown_kind_or_a_wrong_field_is_refused() -> None:
    good = envelope.encode(
        ServerCast(
            "n", 1, PresenceUpdateEvent(d=Presence(user_id="1", status="online", activity=None))
        )
    )
    raw = msgspec.msgpack.decode(good)
    with pytest.raises(msgspec.ValidationError):
        envelope.decode(msgspec.msgpack.encode(["zz", *raw[1:]]))
    with pytest.raises(msgspec.ValidationError):
        envelope.decode(msgspec.msgpack.encode([raw[0], raw[1], "not an id", raw[3]]))


node_ids = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=1,
    max_size=64,
)


@settings(max_examples=100)
@given(node_ids, st.binary(max_size=100))
def test_a_framed_publication_names_its_node(node_id: str, payload: bytes) -> None:
    # A node drops its own publications by their header, before decoding them.
    node, back = unframe(frame(node_id, payload))
    assert (node.decode(), back) == (node_id, payload)
    assert frame(node_id, payload).startswith(node_id.encode() + b"|")


def test_a_publication_without_a_header_is_refused() -> None:
    with pytest.raises(ValueError, match="header"):
        unframe(b"no header here")
