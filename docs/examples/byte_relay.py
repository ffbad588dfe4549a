"""Two clients of the relayd-compatible byte relay: bob logs in, alice sends him bytes.

    .venv/bin/python docs/examples/byte_relay.py

Talks to the byte relay's TCP port at RELAYD_ADDRESS (default 127.0.0.1:33333). The relay
answers nothing of its own, not even a login, and drops what is sent to an id nobody is logged
in as; so bob first sends himself a frame: once it comes back, he is logged in and alice can
send. relay.protocol.relayd is the frame codec (no I/O of its own).
"""

import os

import trio

from relay.protocol import relayd

HOST, _, PORT = os.environ.get("RELAYD_ADDRESS", "127.0.0.1:33333").rpartition(":")


async def next_transfer(stream: trio.SocketStream, parser: relayd.Parser) -> relayd.Transfer:
    """The next transfer frame from the stream (the relay sends nothing else)."""
    while True:
        for frame in parser:  # raises relayd.RelaydError on a malformed stream
            if isinstance(frame, relayd.Transfer):
                return frame
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError("the relay closed the connection")
        parser.feed(data)


async def main() -> None:
    bob = await trio.open_tcp_stream(HOST, int(PORT))
    alice = await trio.open_tcp_stream(HOST, int(PORT))
    async with bob, alice:
        bobs = relayd.Parser()
        await bob.send_all(relayd.encode_login(b"bob"))
        await bob.send_all(relayd.encode_transfer(b"bob", b"bob", b"am I in?"))
        await next_transfer(bob, bobs)
        await alice.send_all(relayd.encode_login(b"alice"))
        await alice.send_all(relayd.encode_transfer(b"alice", b"bob", b"hello bob"))
        frame = await next_transfer(bob, bobs)
        print(frame.sender, "sent", frame.payload)


trio.run(main)
