"""Random bytes at the relayd port: the connection ends cleanly, nothing is logged as an error,
nothing stays behind in the hub, and a fresh client is served afterwards."""

from __future__ import annotations

import contextlib
import logging
from functools import partial

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.byterelay import ByteRelay, serve_byte_relay
from relay.protocol import relayd
from tests.byterelay.conftest import RelaydClient

ids = st.sampled_from([b"alice", b"bob", b"x" * 255])
valid = st.one_of(
    st.builds(relayd.encode_login, ids),
    st.builds(relayd.encode_transfer, ids, ids | st.just(b""), st.binary(max_size=300)),
)
# Valid frames cut short or with a byte changed, and plain junk.
damaged = st.builds(
    lambda frame, at, byte: frame[:at] + bytes([byte]) + frame[at + 1 :],
    valid,
    st.integers(0, 20),
    st.integers(0, 255),
)
junk = st.binary(min_size=1, max_size=64)
chunks = st.lists(st.one_of(valid, damaged, junk), min_size=1, max_size=10)


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(max_examples=150, deadline=None)
@given(chunks)
async def test_random_input_never_hurts_the_relay(data: list[bytes]) -> None:
    errors = Errors()
    logger = logging.getLogger("relay.byterelay")
    logger.addHandler(errors)
    relay = ByteRelay(max_payload_bytes=200, idle_s=5)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                addresses = await nursery.start(partial(serve_byte_relay, relay, "127.0.0.1", 0))
                async with await trio.open_tcp_stream(*addresses[0]) as stream:
                    # The server may close before it has read everything: that is fine.
                    with contextlib.suppress(trio.BrokenResourceError):
                        for chunk in data:
                            await stream.send_all(chunk)
                        await stream.send_eof()
                    await RelaydClient(stream).read_to_eof()
                # The server closed that connection, so it has left the hub.
                assert relay.stats.open_connections == 0
                assert relay.clients == {}
                async with await trio.open_tcp_stream(*addresses[0]) as stream:
                    fresh = RelaydClient(stream)
                    await fresh.login(b"fresh")
                    assert list(relay.clients) == [b"fresh"]
                nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(errors)
    assert errors.records == []
