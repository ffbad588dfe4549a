"""A channel owner in a process of its own, for the SIGSTOP test in test_owners.py: it takes the
channel's lease (never renewing it: it is about to be paused), claims the channel in storage,
says `owner <token>`, then waits for a line on stdin (the test pauses it there with SIGSTOP and
lets it go on after another process took the channel over) and makes its late write under its
old token: `refused` or `committed`.

Usage: python -m tests.cluster.paused_owner REDIS_URL DB_PATH PREFIX CHANNEL_ID AUTHOR_ID TTL_S
"""

from __future__ import annotations

import sys
from pathlib import Path

import coredis
import trio

from relay.cluster.lease import Leases
from relay.ids import Snowflakes
from relay.storage import fencing
from relay.storage.messages import NewMessage
from relay.storage.sqlite.db import connect


async def take(url: str, prefix: str, channel_id: int, ttl_s: float) -> int:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
    async with client:
        lease = await Leases(client, ttl_s=ttl_s, prefix=prefix).acquire(
            f"channel:{channel_id}", "paused"
        )
    assert lease is not None, "the channel was owned already"
    return lease.token


def main() -> None:
    url, db_path, prefix, channel, author, ttl = sys.argv[1:]
    channel_id, author_id = int(channel), int(author)
    token = trio.run(take, url, prefix, channel_id, float(ttl))
    db = connect(Path(db_path))
    with db.conn:
        fencing.claim(db, channel_id, token)
    print(f"owner {token}", flush=True)
    sys.stdin.readline()  # paused here
    new = NewMessage(
        channel_id=channel_id,
        author_id=author_id,
        content="late write",
        nonce=None,
        reply_to=None,
        mentions=[],
        now_ms=0,
    )
    try:
        with db.conn:
            fencing.post(db, Snowflakes(worker=5).next(), new, fence=token)
    except fencing.StaleOwner:
        print("refused", flush=True)
    else:
        print("committed", flush=True)
    db.close()


if __name__ == "__main__":
    main()
