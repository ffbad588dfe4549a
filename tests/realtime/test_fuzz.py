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


@settings(max_examples=200, deadline=None)
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


upgrade_lines = [
    b"Host: x",
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
]
heads = st.one_of(
    junk,
    st.builds(
        lambda line, headers: line + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n",
        st.sampled_from([b"GET /echo HTTP/1.1", b"GET /echo?%ff HTTP/1.1", b"GET * HTTP/1.1"])
        | st.binary(max_size=40),
        st.lists(st.sampled_from(upgrade_lines) | st.binary(max_size=40), max_size=8),
    ),
)


@settings(max_examples=200, deadline=None)
@given(heads)
async def test_random_handshakes_never_hurt_the_listener(head: bytes) -> None:
    errors = Errors()
    logger = logging.getLogger("relay.realtime")
    logger.addHandler(errors)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                urls: list[str] = await nursery.start(
                    partial(serve_realtime, {"/echo": echo}, "127.0.0.1", 0, close_timeout_s=0.5)
                )
                async with open_raw(urls[0]) as client:
                    with contextlib.suppress(trio.BrokenResourceError):
                        await client.send(head)
                        await client.stream.send_eof()
                    await client.read_to_eof()
                async with ws_client(urls[0] + "/echo") as ws:
                    await ws.send_message("still serving")
                    assert await ws.get_message() == "still serving"
                nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(errors)
    assert errors.records == []
