"""The gateway follows permissions live: hidden channels send nothing to those who cannot see
them, READY and CHANNEL_* show only visible channels, and losing VIEW_CHANNEL (an overwrite, a
role taken away) stops a channel's events at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from relay.client import open_gateway
from relay.permissions import DEFAULT_EVERYONE, P
from tests.gateway.conftest import join, new_member

if TYPE_CHECKING:
    from relay.client import Gateway
    from tests.conftest import RunningServer
    from tests.gateway.conftest import Member

VIEW = str(int(P.VIEW_CHANNEL))
THUMBS = "%F0%9F%91%8D"


async def api(member: Member, method: str, path: str, body: Any = None) -> Any:
    return await member.client.call(method, f"/v1/api{path}", body)


async def until(gateway: Gateway, t: str, marker: str) -> list[dict[str, Any]]:
    """Every dispatch up to and including the `t` whose payload's id is `marker`."""
    seen: list[dict[str, Any]] = []
    with trio.fail_after(5):
        while True:
            frame = await gateway.dispatch()
            seen.append(frame)
            if frame["t"] == t and frame["d"].get("id") == marker:
                return seen


async def hears_no_message(gateway: Gateway) -> None:
    """No MESSAGE_CREATE reaches `gateway` for a while (after a marker that would have come
    later, so anything sent before it has had its chance)."""
    with trio.move_on_after(0.3):
        while True:
            frame = await gateway.dispatch()
            assert frame["t"] != "MESSAGE_CREATE", frame


def mentions(frames: list[dict[str, Any]], channel_id: str) -> list[str]:
    """The events among `frames` that are about the channel."""
    return [
        f["t"]
        for f in frames
        if channel_id in (f["d"].get("id"), f["d"].get("channel_id"))
        if isinstance(f["d"], dict)
    ]


async def world(server: RunningServer) -> tuple[Member, Member, Member, str, str, str]:
    """Owner; `insider` (holds the staff role) and `outsider` (does not); the server, its
    public text channel, a staff-only channel and the staff role."""
    owner = await new_member(server, "owner")
    insider = await new_member(server, "insider")
    outsider = await new_member(server, "outsider")
    guild = await api(owner, "POST", "/servers", {"name": "Home"})
    sid = guild["id"]
    public = next(c["id"] for c in guild["channels"] if c["type"] == "text")
    await join(owner, [insider, outsider], sid)
    staff = await api(owner, "POST", f"/servers/{sid}/roles", {"name": "staff", "position": 1})
    await api(owner, "PUT", f"/servers/{sid}/members/{insider.user_id}/roles/{staff['id']}")
    return owner, insider, outsider, sid, public, staff["id"]


async def test_a_hidden_channel_sends_nothing_to_those_who_cannot_see_it(
    gateway_server: RunningServer,
) -> None:
    owner, insider, outsider, sid, public, staff = await world(gateway_server)
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as seer,
            open_gateway(gateway_server.ws_url) as blind,
        ):
            await seer.identify(insider.token)
            await blind.identify(outsider.token)
            hidden = await api(
                owner,
                "POST",
                f"/servers/{sid}/channels",
                {
                    "name": "staff",
                    "type": "text",
                    "permission_overwrites": [
                        {"id": sid, "type": "role", "deny": VIEW},
                        {"id": staff, "type": "role", "allow": VIEW},
                    ],
                },
            )
            hid = hidden["id"]
            created = (await seer.dispatch("CHANNEL_CREATE"))["d"]
            assert created["id"] == hid
            message = await api(owner, "POST", f"/channels/{hid}/messages", {"content": "psst"})
            path = f"/channels/{hid}/messages/{message['id']}"
            await api(owner, "PATCH", path, {"content": "edited"})
            await api(insider, "PUT", f"{path}/reactions/{THUMBS}/@me")
            await api(owner, "POST", f"/channels/{hid}/typing")
            await api(owner, "PUT", f"/channels/{hid}/pins/{message['id']}")
            await api(owner, "PATCH", f"/channels/{hid}", {"topic": "secret"})
            await api(owner, "DELETE", path)
            seen = await until(seer, "MESSAGE_DELETE", message["id"])
            assert mentions(seen, hid) == [
                "MESSAGE_CREATE",
                "MESSAGE_UPDATE",
                "MESSAGE_REACTION_ADD",
                "TYPING_START",
                "CHANNEL_PINS_UPDATE",
                "CHANNEL_UPDATE",
                "MESSAGE_DELETE",
            ]
            # Everything about the hidden channel has reached the insider, so it would have
            # reached the outsider before this marker, if at all.
            marker = await api(owner, "POST", f"/channels/{public}/messages", {"content": "hi"})
            assert mentions(await until(blind, "MESSAGE_CREATE", marker["id"]), hid) == []

        # Nor does anything else show it: READY, channel lists, REST reads.
        async with open_gateway(gateway_server.ws_url) as again:
            ready = await again.identify(outsider.token)
        channels = {c["id"] for c in ready["servers"][0]["channels"]}
        assert public in channels
        assert hid not in channels
        assert hid not in {r["channel_id"] for r in ready["read_states"]}
        listed = {c["id"] for c in await api(outsider, "GET", f"/servers/{sid}/channels")}
        assert hid not in listed
        for method, path in [
            ("GET", f"/channels/{hid}"),
            ("GET", f"/channels/{hid}/messages"),
            ("GET", f"/channels/{hid}/messages/{message['id']}"),
            ("GET", f"/channels/{hid}/pins"),
            ("POST", f"/channels/{hid}/typing"),
        ]:
            response = await outsider.client.request(method, f"/v1/api{path}")
            assert response.status_code == 404, path
        # A mention of someone who cannot see the channel is not kept (no unread badge).
        note = await api(
            owner, "POST", f"/channels/{hid}/messages", {"content": f"<@{outsider.user_id}>"}
        )
        assert note["mentions"] == []


async def test_losing_view_channel_stops_a_channels_events_at_once(
    gateway_server: RunningServer,
) -> None:
    owner, insider, outsider, sid, public, staff = await world(gateway_server)
    extra = await api(owner, "POST", f"/servers/{sid}/channels", {"name": "x", "type": "text"})
    xid = extra["id"]
    with trio.fail_after(15):
        async with open_gateway(gateway_server.ws_url) as gw:
            await gw.identify(outsider.token)
            # A member overwrite takes the channel away: CHANNEL_DELETE, then silence.
            await api(
                owner,
                "PUT",
                f"/channels/{xid}/permissions/{outsider.user_id}",
                {"type": "member", "deny": VIEW},
            )
            assert (await gw.dispatch("CHANNEL_DELETE"))["d"]["id"] == xid
            await api(owner, "POST", f"/channels/{xid}/messages", {"content": "unseen"})
            await api(owner, "POST", f"/channels/{xid}/typing")
            marker = await api(owner, "POST", f"/channels/{public}/messages", {"content": "m"})
            assert mentions(await until(gw, "MESSAGE_CREATE", marker["id"]), xid) == []

            # Given back: CHANNEL_CREATE, and its events flow again.
            await api(owner, "DELETE", f"/channels/{xid}/permissions/{outsider.user_id}")
            assert (await gw.dispatch("CHANNEL_CREATE"))["d"]["id"] == xid
            seen = await api(owner, "POST", f"/channels/{xid}/messages", {"content": "seen"})
            await until(gw, "MESSAGE_CREATE", seen["id"])

            # Roles: @everyone loses VIEW_CHANNEL server-wide, staff keeps it.
            await api(
                owner,
                "PATCH",
                f"/servers/{sid}/roles/{sid}",
                {"permissions": str(DEFAULT_EVERYONE & ~P.VIEW_CHANNEL)},
            )
            gone = {(await gw.dispatch("CHANNEL_DELETE"))["d"]["id"] for _ in range(3)}
            assert {public, xid} <= gone
            await api(owner, "PATCH", f"/servers/{sid}/roles/{staff}", {"permissions": VIEW})
            await api(owner, "PUT", f"/servers/{sid}/members/{outsider.user_id}/roles/{staff}")
            back = {(await gw.dispatch("CHANNEL_CREATE"))["d"]["id"] for _ in range(3)}
            assert {public, xid} <= back
            await api(owner, "DELETE", f"/servers/{sid}/members/{outsider.user_id}/roles/{staff}")
            assert {(await gw.dispatch("CHANNEL_DELETE"))["d"]["id"] for _ in range(3)} == back
            # The insider still hears the channel; once they have, the outsider would have too.
            async with open_gateway(gateway_server.ws_url) as seer:
                await seer.identify(insider.token)
                last = await api(owner, "POST", f"/channels/{public}/messages", {"content": "z"})
                await until(seer, "MESSAGE_CREATE", last["id"])
            await hears_no_message(gw)


async def test_a_channels_audience_follows_sessions_and_joins_between_its_events(
    gateway_server: RunningServer,
) -> None:
    # The hub keeps a channel's audience between events (relay.gateway.hub); each step here
    # changes who hears the channel without touching permissions, after an event was sent.
    owner, insider, _outsider, sid, public, _ = await world(gateway_server)
    newcomer = await new_member(gateway_server, "newcomer")
    with trio.fail_after(15):
        async with (
            open_gateway(gateway_server.ws_url) as first,
            open_gateway(gateway_server.ws_url) as late,
            open_gateway(gateway_server.ws_url) as joiner,
        ):
            await first.identify(insider.token)
            await joiner.identify(newcomer.token)
            one = await api(owner, "POST", f"/channels/{public}/messages", {"content": "1"})
            await until(first, "MESSAGE_CREATE", one["id"])

            await late.identify(insider.token)  # a second session of a member
            two = await api(owner, "POST", f"/channels/{public}/messages", {"content": "2"})
            await until(late, "MESSAGE_CREATE", two["id"])

            await join(owner, [newcomer], sid)  # an online user joins the server
            three = await api(owner, "POST", f"/channels/{public}/messages", {"content": "3"})
            await until(joiner, "MESSAGE_CREATE", three["id"])
            dm = await api(owner, "POST", "/users/@me/channels", {"recipient_id": newcomer.user_id})

            await api(owner, "DELETE", f"/servers/{sid}/members/{newcomer.user_id}")  # kicked
            four = await api(owner, "POST", f"/channels/{public}/messages", {"content": "4"})
            await until(first, "MESSAGE_CREATE", four["id"])
            await hears_no_message(joiner)

            # A DM reaches its recipients' sessions, whatever servers they are in (none now).
            five = await api(owner, "POST", f"/channels/{dm['id']}/messages", {"content": "5"})
            await until(joiner, "MESSAGE_CREATE", five["id"])
            async with open_gateway(gateway_server.ws_url) as again:
                await again.identify(newcomer.token)
                six = await api(owner, "POST", f"/channels/{dm['id']}/messages", {"content": "6"})
                await until(again, "MESSAGE_CREATE", six["id"])
