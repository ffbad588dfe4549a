"""Voice channels in cluster mode, on two real servers sharing one real Redis: one node serves a
channel, op 4 on the other sends its member there, the token made on one node is redeemed on
the other, voice state changes cross, and a channel given up moves to the next node that joins.

As in test_two_servers, the second server runs on a copy of the first one's database.
"""

from __future__ import annotations

import shutil
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import coredis
import hypothesis.strategies as st
import trio
from hypothesis import given, settings

from relay.chat.voice import Voice
from relay.client import open_gateway
from relay.cluster.voice import (
    ClusterVoice,
    StateCast,
    StateEntry,
    StoredGrant,
    VoiceAsk,
    decode,
    decode_entry,
    encode,
)
from relay.cluster.voice import decode_grant as decode_stored
from relay.voice_client import VoiceClosed, join_voice, open_voice, voice_base
from tests.cluster.test_two_servers import client_for, eventually, fanout_of
from tests.conftest import settings_for, start_server
from tests.voice.test_voice import close_code, opus_frames, receive_within, setup
from tests.voice.test_voice import voice_of as connect_voice

if TYPE_CHECKING:
    from pathlib import Path

    from relay.client import Gateway
    from relay.voice_client import VoiceClient
    from tests.conftest import RunningServer
    from tests.realservers import RedisServer

ids = st.integers(min_value=1, max_value=2**63 - 1)
voices = st.builds(
    Voice,
    user_id=ids,
    server_id=ids,
    channel_id=ids,
    session_id=st.text(min_size=1, max_size=64),
    self_mute=st.booleans(),
    mute=st.booleans(),
    permissions=st.integers(min_value=0, max_value=2**53),
    e2ee_required=st.booleans(),
)
nodes = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)


@settings(max_examples=60)
@given(
    st.one_of(
        st.builds(StateCast, nodes, st.none() | voices, st.none() | voices),
        st.builds(VoiceAsk, ids, st.text(max_size=64), ids, st.booleans(), st.booleans()),
    )
)
def test_voice_wire_round_trips(message: StateCast | VoiceAsk) -> None:
    assert decode(encode(message)) == message


@settings(max_examples=30)
@given(st.builds(StoredGrant, nodes, voices), st.builds(StateEntry, nodes, voices))
def test_stored_grant_and_state_round_trip(grant: StoredGrant, entry: StateEntry) -> None:
    assert decode_stored(encode(grant)) == grant
    assert decode_entry(encode(entry)) == entry


def a_voice_states(server: RunningServer) -> set[int]:
    """The users this node knows to be in voice, on any node."""
    chat = server.runtime.chat
    return set(chat.voice.by_user) | set(chat.voice.remote)


def voice_of(server: RunningServer) -> ClusterVoice:
    assert server.runtime.voice is not None
    view = server.runtime.voice.view
    assert isinstance(view, ClusterVoice)
    return view


def base(endpoint: str) -> str:
    """What the bundled clients open for a cluster's VOICE_SERVER_UPDATE (a full URL)."""
    assert endpoint.endswith("/v1/voice")
    found = voice_base("ws://gateway.invalid", endpoint)
    assert found == endpoint.removesuffix("/v1/voice")
    return found


def test_a_path_endpoint_is_on_the_gateways_listener() -> None:
    assert voice_base("ws://127.0.0.1:8081", "/v1/voice") == "ws://127.0.0.1:8081"


async def state_update(g: Gateway, user_id: str) -> dict[str, object]:
    while True:
        frame = await g.dispatch("VOICE_STATE_UPDATE")
        if frame["d"]["user_id"] == user_id:
            return dict(frame["d"])


async def closed_with(client: VoiceClient) -> int | None:
    """Read until the voice connection closes; its close code."""
    with trio.fail_after(5):
        try:
            while True:
                await client.pump(0.05)
        except BaseException as e:  # a VoiceClosed, maybe in the client's nursery's group
            first: BaseException = e
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            if not isinstance(first, VoiceClosed):
                raise
            return first.code


async def refusal(g: Gateway, server_id: str, voice_id: str) -> str:
    try:
        await join_voice(g, server_id, voice_id)
    except PermissionError as e:
        return str(e)
    raise AssertionError("the join was not refused")


async def test_voice_channel_served_by_one_node_reached_from_both(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> None:
    common = {
        "broker": redis.url,
        "voice_resume_grace_s": 0.5,
        "presence_grace_s": 0.2,
        "lease_ttl_s": 1.0,  # renewed every 0.33 s: a lost lease is noticed at once
    }
    first, stop_first = await start_server(nursery, settings_for(tmp_path / "a", **common))
    (a, b), server_id, voice_id = await setup(first, 2)
    await stop_first()
    shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "data")
    one, stop_one = await start_server(nursery, settings_for(tmp_path / "a", **common))
    two, stop_two = await start_server(nursery, settings_for(tmp_path / "b", **common))
    frames = opus_frames(3)
    channel = int(voice_id)
    with trio.fail_after(30):
        async with (
            open_gateway(one.ws_url) as ga,
            open_gateway(two.ws_url) as gb,
            AsyncExitStack() as stack,
        ):
            await ga.identify(a.token)
            await gb.identify(b.token)
            both = {int(a.user_id), int(b.user_id)}
            await eventually(lambda: set(fanout_of(one).online(int(server_id))) == both)
            await eventually(lambda: set(fanout_of(two).online(int(server_id))) == both)
            # Alice joins on one: nobody served the channel, so one takes it.
            va = await join_voice(ga, server_id, voice_id)
            assert va["endpoint"] == one.ws_url + "/v1/voice"
            assert channel in voice_of(one).held
            # Bob joins on two and is sent to one; Alice (on one) hears his voice state.
            vb = await join_voice(gb, server_id, voice_id, self_mute=False)
            assert vb["endpoint"] == one.ws_url + "/v1/voice"
            assert channel not in voice_of(two).held
            joined = await state_update(ga, b.user_id)
            assert joined["channel_id"] == voice_id
            assert ga.session_id is not None
            assert gb.session_id is not None
            ca = await connect_voice(
                stack, base(va["endpoint"]), ga, a.user_id, server_id, va["token"], "websocket"
            )
            # The token two made is redeemed on one (once: it is gone from Redis after); Bob's
            # media goes over UDP to one's socket, which READY names.
            cb = await connect_voice(
                stack, base(vb["endpoint"]), gb, b.user_id, server_id, vb["token"], "udp"
            )
            assert one.runtime.voice is not None
            assert cb.ready["port"] == one.runtime.voice.udp_port
            # Each node shows both members' voice states: in READY and over REST.
            await eventually(lambda: int(b.user_id) in a_voice_states(one))
            async with open_gateway(one.ws_url) as ga2:
                ready = await ga2.identify(a.token)
                assert {v["user_id"] for v in ready["voice_states"]} == {a.user_id, b.user_id}
            for server, member in ((one, a), (two, b)):
                listed = await client_for(server, member.token).call(
                    "GET", f"/v1/api/channels/{voice_id}/voice-states"
                )
                assert [v["user_id"] for v in listed] == sorted([a.user_id, b.user_id], key=int)
            for frame in frames:
                await ca.send_frame(frame)
            assert await receive_within(cb) == frames
            for frame in frames:
                await cb.send_frame(frame)
            assert await receive_within(ca) == frames
            used = {"server_id": server_id, "session_id": gb.session_id, "token": vb["token"]}
            assert await close_code(one.ws_url, user_id=b.user_id, **used) == 4004

            # Bob mutes himself on two: the node serving the channel applies it (his packets
            # are dropped), and Alice hears the new state through the broker.
            await gb.send(4, {"server_id": server_id, "channel_id": voice_id, "self_mute": True})
            assert (await state_update(ga, b.user_id))["self_mute"] is True
            await eventually(lambda: voice_of(one).by_user[int(b.user_id)].self_mute)
            for frame in frames:
                await cb.send_frame(frame)
            assert await receive_within(ca) == []

            # One loses the channel's lease (a node that wins it in Redis, as after a pause
            # past the ttl): its voice connections there close with 4020. While that node
            # holds the channel and cannot be reached, a join is refused; once its lease
            # expires, Bob's op 4 again makes two the channel's voice node.
            r: coredis.Redis[bytes] = coredis.Redis.from_url(redis.url)
            async with r:
                lease_key = f"relay:lease:voice:{channel}"
                await r.set(lease_key, b"ghost:999999999", px=1500)
                assert await closed_with(cb) == 4020
                assert await closed_with(ca) == 4020
                refused = await refusal(gb, server_id, voice_id)
                assert refused == "voice_unavailable"

                async def expired() -> bool:
                    return await r.get(lease_key) is None

                await eventually(expired)
            again = await join_voice(gb, server_id, voice_id, self_mute=False)
            assert again["endpoint"] == two.ws_url + "/v1/voice"
            assert channel in voice_of(two).held
            assert channel not in voice_of(one).held
            # Alice, whose gateway session is on one, is sent to two as well.
            va2 = await join_voice(ga, server_id, voice_id)
            assert va2["endpoint"] == two.ws_url + "/v1/voice"
            cb2 = await connect_voice(
                stack, two.ws_url, gb, b.user_id, server_id, again["token"], "websocket"
            )
            ca2 = await connect_voice(
                stack, two.ws_url, ga, a.user_id, server_id, va2["token"], "websocket"
            )
            for frame in frames:
                await cb2.send_frame(frame)
            assert await receive_within(ca2) == frames

            # Two stops (releasing its leases): Alice's voice connection ends, and her op 4
            # again on one gets a token for one, which now serves the channel.
            await gb.ws.aclose()
            await stop_two()
            assert await closed_with(ca2) is not None
            # Bob's voice state was on two: one drops it once two is gone, and tells Alice.
            await eventually(lambda: int(b.user_id) not in a_voice_states(one))
            left = await state_update(ga, b.user_id)
            while left["channel_id"] is not None:
                left = await state_update(ga, b.user_id)
            back = await join_voice(ga, server_id, voice_id)
            assert back["endpoint"] == one.ws_url + "/v1/voice"
            async with open_voice(
                one.ws_url,
                server_id=server_id,
                user_id=a.user_id,
                session_id=ga.session_id,
                token=back["token"],
                protocol="websocket",
            ) as ca3:
                assert ca3.ssrc
    await stop_one()
