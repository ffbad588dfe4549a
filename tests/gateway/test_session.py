"""A session's replay buffer on its own: bounded by count (trimmed in steps, never below
`replay_size`) and by age, and what RESUME gets back from it."""

from __future__ import annotations

from relay.gateway.session import Session
from relay.protocol.gateway import Event
from tests.gateway.test_intents import FrameList


def replayable(session: Session) -> int:
    """How many of the latest events a RESUME can still get."""
    seq = session.seq
    return max(n for n in range(seq + 1) if session.missed_since(seq - n) is not None)


def test_replay_keeps_at_least_its_size_and_at_most_an_eighth_more() -> None:
    session = Session(1, 1, "json", replay_size=16, replay_age_s=60.0)
    sink = FrameList()
    session.attach(sink)
    kept = []
    for i in range(60):
        session.deliver(Event("MESSAGE_CREATE", {"i": i}), 0.0)
        kept.append(replayable(session))
    assert kept[:16] == list(range(1, 17))
    assert min(kept[16:]) == 16
    assert max(kept) == 18  # 16 + 16 // 8, then back to 16
    assert session.missed_since(session.seq - 16) == sink.frames[-16:]


def test_replay_drops_events_older_than_its_age() -> None:
    session = Session(1, 1, "json", replay_size=100, replay_age_s=10.0)
    session.attach(FrameList())
    for t in range(30):
        session.deliver(Event("MESSAGE_CREATE", {"t": t}), float(t))  # seq t + 1
    # At t=29 the events of t <= 18 are over 10 s old: seq 20 (t=19) is the oldest kept.
    assert replayable(session) == 11
    assert session.missed_since(18) is None
