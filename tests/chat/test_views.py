"""The gateway's permission cache: loads once, answers from memory, and never keeps a snapshot
that a change overtook while it was being read."""

from __future__ import annotations

import trio
import trio.testing

from relay.chat.views import Views
from relay.permissions import ChannelNode, Overwrite, P, Role, ServerPerms
from relay.storage.audience import ServerSnapshot

SERVER, OWNER, USER, CHANNEL = 1, 10, 20, 30


def snapshot(hidden: bool) -> ServerSnapshot:
    deny = int(P.VIEW_CHANNEL) if hidden else 0
    channel = ChannelNode(CHANNEL, None, False, (Overwrite(SERVER, "role", 0, deny),))
    server = ServerPerms(
        SERVER, OWNER, {SERVER: Role(SERVER, int(P.VIEW_CHANNEL), 0)}, {CHANNEL: channel}
    )
    return ServerSnapshot(server, {})


async def test_loads_once_then_answers_from_memory() -> None:
    loads: list[int] = []

    async def load(server_id: int) -> ServerSnapshot:
        loads.append(server_id)
        return snapshot(hidden=False)

    views = Views(load)
    first = await views.get(SERVER)
    assert first is not None
    assert first.can_view(USER, CHANNEL)
    assert await views.get(SERVER) is first
    assert loads == [SERVER]
    views.invalidate(SERVER)
    assert await views.get(SERVER) is not first
    assert loads == [SERVER, SERVER]


async def test_a_load_overtaken_by_a_change_is_read_again() -> None:
    hidden = False
    reading = trio.Event()
    proceed = trio.Event()

    async def load(server_id: int) -> ServerSnapshot:
        taken = snapshot(hidden)  # what the database said when the read started
        reading.set()
        await proceed.wait()
        return taken

    views = Views(load)
    async with trio.open_nursery() as nursery:
        results: list[bool] = []

        async def get() -> None:
            view = await views.get(SERVER)
            assert view is not None
            results.append(view.can_view(USER, CHANNEL))

        nursery.start_soon(get)
        await reading.wait()
        hidden = True  # a change commits while the read is in flight...
        views.invalidate(SERVER)  # ...and invalidates, as the REST routes do
        proceed.set()
    assert results == [False]  # the stale snapshot (visible) was thrown away
    assert views.loads == 2


async def test_concurrent_callers_share_one_load() -> None:
    release = trio.Event()

    async def load(server_id: int) -> ServerSnapshot:
        await release.wait()
        return snapshot(hidden=False)

    views = Views(load)
    got: list[object] = []

    async def get() -> None:
        got.append(await views.get(SERVER))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert views.loads == 1
    assert len({id(view) for view in got}) == 1


async def test_a_thread_is_seen_by_who_sees_its_parent_and_left_out_of_diffs() -> None:
    thread = 40
    for hidden in (False, True):
        base = snapshot(hidden)
        channels = dict(base.server.channels)
        # Its own overwrite would show it: it must not count.
        allow = (Overwrite(USER, "member", int(P.VIEW_CHANNEL), 0),)
        channels[thread] = ChannelNode(thread, CHANNEL, False, allow, thread=True)
        server = ServerPerms(SERVER, OWNER, base.server.roles, channels)

        async def load(server_id: int, server: ServerPerms = server) -> ServerSnapshot:
            return ServerSnapshot(server, {})

        view = await Views(load).get(SERVER)
        assert view is not None
        assert view.has_channel(thread)
        assert view.can_view(USER, thread) is not hidden
        assert view.visible(USER) == (set() if hidden else {CHANNEL})
