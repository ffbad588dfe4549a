"""A Connection on a real listener: messages both ways, fragments, control frames, the close
handshake, size and protocol limits, the slow-consumer policy and write coalescing."""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import trio
from trio_websocket import ConnectionClosed as ClientClosed
from wsproto.events import BytesMessage, CloseConnection, Pong, TextMessage

from relay.protocol import wsframe
from relay.realtime.connection import (
    INBOX_MESSAGES,
    SLOW_CONSUMER,
    Connection,
    ConnectionClosed,
)
from relay.realtime.echo import echo
from tests.realtime.clients import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    close_payload,
    masked,
    ws_client,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from relay.realtime.listener import Request
    from tests.realtime.clients import RawClient

    Serve = Callable[..., Awaitable[str]]
    Raw = Callable[..., Awaitable[RawClient]]


class Recorder:
    """Endpoints for tests: each hands its Connection to the test, then does its job."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[Connection](16)
        self.ended: list[BaseException | None] = []
        self.done = trio.Event()

    async def echo(self, conn: Connection, request: Request) -> None:
        self.send.send_nowait(conn)
        try:
            await echo(conn, request)
        finally:
            self.ended.append(None)
            self.done.set()

    async def reader(self, conn: Connection, request: Request) -> None:
        """Reads until the connection ends; records how it ended."""
        self.send.send_nowait(conn)
        try:
            while True:
                await conn.receive()
        except ConnectionClosed as e:
            self.ended.append(e)
            self.done.set()


async def test_echo_text_and_binary(echo_url: str) -> None:
    with trio.fail_after(5):
        async with ws_client(echo_url + "/echo") as ws:
            messages: list[str | bytes] = ["héllo ✓", "", b"\x00\xff", b"", bytes(range(256)) * 200]
            for message in messages:
                await ws.send_message(message)
                assert await ws.get_message() == message


async def test_fragmented_message_is_reassembled(echo_url: str, raw: Raw) -> None:
    with trio.fail_after(5):
        client = await raw(echo_url, "/echo")
        text = "fragmenté ✓".encode()  # cut inside a character: UTF-8 is checked across frames
        await client.send(
            masked(TEXT, text[:9], fin=False)
            + masked(PING, b"between fragments")
            + masked(CONTINUATION, text[9:12], fin=False)
            + masked(CONTINUATION, b"", fin=False)
            + masked(CONTINUATION, text[12:])
            + masked(BINARY, b"\x01\x02", fin=False)
            + masked(CONTINUATION, b"\x03")
        )
        assert await client.next_event() == Pong(payload=b"between fragments")
        assert await client.next_event() == TextMessage(data="fragmenté ✓")
        assert await client.next_event() == BytesMessage(data=b"\x01\x02\x03")
        await client.send(masked(CLOSE, close_payload(1000)))
        assert await client.next_event() == CloseConnection(code=1000, reason="")


async def test_ping_gets_pong(echo_url: str) -> None:
    with trio.fail_after(5):
        async with ws_client(echo_url + "/echo") as ws:
            await ws.ping(b"are you there")  # returns once the matching pong arrived


async def test_client_close_is_answered_with_its_code(serve: Serve, raw: Raw) -> None:
    recorder = Recorder()
    url = await serve({"/r": recorder.reader})
    with trio.fail_after(5):
        client = await raw(url, "/r")
        await client.send(masked(CLOSE, (4000).to_bytes(2, "big") + b"bye"))
        assert await client.next_event() == CloseConnection(code=4000, reason="bye")
        assert await client.next_event() is None  # then the server closes the TCP connection
        await recorder.done.wait()
    [ended] = recorder.ended
    assert isinstance(ended, ConnectionClosed)
    assert (ended.code, ended.reason) == (4000, "bye")


async def test_server_close_with_code(serve: Serve) -> None:
    closed = trio.Event()
    after_close: list[object] = []

    async def closer(conn: Connection, request: Request) -> None:
        await conn.send(wsframe.text_frame("last words"))
        await conn.close(4321, "done here")  # returns after the client's answer
        after_close.append(conn.send_nowait(b""))
        try:
            await conn.send(b"")
        except ConnectionClosed as e:
            after_close.append(e.code)
        closed.set()

    url = await serve({"/close": closer})
    with trio.fail_after(5):
        async with ws_client(url + "/close") as ws:
            assert await ws.get_message() == "last words"  # queued frames go before the close
            with pytest.raises(ClientClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert (info.value.reason.code, info.value.reason.reason) == (4321, "done here")
        await closed.wait()
    assert after_close == [False, 4321]


async def test_peer_gone_without_close(serve: Serve, raw: Raw) -> None:
    recorder = Recorder()
    url = await serve({"/r": recorder.reader})
    with trio.fail_after(5):
        client = await raw(url, "/r")
        await client.aclose()
        await recorder.done.wait()
    [ended] = recorder.ended
    assert isinstance(ended, ConnectionClosed)
    assert ended.code == 1006


async def test_oversize_message_closes_1009_and_others_go_on(serve: Serve, raw: Raw) -> None:
    url = await serve({"/echo": echo}, max_message_bytes=1000)
    with trio.fail_after(5):
        async with ws_client(url + "/echo") as bystander:
            async with ws_client(url + "/echo") as ws:
                await ws.send_message("é" * 500)  # 1000 bytes of UTF-8: at the limit
                assert await ws.get_message() == "é" * 500
                await ws.send_message("é" * 500 + "x")
                with pytest.raises(ClientClosed) as info:
                    await ws.get_message()
                assert info.value.reason is not None
                assert info.value.reason.code == 1009
            await bystander.send_message(b"still here")
            assert await bystander.get_message() == b"still here"
        # Fragments count together: many small frames over the limit close too.
        client = await raw(url, "/echo")
        pieces = [masked(BINARY, bytes(100), fin=False)]
        pieces += [masked(CONTINUATION, bytes(100), fin=False) for _ in range(20)]
        await client.send(b"".join(pieces))
        assert (await client.expect_close()).code == 1009


@pytest.mark.parametrize("rsv", [1, 2, 4])
async def test_rsv_bits_close_1002(echo_url: str, rsv: int, raw: Raw) -> None:
    with trio.fail_after(5):
        client = await raw(echo_url, "/echo")
        await client.send(masked(TEXT, b"compressed?", rsv=rsv))
        assert (await client.expect_close()).code == 1002


@pytest.mark.parametrize(
    "frames",
    [
        [masked(TEXT, b"\xff\xfe")],
        [masked(TEXT, "é".encode()[:1], fin=False), masked(CONTINUATION, b"A")],
        [masked(TEXT, b"\xed\xa0\x80")],  # a UTF-16 surrogate is not UTF-8
    ],
)
async def test_invalid_utf8_closes_1007(echo_url: str, frames: list[bytes], raw: Raw) -> None:
    with trio.fail_after(5):
        client = await raw(echo_url, "/echo")
        await client.send(b"".join(frames))
        assert (await client.expect_close()).code == 1007


async def test_endpoint_exception_closes_1011_and_is_logged(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(conn: Connection, request: Request) -> None:
        await conn.receive()
        raise RuntimeError("endpoint bug")

    url = await serve({"/broken": broken, "/echo": echo})
    with trio.fail_after(5):
        async with ws_client(url + "/broken") as ws:
            await ws.send_message("hi")
            with pytest.raises(ClientClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1011
        async with ws_client(url + "/echo") as ws:
            await ws.send_message("the listener still serves")
            assert await ws.get_message() == "the listener still serves"
    [record] = [r for r in caplog.records if r.name == "relay.realtime"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "endpoint bug" in str(record.exc_info[1])


async def test_slow_consumer_is_dropped_and_others_get_every_frame(serve: Serve, raw: Raw) -> None:
    """A room publishes to two members; one never reads. Its outbox fills, send_nowait says so,
    the room closes it; the reading member gets every frame, in order."""
    recorder = Recorder()
    url = await serve({"/member": recorder.reader}, outbox_frames=8, close_timeout_s=0.5)
    frame_bytes = 256 * 1024
    with trio.fail_after(10):
        async with ws_client(url + "/member", max_message_size=frame_bytes + 8) as fast:
            fast_conn = await recorder.recv.receive()
            stalled = await raw(url, "/member")  # handshakes, then never reads
            slow_conn = await recorder.recv.receive()
            members = [fast_conn, slow_conn]
            published = 0
            while slow_conn in members:
                published += 1
                assert published < 500, "the stalled member never overflowed"
                frame = wsframe.binary_frame(published.to_bytes(4, "big") * (frame_bytes // 4))
                for member in list(members):
                    if not member.send_nowait(frame):
                        member.close_nowait(SLOW_CONSUMER, "slow consumer")
                        members.remove(member)
                received = await fast.get_message()  # the fast member keeps up
                assert received[:4] == published.to_bytes(4, "big")
            assert members == [fast_conn]
            # The stalled client reads nothing, so the close cannot get through: the server
            # drops the connection after close_timeout_s and discards the backlog.
            await slow_conn.close()  # returns once the connection has ended
            [ended] = recorder.ended
            assert isinstance(ended, ConnectionClosed)
            assert ended.code == SLOW_CONSUMER
            slow = slow_conn.statistics()
            assert slow.frames_dropped == 1
            assert slow.frames_written < slow.frames_queued
            assert not slow_conn.send_nowait(b"")  # it takes nothing any more
            assert slow_conn.statistics().frames_dropped == 2
            # What made it into the socket buffers arrives, then the TCP connection ends.
            assert 0 < await stalled.read_to_eof() < published * frame_bytes
            assert fast_conn.statistics().frames_dropped == 0
            assert fast_conn.statistics().frames_written == published


async def test_backlog_is_coalesced_into_one_write(serve: Serve) -> None:
    recorder = Recorder()
    url = await serve({"/r": recorder.reader})
    with trio.fail_after(5):
        async with ws_client(url + "/r") as ws:
            conn = await recorder.recv.receive()
            before = conn.statistics()
            # No checkpoint between these: the writer wakes to find all 50 queued.
            for i in range(50):
                assert conn.send_nowait(wsframe.text_frame(str(i)))
            for i in range(50):
                assert await ws.get_message() == str(i)
            after = conn.statistics()
            assert after.frames_written - before.frames_written == 50
            assert after.writes - before.writes == 1
            assert after.frames_queued == 50
            assert after.outbox_used == 0
            assert after.outbox_size == 256


async def test_write_now_writes_the_queued_frames_before_the_caller_yields(serve: Serve) -> None:
    recorder = Recorder()
    url = await serve({"/r": recorder.reader})
    with trio.fail_after(5):
        async with ws_client(url + "/r") as ws:
            conn = await recorder.recv.receive()
            before = conn.statistics()
            assert conn.send_nowait(wsframe.text_frame("a"))  # waits for the flusher's pass
            assert conn.statistics().writes == before.writes
            assert conn.send_nowait(wsframe.text_frame("b"), True)  # both, in one write, now
            now = conn.statistics()
            assert (now.writes - before.writes, now.frames_written - before.frames_written) == (
                1,
                2,
            )
            assert [await ws.get_message() for _ in range(2)] == ["a", "b"]
            await trio.sleep(0.05)  # the flusher's pass, when it came, had nothing left to write
            assert conn.statistics().writes == now.writes


async def test_idle_connection_writes_each_frame_at_once(serve: Serve) -> None:
    recorder = Recorder()
    url = await serve({"/echo": recorder.echo})
    with trio.fail_after(5):
        async with ws_client(url + "/echo") as ws:
            conn = await recorder.recv.receive()
            for i in range(5):
                await ws.send_message(f"ping {i}")
                assert await ws.get_message() == f"ping {i}"
            stats = conn.statistics()
            assert (stats.writes, stats.frames_written, stats.messages_received) == (5, 5, 5)


async def test_send_waits_for_room_and_fails_once_closed(serve: Serve) -> None:
    """`send` is backpressure, not a drop: it waits while the outbox is full."""
    results: list[str] = []
    finished = trio.Event()

    async def producer(conn: Connection, request: Request) -> None:
        for i in range(20):
            await conn.send(wsframe.text_frame(str(i)))
        results.append("sent all")
        await conn.close(1000)
        try:
            await conn.send(b"")
        except ConnectionClosed as e:
            results.append(f"closed {e.code}")
        finished.set()

    url = await serve({"/p": producer}, outbox_frames=2)
    with trio.fail_after(5):
        async with ws_client(url + "/p") as ws:
            assert [await ws.get_message() for _ in range(20)] == [str(i) for i in range(20)]
        await finished.wait()
    assert results == ["sent all", "closed 1000"]


async def test_messages_survive_a_peer_close_right_behind_them(serve: Serve, raw: Raw) -> None:
    """Messages that arrived before the peer's close are still delivered to receive()."""
    got: list[str | bytes] = []
    done = trio.Event()

    async def collect(conn: Connection, request: Request) -> None:
        try:
            while True:
                got.append(await conn.receive())
        except ConnectionClosed:
            done.set()

    url = await serve({"/c": collect})
    with trio.fail_after(5):
        client = await raw(url, "/c")
        await client.send(
            masked(TEXT, b"one") + masked(BINARY, b"two") + masked(CLOSE, (1000).to_bytes(2, "big"))
        )
        assert await client.next_event() == CloseConnection(code=1000, reason="")
        await done.wait()
    assert got == ["one", b"two"]


async def test_messages_of_one_read_are_taken_without_waiting(serve: Serve, raw: Raw) -> None:
    """Several messages in one packet are all handed over at once: the endpoint takes them in a
    row, with no other task running in between."""
    taken: list[str | bytes] = []
    got: list[str | bytes] = []
    done = trio.Event()

    async def ticker() -> None:
        while True:  # runs whenever the endpoint yields
            taken.append("tick")
            await trio.lowlevel.checkpoint()

    async def take(conn: Connection, request: Request) -> None:
        async with trio.open_nursery() as nursery:
            first = await conn.receive()  # waits for the packet
            nursery.start_soon(ticker)
            taken.append(first)
            for _ in range(INBOX_MESSAGES - 1):
                taken.append(await conn.receive())
            got.extend(taken)  # before the ticker has had a turn, if nothing yielded
            done.set()
            nursery.cancel_scope.cancel()

    url = await serve({"/t": take})
    with trio.fail_after(5):
        client = await raw(url, "/t")
        await client.send(b"".join(masked(TEXT, str(i).encode()) for i in range(INBOX_MESSAGES)))
        await done.wait()
    assert INBOX_MESSAGES > 1
    assert got == [str(i) for i in range(INBOX_MESSAGES)]


async def test_reply_to_the_last_message_goes_out_before_the_close(echo_url: str, raw: Raw) -> None:
    """A message, then the peer's close (or a protocol error) in the same packet: the echo of
    the message is still sent, then the close (Autobahn 3.2 is strict about this)."""
    with trio.fail_after(5):
        client = await raw(echo_url, "/echo")
        await client.send(masked(TEXT, b"request") + masked(CLOSE, close_payload(1001, "bye")))
        assert await client.next_event() == TextMessage(data="request")
        assert await client.next_event() == CloseConnection(code=1001, reason="bye")
        assert await client.next_event() is None
        client = await raw(echo_url, "/echo")
        await client.send(masked(BINARY, b"request") + masked(TEXT, b"bad", rsv=2))
        assert await client.next_event() == BytesMessage(data=b"request")
        assert (await client.expect_close()).code == 1002


async def test_peer_close_is_answered_even_if_the_endpoint_ignores_it(
    serve: Serve, raw: Raw
) -> None:
    """An endpoint that never reads nor returns cannot hold a close: the answer goes out after
    close_timeout_s, and the endpoint is cancelled soon after its connection ended."""
    cancelled = trio.Event()

    async def deaf(conn: Connection, request: Request) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    url = await serve({"/deaf": deaf}, close_timeout_s=0.3)
    with trio.fail_after(5):
        client = await raw(url, "/deaf")
        await client.send(masked(CLOSE, close_payload(1000)))
        assert await client.next_event() == CloseConnection(code=1000, reason="")
        assert await client.next_event() is None
        await cancelled.wait()


async def test_a_backlog_beyond_the_socket_buffer_arrives_whole_and_in_order(
    serve: Serve,
) -> None:
    """The flusher writes what the socket takes at once; the rest (a partial frame included)
    goes to the writer task, which must finish that frame before any later one."""
    recorder = Recorder()
    url = await serve({"/r": recorder.reader}, outbox_frames=512)
    frames = [wsframe.binary_frame(i.to_bytes(4, "big") * 8191) for i in range(300)]  # ~10 MB
    with trio.fail_after(10):
        async with ws_client(url + "/r", max_message_size=2**20) as ws:
            conn = await recorder.recv.receive()
            for frame in frames:  # no checkpoint: all queued before the first write
                assert conn.send_nowait(frame)
            for i in range(len(frames)):
                message = await ws.get_message()
                assert message == i.to_bytes(4, "big") * 8191
            stats = conn.statistics()
            assert stats.frames_written == len(frames)
            assert 1 < stats.writes < len(frames)  # coalesced, but more than one write
            more = wsframe.text_frame("after the backlog")
            assert conn.send_nowait(more)  # idle again: written at once by the flusher
            assert await ws.get_message() == "after the backlog"
            assert conn.statistics().writes == stats.writes + 1


async def test_a_peer_reset_while_the_endpoint_keeps_sending_leaves_the_listener_serving(
    serve: Serve, raw: Raw
) -> None:
    """Regression: a reset peer made the flusher hand the failed write to a writer task in a
    nursery that was already closing; the RuntimeError killed the flusher and the listener."""
    recorder = Recorder()
    stop = trio.Event()

    async def flood(conn: Connection, request: Request) -> None:
        recorder.send.send_nowait(conn)
        while not stop.is_set():  # keeps sending past the end, as a slow endpoint would
            conn.send_nowait(wsframe.text_frame("x" * 1000))
            await trio.lowlevel.checkpoint()

    url = await serve({"/flood": flood, "/echo": echo})
    with trio.fail_after(10):
        for _ in range(20):
            client = await raw(url, "/flood")
            conn = await recorder.recv.receive()
            await client.stream.receive_some(1)
            client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.aclose()  # RST
            await conn.close()  # returns once the connection has ended
        stop.set()
        async with ws_client(url + "/echo") as ws:  # the listener still works
            await ws.send_message("still here")
            assert await ws.get_message() == "still here"
        assert not conn.send_nowait(b"x")  # a connection whose peer is gone takes nothing


async def test_a_peer_flooding_control_frames_does_not_keep_the_loop(
    serve: Serve, raw: Raw
) -> None:
    """Unsolicited pongs are read and dropped without reaching the endpoint, so nothing else
    makes the reader wait. While another process floods them faster than the server parses,
    another connection still gets its echo: every read follows a yield (a reader that read on
    while data was waiting answered only once the whole flood was in)."""
    recorder = Recorder()
    url = await serve({"/flood": recorder.reader, "/echo": echo})
    flooder = await raw(url, "/flood")
    fd = flooder.stream.socket.fileno()
    chunk = masked(PONG, b"p" * 125) * 500  # ~64 KiB
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", FLOOD, str(fd), chunk.hex(), str(256)],  # 16 MiB at most
            pass_fds=(fd,),
            stdout=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            assert await process.stdout.receive_some(1) == b"."  # the flood is under way
            async with ws_client(url + "/echo") as ws:
                await ws.send_message("through")
                assert await ws.get_message() == "through"
            assert process.poll() is None  # still flooding
        finally:
            process.kill()
            await process.wait()


FLOOD = """
import socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
sock.setblocking(True)
chunk = bytes.fromhex(sys.argv[2])
for i in range(int(sys.argv[3])):
    sock.sendall(chunk)
    if i == 1:
        sys.stdout.write("."); sys.stdout.flush()
"""
