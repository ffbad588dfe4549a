"""Every shell block of README.md and docs/**/*.md is run here as written, or listed in NOT_RUN
with the reason and the test that covers its commands instead; a new block fails
`test_every_shell_block_is_run_or_listed` until someone decides.

How a block runs (tests/docs/shellblocks.py): `bash -e -o pipefail`, fed the block's text as it
goes, in a session of its own; a command that runs until stopped (`relay serve`, `rooms tail`)
gets Ctrl-C once the test has checked what it promises. What the test gives a block, as a
reader's shell would have it, and nothing more:
- the environment: the venv's bin on PATH, RELAY_DATA_DIR (a temporary directory) and where a
  block does not name the server's address, RELAY_URL / RELAY_REALTIME_URL or port settings for
  the test's server; the variables a block's prose asks the reader for (PASSWORD,
  RELAY_USERNAME / RELAY_PASSWORD);
- a terminal (a pty) where a command asks for a password on one;
- the values of SUBSTITUTIONS, each taken from an earlier command's real output (or the real
  resource it names), for the placeholders the docs write.
Where a block writes 127.0.0.1:8080 or :9464 itself, the server listens there: only those
blocks do, under a lock that makes test runs on this machine take turns (the other ports are
free ones, given by settings, so nothing else collides). A second address for the same block
would mean editing the block, and a network namespace is not available on every CI machine.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from relay.client import RelayClient
from relay.config import load_settings
from tests.conftest import settings_for, start_server
from tests.docs.shellblocks import (
    BIN,
    ROOT,
    bash,
    block,
    blocks_in,
    fixed_ports_lock,
    group_environ,
    reader_env,
    shell_blocks,
    split_after,
    substitute,
)
from tests.realservers import REQUIRED, free_port, postgres_server

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tests.conftest import RunningServer

README_SETUP = "README.md: scripts/serve"
API_DOCS = (
    "docs/api.md: curl -s http://127.0.0.1:8080/v1/api/openapi.json | python3 -m json.tool | less"
)
BENCH = "docs/benchmarks.md: just bench"
CLI_ADMIN = 'docs/cli.md: relay user create alice --display-name "Alice"'
CLI_ROOMS = "docs/cli.md: relay rooms list"
CLI_JUST = 'docs/cli.md: export PATH="$PWD/.venv/bin:$PATH"'
CLUSTER = "docs/cluster.md: just cluster"
CLUSTER_ENV = "docs/cluster.md: RELAY_DATABASE='postgresql://relay:change-me@10.0.0.20:5432/relay'"
DEPLOY = "docs/deploy.md: python3 -m venv /opt/relay"
DEPLOY_NGINX = "docs/deploy.md: cp docs/deploy/nginx.conf /etc/nginx/conf.d/relay.conf"
METRICS = "docs/metrics.md: RELAY_METRICS_PORT=9464 relay serve"
PG_ROLE = (
    "docs/postgresql.md: sudo -u postgres psql -c \"CREATE ROLE relay LOGIN PASSWORD 'change-me'\""
)
PG_SERVE = (
    "docs/postgresql.md: export RELAY_DATABASE='postgresql://relay:change-me@127.0.0.1:5432/relay'"
)
PG_COPY = "docs/postgresql.md: relay db migrate"
PG_DUMP = (
    "docs/postgresql.md: pg_dump --format=custom --file=relay-2026-12-06.dump"
    " 'postgresql://relay:change-me@127.0.0.1/relay'"
)
PG_RESTORE = (
    'docs/postgresql.md: sudo -u postgres psql -c "CREATE DATABASE relay_restored OWNER relay'
    " ENCODING 'UTF8' TEMPLATE template0\""
)
VOICE = (
    "docs/voice.md: ffmpeg -i music.mp3 -ac 1 -ar 48000 -c:a libopus -frame_duration 20 hello.opus"
)

# Block -> the test here that runs it.
RUN = {
    CLI_ADMIN: "test_the_cli_pages_admin_block_then_voice",
    CLI_ROOMS: "test_the_cli_pages_rooms_block",
    VOICE: "test_the_cli_pages_admin_block_then_voice",
    CLI_JUST: "test_the_just_session",
    API_DOCS: "test_the_blocks_on_the_fixed_ports",
    METRICS: "test_the_blocks_on_the_fixed_ports",
    CLUSTER_ENV: "test_the_cluster_nodes_environment_file",
    PG_ROLE: "test_the_postgresql_page",
    PG_COPY: "test_the_postgresql_page",
    PG_SERVE: "test_the_postgresql_page",
    PG_DUMP: "test_the_postgresql_page",
    PG_RESTORE: "test_the_postgresql_page",
}

# Block -> (why it is not run here, the test that covers its commands instead).
NOT_RUN = {
    README_SETUP: (
        "its second line, scripts/test, is the whole suite this test is part of (.ci/run runs"
        " it); its first runs the server until Ctrl-C",
        "tests/scripts/test_serve.py::test_serve_passes_its_arguments_to_relay_serve",
    ),
    BENCH: (
        "the first two take about 3 and 12 minutes, and benchmarks are not tests",
        "tests/scripts/test_bench.py::test_quick_run_writes_the_json",  # its third line
    ),
    CLUSTER: (
        "Redis, PostgreSQL, three nodes and nginx, until Ctrl-C",
        "tests/cluster/test_three_nodes.py::test_just_cluster_runs_the_script",
    ),
    DEPLOY: (
        "installs into /opt and /etc and starts a systemd service: a host's, not a CI machine's",
        "tests/deploy/test_systemd.py::test_systemd_accepts_the_unit",
    ),
    DEPLOY_NGINX: (
        "the host's nginx, a real domain name and its certificates",
        "tests/deploy/test_nginx.py::test_rest_and_the_gateway_through_nginx",
    ),
}

# Block -> placeholder -> what the test puts there (values from earlier output or resources).
SUBSTITUTIONS: dict[str, dict[str, str]] = {
    CLI_ROOMS: {
        "ROOM_ID": "the room id `relay rooms create` printed",
        "SECRET": "the secret it printed",
    },
    CLI_JUST: {
        "1229...": "the room id `just room-create` printed",
        "gQ73idY1...": "the secret it printed",
    },
    VOICE: {
        "1229...": "the server id `relay server create` printed (docs/cli.md, run before)",
        "1230...": "that server's General voice channel, looked up over REST",
    },
    CLUSTER_ENV: {"<64 hex digits>": "a random media key"},
    # The docs' PostgreSQL listens on 5432; the test's private one on a free port.
    PG_SERVE: {"127.0.0.1:5432": "127.0.0.1:PORT of the test's PostgreSQL"},
    PG_COPY: {"127.0.0.1:5432": "127.0.0.1:PORT"},
    PG_DUMP: {"@127.0.0.1/": "@127.0.0.1:PORT/"},
    PG_RESTORE: {"@127.0.0.1/": "@127.0.0.1:PORT/"},
}
PASSWORD = "a long password"  # what docs/cli.md's session and docs/voice.md log in with


def filled(block_id: str, values: Mapping[str, str], text: str | None = None) -> str:
    """The block (or the `text` of it still to run) with exactly its SUBSTITUTIONS placeholders
    replaced by `values`."""
    assert set(values) == set(SUBSTITUTIONS.get(block_id, {})), block_id
    return substitute(block(block_id).body if text is None else text, values)


# -- the decision for every block -----------------------------------------------------------------


def test_every_shell_block_is_run_or_listed() -> None:
    ids = [b.id for b in shell_blocks()]
    assert len(ids) == len(set(ids)), "two blocks start alike: make their first lines differ"
    assert set(RUN).isdisjoint(NOT_RUN)
    assert sorted(ids) == sorted({*RUN, *NOT_RUN}), "a block is neither run nor listed"
    assert set(SUBSTITUTIONS) <= set(RUN)
    here = (ROOT / "tests" / "docs" / "test_shell.py").read_text()
    for test in set(RUN.values()):
        assert f"def {test}(" in here
    for _, covered_by in NOT_RUN.values():
        path, _, name = covered_by.partition("::")
        assert re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.MULTILINE)


def test_every_kind_of_shell_fence_is_found() -> None:
    page = (
        "# T\n\n```console\n$ relay --version\n```\n\n"
        "```python\nx = 1\n```\n\n```bash\nls  # all\n```\n"
    )
    found = blocks_in("docs/t.md", page)
    assert [(b.id, b.line) for b in found] == [
        ("docs/t.md: $ relay --version", 3),
        ("docs/t.md: ls", 11),
    ]


async def test_a_line_read_in_two_pieces_is_expected_whole(tmp_path: Path) -> None:
    async with bash(tmp_path, reader_env()) as shell:
        shell.feed("printf '1229 gQ73'; sleep 0.3; printf 'idY1\\n'\n")
        created = await shell.expect(r"^(\d+) (\S+)$")
        assert created[2] == "gQ73idY1"
        await shell.finished()


# -- blocks against one server: docs/cli.md's commands, then docs/voice.md ------------------------


async def answer_password_prompts(terminal: trio.lowlevel.FdStream) -> None:
    """Type PASSWORD at each prompt `relay user create` / `set-password` shows on the terminal."""
    seen, answered = "", 0
    async for chunk in terminal:
        seen += chunk.decode(errors="replace")
        prompts = len(re.findall(r"(?:password|again): ", seen))
        for _ in range(answered, prompts):
            await terminal.send_all(f"{PASSWORD}\n".encode())
        answered = prompts


async def voice_channel(server: RunningServer, server_id: str) -> str:
    async with server.client() as alice:
        await alice.login("alice", PASSWORD)
        channels = await alice.call("GET", f"/v1/api/servers/{server_id}/channels")
    [voice] = [c["id"] for c in channels if c["type"] == "voice"]
    return str(voice)


async def test_the_cli_pages_admin_block_then_voice(nursery: trio.Nursery, tmp_path: Path) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    env = reader_env(
        RELAY_DATA_DIR=running.settings.data_dir,
        RELAY_URL=running.url,
        RELAY_REALTIME_URL=running.ws_url,
        PASSWORD="bobs long password",  # `echo "$PASSWORD" | relay user create bob`
    )
    # Admin commands: alice's password typed on a terminal, as the comments describe.
    master, terminal = os.openpty()
    try:
        async with (
            trio.lowlevel.FdStream(master) as typist,
            bash(tmp_path, env, stdin=terminal) as shell,
            trio.open_nursery() as typing,
        ):
            typing.start_soon(answer_password_prompts, typist)
            shell.feed(block(CLI_ADMIN).body)
            out = (await shell.finished()).splitlines()
            typing.cancel_scope.cancel()
    finally:
        os.close(terminal)
    alice_id, bob_id = out[0], out[1]
    assert alice_id.isdigit()  # "prints the id"
    assert bob_id.isdigit()
    # "ID USERNAME DISPLAY NAME CREATED DISABLED LOGINS"
    assert out[2].split() == ["ID", "USERNAME", "DISPLAY", "NAME", "CREATED", "DISABLED", "LOGINS"]
    assert [line.split()[:3] for line in out[3:5]] == [
        [alice_id, "alice", "Alice"],
        [bob_id, "bob", "-"],
    ]
    assert out[5].startswith("alice: password changed")
    assert out[6].startswith("alice: disabled")
    assert out[7] == "alice: enabled"
    server_id = out[8]  # "prints the server's id"
    assert server_id.isdigit()
    assert out[9].split() == ["ID", "NAME", "OWNER", "MEMBERS", "PUBLIC", "CREATED"]
    assert out[10].split()[:3] == [server_id, "Home", "alice"]
    assert re.fullmatch(r"[\w-]{6,}", out[11])  # "prints the code"
    assert len(out) == 12

    # docs/voice.md, as alice (the block exports her name and password) in the server made
    # above. `just` needs the checkout, and the block writes files: it runs in a directory of
    # its own inside the checkout (under the git-ignored .pytest_cache).
    if shutil.which("ffmpeg") is None:  # .ci/run installs it: there, its absence fails
        await shutdown()
        missing = "ffmpeg is not installed (apt-get install ffmpeg)"
        (pytest.fail if REQUIRED else pytest.skip)(missing)
    values = {"1229...": server_id, "1230...": await voice_channel(running, server_id)}
    scratch = ROOT / ".pytest_cache" / "docs-shell"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as workdir:
        # The reader's music.mp3: 0.3 s of a tone (the comment's 150 frames are its 3 s).
        tone = ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=0.3"]
        await trio.run_process([*tone, f"{workdir}/music.mp3"])
        async with bash(Path(workdir), env) as shell:
            shell.feed(filled(VOICE, values))
            out = (await shell.finished()).splitlines()
    # "played 150 frames (3.00 s) in 1230..."
    played = [re.fullmatch(r"played (\d+) frames \((\d+\.\d\d) s\) in (\d+)", line) for line in out]
    assert len(played) == 2, out
    for found in played:
        assert found is not None, out
        assert 10 <= int(found[1]) <= 25, out  # 0.3 s, give or take the encoder's padding
        assert found[2] == f"{int(found[1]) * 20 / 1000:.2f}"
        assert found[3] == values["1230..."]
    await shutdown()


async def test_the_cli_pages_rooms_block(nursery: trio.Nursery, tmp_path: Path) -> None:
    """On a server of its own (the test above is long enough), logged in as the reader's
    RELAY_USERNAME / RELAY_PASSWORD: an account made over REST."""
    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    await running.client().register("alice", PASSWORD)
    env = reader_env(
        RELAY_DATA_DIR=running.settings.data_dir,
        RELAY_URL=running.url,
        RELAY_REALTIME_URL=running.ws_url,
        RELAY_USERNAME="alice",
        RELAY_PASSWORD=PASSWORD,
    )
    async with bash(tmp_path, env) as shell:
        head, rest = split_after(block(CLI_ROOMS).body, "relay rooms create")
        shell.feed(head)
        created = await shell.expect(r"^(\d+) (\S+)$")  # "prints: ROOM_ID SECRET"
        # "the public rooms, then: 2 rooms (1 private, not listed), 3 of 10000 clients"
        listed = r"ID .*\n0 rooms \(0 private, not listed\), 0 of \d+ clients\n"
        assert re.match(listed, shell.stdout)
        shell.feed(filled(CLI_ROOMS, {"ROOM_ID": created[1], "SECRET": created[2]}, rest))
        await shell.expect(r'^\{"type":"connected"')
        shell.interrupt()  # Ctrl-C ends the tail; the room is then closed
        out = (await shell.finished()).splitlines()
    assert out[-1] == f"closed room {created[1]}"

    await shutdown()


# -- docs/cli.md's `just` session, against a fresh server (it creates alice) ----------------------


async def test_the_just_session(nursery: trio.Nursery, tmp_path: Path) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    env = reader_env(
        RELAY_DATA_DIR=running.settings.data_dir,
        RELAY_URL=running.url,
        RELAY_REALTIME_URL=running.ws_url,
    )
    env["PATH"] = os.environ.get("PATH", "")  # the block puts the venv's bin there itself
    async with bash(ROOT, env) as shell:  # "$PWD/.venv/bin": run from the checkout
        head, rest = split_after(block(CLI_JUST).body, "just room-create")
        shell.feed(head)
        created = await shell.expect(r"^(\d+) (\S+)$")  # "1229... gQ73idY1..."
        assert re.fullmatch(r"\d+\n", shell.stdout[: created.start()])  # `just user`: alice's id
        rest = filled(CLI_JUST, {"1229...": created[1], "gQ73idY1...": created[2]}, rest)
        # The line "in a third terminal" runs in a shell of its own, at the same time, after
        # the session's exports (which a reader types in each terminal).
        third = [line for line in rest.splitlines(True) if "# in a third terminal" in line]
        exports = [line for line in head.splitlines(True) if line.startswith("export ")]
        assert len(third) == 1
        assert exports
        async with bash(ROOT, env) as tail:
            tail.feed("".join([*exports, *third]))
            await tail.expect(r'^\{"type":"connected"')
            shell.feed("".join(line for line in rest.splitlines(True) if line not in third))
            out = (await shell.finished()).splitlines()
            tail_out = (await tail.finished()).splitlines()  # ended by `just room-close`
            assert tail.stderr == "relay: room closed\n"
    assert out[-4].split()[:3] == ["ID", "PROTOCOL", "CLIENTS"]  # `just rooms`
    assert out[-3].split()[:3] == [created[1], "host", "1/4"]  # the tail
    assert out[-2] == "1 room (0 private, not listed), 1 of 10000 clients"
    assert out[-1] == f"closed room {created[1]}"
    # A host room: what the say sent went to the host, the tail.
    assert [json.loads(line) for line in tail_out[1:]] == [
        {"type": "client_joined", "client_id": 2},
        {"type": "host", "from": 2, "data": "hello"},
        {"type": "client_left", "client_id": 2, "reason": "left"},
        {"type": "error", "code": "room_closed", "message": "the room was closed by its creator"},
    ]
    await shutdown()


# -- blocks that write the server's address: on 127.0.0.1:8080 (and :9464), taking turns ---------


def get(url: str, **headers: str) -> httpx.Response | None:
    try:
        return httpx.get(url, headers=headers, timeout=5)
    except httpx.TransportError:
        return None


async def until_answered(url: str, status: int, **headers: str) -> httpx.Response:
    with trio.fail_after(30):
        while True:
            answer = await trio.to_thread.run_sync(lambda: get(url, **headers))
            if answer is not None and answer.status_code == status:
                return answer
            await trio.sleep(0.1)


async def test_the_blocks_on_the_fixed_ports(nursery: trio.Nursery, tmp_path: Path) -> None:
    # Only the ports a block writes are fixed: the realtime, byte relay and voice ones are free.
    free = {"RELAY_REALTIME_PORT": "0", "RELAY_RELAY_PORT": "off", "RELAY_VOICE_UDP_PORT": "0"}
    env = reader_env(RELAY_DATA_DIR=str(tmp_path / "data"), **free)
    async with fixed_ports_lock():
        settings = settings_for(tmp_path, http_port=8080)
        _, shutdown = await start_server(nursery, settings)
        async with bash(tmp_path, env) as shell:
            shell.feed(block(API_DOCS).body)
            document = json.loads(await shell.finished())
        assert document["openapi"].startswith("3.")
        assert "/v1/api/gateway" in document["paths"]
        page = await until_answered("http://127.0.0.1:8080/v1/api/docs", 200)  # "or open ..."
        assert page.headers["content-type"].startswith("text/html")
        await shutdown()

        # docs/metrics.md: each `relay serve` runs until Ctrl-C, once its promised URL answers.
        async with bash(tmp_path, env) as shell:
            shell.feed(block(METRICS).body)
            scraped = await until_answered("http://127.0.0.1:9464/metrics", 200)
            assert "# TYPE " in scraped.text
            shell.interrupt()
            await until_answered("http://127.0.0.1:8080/metrics", 401)  # the token is needed
            token = group_environ(shell.process.pid, "serve")["RELAY_METRICS_TOKEN"]
            assert re.fullmatch(r"[0-9a-f]{48}", token)  # `openssl rand -hex 24`
            authorized = {"Authorization": f"Bearer {token}"}
            scraped = await until_answered("http://127.0.0.1:8080/metrics", 200, **authorized)
            assert "# TYPE " in scraped.text
            shell.interrupt()
            await shell.finished()


# -- docs/postgresql.md, on a PostgreSQL of the test's own ---------------------------------------

# On a Debian host `sudo -u postgres psql` is psql as the superuser `postgres` over the local
# socket. The test's PostgreSQL (tests/realservers.py) has that superuser too, and is reached
# over TCP on a free port: this `sudo`, first on the block's PATH, maps exactly that command
# onto it (the SQL untouched) and refuses anything else.
SUDO_SHIM = """#!/bin/sh
[ "$1 $2 $3" = "-u postgres psql" ] || { echo "sudo (tests/docs): $*: not mapped" >&2; exit 1; }
shift 3
exec PSQL -d "$DOCS_POSTGRES_SUPERUSER" "$@"
"""


async def test_the_postgresql_page(tmp_path: Path) -> None:
    with postgres_server(superuser="postgres") as pg:
        shims = tmp_path / "shims"
        shims.mkdir()
        (shims / "sudo").write_text(SUDO_SHIM.replace("PSQL", shutil.which("psql") or "psql"))
        (shims / "sudo").chmod(0o755)
        http_port = free_port()
        env = reader_env(
            RELAY_DATA_DIR=str(tmp_path / "data"),
            RELAY_HTTP_PORT=str(http_port),
            RELAY_REALTIME_PORT=str(free_port()),
            RELAY_RELAY_PORT="off",
            RELAY_VOICE_UDP_PORT="0",
            DOCS_POSTGRES_SUPERUSER=pg.dsn(),
        )
        env["PATH"] = f"{shims}{os.pathsep}{env['PATH']}"
        at_5432 = {"127.0.0.1:5432": f"127.0.0.1:{pg.port}"}
        at_default = {"@127.0.0.1/": f"@127.0.0.1:{pg.port}/"}
        # The SQLite server to move: one account, made as docs/cli.md makes them.
        made = await trio.run_process(
            [str(BIN / "relay"), "user", "create", "alice"],
            env=env,
            stdin=f"{PASSWORD}\n".encode(),
            capture_stdout=True,
        )
        alice_id = made.stdout.decode().strip()

        async def run(block_id: str, values: Mapping[str, str] | None = None) -> str:
            async with bash(tmp_path, env) as shell:
                shell.feed(filled(block_id, values or {}))
                return await shell.finished()

        # In an order that runs each block once: the role and the database; the copy from
        # SQLite into that empty database; then migrating and serving it; a dump; a restore.
        await run(PG_ROLE)
        copied = (await run(PG_COPY, at_5432)).splitlines()
        assert re.fullmatch(r"\S+: schema version \d+", copied[0])  # the SQLite file
        assert "users: 1 rows" in copied
        assert copied[-1].endswith("every table's row count matches")

        async with bash(tmp_path, env) as shell:
            shell.feed(filled(PG_SERVE, at_5432))
            await shell.expect(r"^postgresql: schema version \d+$")  # "prints: ..."
            await until_answered(f"http://127.0.0.1:{http_port}/healthz", 200)
            async with RelayClient(f"http://127.0.0.1:{http_port}") as client:
                logged_in = await client.login("alice", PASSWORD)  # the copied account
            assert str(logged_in["user"]["id"]) == alice_id
            shell.interrupt()
            await shell.finished()

        await run(PG_DUMP, at_default)
        assert (tmp_path / "relay-2026-12-06.dump").stat().st_size > 0
        await run(PG_RESTORE, at_default)
        restored = pg.psql("SELECT id, username FROM users", database="relay_restored")
        assert restored == f"{alice_id}|alice\n"


# -- docs/cluster.md's environment file: the same to bash and to systemd, and valid settings -----


def systemd_environment(text: str) -> dict[str, str]:
    """What systemd's EnvironmentFile= makes of `text`: `#` or `;` starts a comment only at the
    start of a line, a value is the rest of its line (quotes around it removed)."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line and line[0] not in "#;":
            name, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[name.strip()] = value
    return env


def test_the_cluster_nodes_environment_file(tmp_path: Path) -> None:
    text = filled(CLUSTER_ENV, {"<64 hex digits>": secrets.token_hex(32)})
    # As a shell reads it (-a exports each assignment; `env -0` after it reads them back) ...
    ran = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-a", "-c", f"{text}\nenv -0"],
        cwd=tmp_path,
        env=reader_env(),
        capture_output=True,
        check=True,
        timeout=30,
    )
    shell = dict(v.split("=", 1) for v in ran.stdout.decode().split("\0") if v.startswith("RELAY_"))
    # ... and as systemd does: the same values (a comment after a value would differ here).
    assert shell == systemd_environment(text)
    settings = load_settings(shell)
    assert (settings.node_id, settings.data_dir) == ("node1", "/srv/relay-shared")
