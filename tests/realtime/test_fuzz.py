"""Random bytes after a valid handshake: the connection ends cleanly, nothing is logged as an
error, and the listener goes on serving."""

from __future__ import annotations

import contextlib
import logging
from functools import partial

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.realtime.echo import echo
from relay.realtime.listener import serve_realtime
from tests.realtime.clients import masked, open_raw, ws_client

# Frames that look right but may be wrong anywhere (opcode, RSV bits, FIN, control lengths),
# mixed with plain junk.
frames = st.builds(
    masked,
    st.integers(0, 15),
    st.binary(max_size=200),
    fin=st.booleans(),
    rsv=st.integers(0, 7),
)
junk = st.binary(min_size=1, max_size=64)


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(frames, junk), min_size=1, max_size=8))
async def test_random_input_never_hurts_the_listener(chunks: list[bytes]) -> None:
    errors = Errors()
    logger = logging.getLogger("relay.realtime")
    logger.addHandler(errors)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                urls: list[str] = await nursery.start(
                    partial(serve_realtime, {"/echo": echo}, "127.0.0.1", 0, close_timeout_s=0.5)
                )
                async with open_raw(urls[0], "/echo") as client:
                    # The server may close before it has read everything: that is fine.
                    with contextlib.suppress(trio.BrokenResourceError):
                        await client.send(b"".join(chunks))
                        await client.stream.send_eof()
                    await client.read_to_eof()
                async with ws_client(urls[0] + "/echo") as ws:
                    await ws.send_message("still serving")
                    assert await ws.get_message() == "still serving"
                nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(errors)
    assert errors.records == []
