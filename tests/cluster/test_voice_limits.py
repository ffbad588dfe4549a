"""A voice channel's member limit holds across nodes (docs/cluster.md#voice-channels): two
members joining at the same moment through two nodes cannot both pass a `user_limit` of 1
(each node's own view of the other's members is a broker hop behind; the seat script in Redis
decides), and a seat is given back when its member leaves.

As in test_two_servers, the second server runs on a copy of the first one's database."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import coredis
import trio

from relay.client import open_gateway
from relay.voice_client import join_voice
from tests.cluster.test_two_servers import eventually, fanout_of
from tests.cluster.test_voice_places import state_update
from tests.conftest import settings_for, start_server
from tests.voice.test_voice import setup

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import Gateway
    from tests.realservers import RedisServer

ROUNDS = 3


async def attempt(g: Gateway, server_id: str, voice_id: str) -> bool:
    """Op 4 into the channel: True if joined, False if refused as full."""
    try:
        await join_voice(g, server_id, voice_id)
    except PermissionError as e:
        refused = str(e)
    else:
        return True
    assert refused == "voice_channel_full"
    return False


async def join_into(
    joined: dict[str, bool], name: str, g: Gateway, server_id: str, voice_id: str
) -> None:
    joined[name] = await attempt(g, server_id, voice_id)


async def test_simultaneous_joins_through_two_nodes_respect_the_user_limit(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    common = {"broker": redis.url, "presence_grace_s": 0.2, "lease_ttl_s": 1.0}
    first, stop_first = await start_server(nursery, settings_for(tmp_path / "a", **common))
    (owner, b, c), server_id, voice_id = await setup(first, 3)
    # The owner may move members, which passes user_limit: b and c may not.
    await owner.client.call("PATCH", f"/v1/api/channels/{voice_id}", {"user_limit": 1})
    await stop_first()
    shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "data")
    one, stop_one = await start_server(nursery, settings_for(tmp_path / "a", **common))
    two, stop_two = await start_server(nursery, settings_for(tmp_path / "b", **common))
    check: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
    seats = f"relay:voice:seats:{voice_id}"

    async def seats_free() -> bool:
        return await check.hlen(seats) == 0

    with trio.fail_after(30):
        async with check, open_gateway(one.ws_url) as gb, open_gateway(two.ws_url) as gc:
            await gb.identify(b.token)
            await gc.identify(c.token)
            both = {int(b.user_id), int(c.user_id)}
            await eventually(lambda: set(fanout_of(one).online(int(server_id))) == both)
            await eventually(lambda: set(fanout_of(two).online(int(server_id))) == both)
            for _ in range(ROUNDS):
                joined: dict[str, bool] = {}
                async with trio.open_nursery() as at_once:
                    at_once.start_soon(join_into, joined, "b", gb, server_id, voice_id)
                    at_once.start_soon(join_into, joined, "c", gc, server_id, voice_id)
                assert sorted(joined.values()) == [False, True], joined
                # The one in leaves; the other can then join (its seat was given back).
                winner, loser = (gb, gc) if joined["b"] else (gc, gb)
                winner_id = b.user_id if joined["b"] else c.user_id
                await winner.send(4, {"server_id": server_id, "channel_id": None})
                while (await state_update(loser, winner_id))["channel_id"] is not None:
                    pass
                # (The seat is given back within a Redis round trip of the leave.)
                await eventually(seats_free)
                assert await attempt(loser, server_id, voice_id)
                await loser.send(4, {"server_id": server_id, "channel_id": None})
                loser_id = c.user_id if joined["b"] else b.user_id
                while (await state_update(winner, loser_id))["channel_id"] is not None:
                    pass
                await eventually(seats_free)

            # Deterministically: a member that joined through another node a moment ago, whose
            # voice state two has not heard yet (its seat is in Redis, its instance alive). Two's
            # own count says the channel is free; the seat script refuses.
            await check.set("relay:alive:ghost-node.1", "1", px=10_000)
            await check.hset(seats, {"999": "ghost-node.1|1"})
            assert not await attempt(gc, server_id, voice_id)
            assert not await attempt(gb, server_id, voice_id)
            # That node dies (its alive mark expires): its seats no longer count.
            await check.delete(["relay:alive:ghost-node.1"])
            assert await attempt(gc, server_id, voice_id)
            assert list(await check.hkeys(seats)) == [c.user_id.encode()]
    await stop_two()
    await stop_one()
