"""`relay backup`, `relay restore` and `relay check`, run as the real CLI against real data
directories and a real server: a backup taken under write load restores every acknowledged
message, and each refusal changes nothing."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
from nacl.signing import SigningKey

from relay.client import open_gateway
from relay.storage.schema import LATEST_VERSION, migrate
from relay.storage.sqlite.backup import copy_online
from relay.storage.sqlite.db import connect
from tests.conftest import settings_for, start_server

if TYPE_CHECKING:
    from relay.client import RelayClient
    from tests.conftest import RunningServer

BIN = Path(sys.executable).parent
PAD = " ".join(f"word{i}" for i in range(150))  # ~1.2 KB a message: the database grows quickly


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def relay(*args: str, data_dir: Path, **env: str) -> Ran:
    """Run the real `relay` command with RELAY_DATA_DIR=data_dir."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    environ.update(RELAY_DATA_DIR=str(data_dir), **env)
    with trio.fail_after(30):
        result = await trio.run_process(
            [str(BIN / "relay"), *args],
            env=environ,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return Ran(result.returncode, result.stdout.decode(), result.stderr.decode())


def make_database(path: Path, username: str) -> None:
    """A Relay database (this schema) with one user, as a stopped server leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = connect(path)
    migrate(db)
    db.execute("INSERT INTO users (username, created_at, updated_at) VALUES (?, 1, 1)", [username])
    db.conn.commit()
    db.close()


def usernames(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        names = [row[0] for row in conn.execute("SELECT username FROM users ORDER BY id")]
    conn.close()
    return names


def names_in(folder: Path, pattern: str = "*") -> list[str]:
    return sorted(p.name for p in folder.glob(pattern))


def state_of(folder: Path) -> dict[str, str]:
    """Every file in `folder` but the lock file (hidden ones too), with a hash of its content."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.iterdir()
        if p.suffix != ".lock"
    }


@pytest.fixture
def backup_file(tmp_path: Path) -> Path:
    """A good backup, of a database holding the user 'zebra_writer'."""
    make_database(tmp_path / "source" / "relay.db", "zebra_writer")
    target = tmp_path / "backup.db"
    copy_online(tmp_path / "source" / "relay.db", target)
    return target


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A stopped server's data directory, its database holding the user 'old_owner'."""
    make_database(tmp_path / "data" / "relay.db", "old_owner")
    return tmp_path / "data"


# -- a backup under load -------------------------------------------------------------------------


@dataclass
class Writer:
    """One sender: its messages are '<name>-<n> ...' for n = 0, 1, ...; `acked` of them have
    been acknowledged (each is sent only after the one before it was)."""

    name: str
    acked: int = 0

    def content(self) -> str:
        return f"{self.name}-{self.acked:05d} {PAD}"


class Load:
    def __init__(self, writers: list[Writer]) -> None:
        self.writers = writers
        self.stop = trio.Event()
        self._progress = trio.Event()

    def acked(self) -> dict[str, int]:
        return {w.name: w.acked for w in self.writers}

    def total(self) -> int:
        return sum(w.acked for w in self.writers)

    def tick(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def until(self, total: int) -> None:
        while self.total() < total:
            await self._progress.wait()

    async def by_rest(self, client: RelayClient, channel_id: str, w: Writer) -> None:
        while not self.stop.is_set():
            path = f"/v1/api/channels/{channel_id}/messages"
            await client.call("POST", path, {"content": w.content()})
            w.acked += 1
            self.tick()

    async def by_gateway(self, ws_url: str, token: str, channel_id: str, w: Writer) -> None:
        async with open_gateway(ws_url) as gateway:
            await gateway.identify(token)
            while not self.stop.is_set():
                nonce = f"{w.name}-{w.acked}"
                body = {"channel_id": channel_id, "content": w.content(), "nonce": nonce}
                await gateway.send(12, body)
                while (frame := await gateway.receive())["op"] != 13:
                    pass  # MESSAGE_CREATEs of the other writers' posts
                assert frame["d"]["nonce"] == nonce, frame
                assert "error" not in frame["d"], frame
                w.acked += 1
                self.tick()


async def owner_of(running: RunningServer, key: SigningKey) -> RelayClient:
    client = running.client()
    await client.login_with_key("owner", key)
    return client


async def all_messages(client: RelayClient, channel_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        query = f"?limit=100&before={found[0]['id']}" if found else "?limit=100"
        page = await client.call("GET", f"/v1/api/channels/{channel_id}/messages{query}")
        if not page:
            return found
        found = page + found


async def test_a_backup_under_write_load_restores_every_acknowledged_message(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Three REST senders and one gateway sender post without pause while `relay backup`
    copies the live database; the copy, restored into another data directory and served, holds
    every message acknowledged before the backup started, and of each sender's messages an
    unbroken run from its first: one consistent moment."""
    running, shutdown = await start_server(nursery, settings_for(tmp_path / "a"))
    key = SigningKey.generate()
    owner = running.client()
    await owner.register("owner", public_key=bytes(key.verify_key))
    await owner.login_with_key("owner", key)
    assert owner.access_token is not None
    guild = await owner.call("POST", "/v1/api/servers", {"name": "Backed up"})
    channel = await owner.call(
        "POST", f"/v1/api/servers/{guild['id']}/channels", {"name": "load", "type": "text"}
    )
    writers = [Writer("rest0"), Writer("rest1"), Writer("rest2"), Writer("gateway")]
    load = Load(writers)
    backup_path = tmp_path / "relay-backup.db"

    async with trio.open_nursery() as senders:
        for w in writers[:3]:
            senders.start_soon(load.by_rest, owner, channel["id"], w)
        senders.start_soon(
            load.by_gateway, running.ws_url, owner.access_token, channel["id"], writers[3]
        )
        await load.until(200)  # ~300 KB of messages: a copy of many steps
        before = load.acked()
        made = await relay("backup", str(backup_path), data_dir=tmp_path / "a" / "data")
        during = load.acked()
        load.stop.set()
    after = load.acked()
    await shutdown()

    assert made.code == 0, made.err
    assert f"schema version {LATEST_VERSION}, integrity ok" in made.out
    assert sum(during.values()) > sum(before.values()), "no message was sent during the backup"
    assert not names_in(tmp_path, ".*.partial")

    restored_dir = tmp_path / "b" / "data"
    back = await relay("restore", str(backup_path), data_dir=restored_dir)
    assert back.code == 0, back.err
    assert "kept the old database" not in back.out  # there was none
    checked = await relay("check", data_dir=restored_dir)
    assert checked.code == 0, checked.out
    assert "integrity: ok" in checked.out

    running_b, shutdown_b = await start_server(nursery, settings_for(tmp_path / "b"))
    messages = await all_messages(await owner_of(running_b, key), channel["id"])
    await shutdown_b()
    sent: dict[str, list[int]] = {w.name: [] for w in writers}
    for message in messages:
        name, n = message["content"].split(" ", 1)[0].rsplit("-", 1)
        sent[name].append(int(n))
    for w in writers:
        kept = sorted(sent[w.name])
        assert kept == list(range(len(kept))), f"{w.name}: a gap or a duplicate"
        assert before[w.name] <= len(kept) <= after[w.name], (w.name, before, len(kept), after)


# -- backup's refusals ---------------------------------------------------------------------------


async def test_backup_refuses_an_existing_file_unless_forced(
    data_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "exists.db"
    target.write_bytes(b"precious")

    refused = await relay("backup", str(target), data_dir=data_dir)

    assert refused.code == 1
    assert refused.err == f"relay: backup: {target} exists (--force replaces it)\n"
    assert target.read_bytes() == b"precious"
    assert not names_in(tmp_path, ".exists.db.*")  # no temporary file left behind

    forced = await relay("backup", "--force", str(target), data_dir=data_dir)

    assert forced.code == 0, forced.err
    assert usernames(target) == ["old_owner"]


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("data/relay.db", "data/relay.db is the server's own database"),
        ("missing/x.db", "no such directory: missing"),
        ("data", "data is a directory: name the backup file"),
    ],
)
async def test_backup_refuses_a_target_it_cannot_write(
    data_dir: Path, tmp_path: Path, target: str, error: str
) -> None:
    before = state_of(data_dir)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    result = await trio.run_process(
        [str(BIN / "relay"), "backup", target],
        env={**environ, "RELAY_DATA_DIR": "data"},
        cwd=tmp_path,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.decode() == f"relay: backup: {error}\n"
    assert state_of(data_dir) == before


async def test_backup_without_a_database_says_so(tmp_path: Path) -> None:
    result = await relay("backup", str(tmp_path / "b.db"), data_dir=tmp_path / "none")
    assert result.code == 1
    assert result.err == f"relay: backup: no database at {tmp_path / 'none' / 'relay.db'}\n"


async def test_backup_progress_when_asked(data_dir: Path, tmp_path: Path) -> None:
    """--progress shows pages copied / total even off a terminal (here, a pipe)."""
    result = await relay("backup", "--progress", str(tmp_path / "b.db"), data_dir=data_dir)
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert lines[0].startswith("backup: 0/")
    assert lines[0].endswith(" pages (0%)")
    assert lines[-2].endswith(" pages (100%)")
    assert lines[-1] == "backup: checking the copy's integrity"


# -- restore -------------------------------------------------------------------------------------


async def test_restore_keeps_the_old_database_and_its_wal_aside(
    backup_file: Path, data_dir: Path
) -> None:
    """The old database was left by a crash: commits still in its -wal. The restored database
    must not meet that WAL, and the copy kept aside must still hold those commits, also when
    it is restored in turn."""
    database = data_dir / "relay.db"
    crash = (
        "import os, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute('PRAGMA wal_autocheckpoint = 0')\n"
        'conn.execute("INSERT INTO users (username, created_at, updated_at) '
        "VALUES ('in_the_wal', 1, 1)\")\n"
        "conn.commit()\n"
        "os._exit(0)\n"  # no close, no checkpoint: the commit stays in relay.db-wal
    )
    await trio.run_process([sys.executable, "-c", crash, str(database)])
    assert (data_dir / "relay.db-wal").stat().st_size > 0

    result = await relay("restore", str(backup_file), data_dir=data_dir)

    assert result.code == 0, result.err
    kept_line, restored_line = result.out.splitlines()
    kept = Path(kept_line.removeprefix("kept the old database as "))
    assert kept.parent == data_dir
    assert kept.name.startswith("relay.db.pre-restore-")
    assert restored_line.startswith(f"{database}: restored from {backup_file}")
    assert names_in(data_dir) == sorted(
        ["relay.db", "relay.db.lock", kept.name, f"{kept.name}-wal"]
    )
    assert usernames(database) == ["zebra_writer"]
    assert usernames(kept) == ["old_owner", "in_the_wal"]
    checked = await relay("check", data_dir=data_dir)
    assert checked.code == 0, checked.out

    undone = await relay("restore", "--no-keep", str(kept), data_dir=data_dir)  # and back

    assert undone.code == 0, undone.err
    assert usernames(database) == ["old_owner", "in_the_wal"]  # the WAL's commit came along


async def test_restore_no_keep_removes_the_old_database(backup_file: Path, data_dir: Path) -> None:
    (data_dir / "relay.db-wal").write_bytes(b"stale")  # not a WAL of the new database

    result = await relay("restore", "--no-keep", str(backup_file), data_dir=data_dir)

    assert result.code == 0, result.err
    assert names_in(data_dir) == ["relay.db", "relay.db.lock"]
    assert usernames(data_dir / "relay.db") == ["zebra_writer"]


async def test_restore_refuses_while_the_server_runs(
    nursery: trio.Nursery, tmp_path: Path, backup_file: Path
) -> None:
    running, shutdown = await start_server(nursery, settings_for(tmp_path))
    client = running.client()
    key = SigningKey.generate()
    await client.register("still_here", public_key=bytes(key.verify_key))

    result = await relay("restore", str(backup_file), data_dir=tmp_path / "data")

    assert result.code == 1
    database = tmp_path / "data" / "relay.db"
    assert result.err == (
        f"relay: restore: {database} is in use by process {os.getpid()} "
        "(a running server or a restore): stop the server first\n"
    )
    await client.login_with_key("still_here", key)  # the server's database is untouched
    assert not names_in(tmp_path / "data", "*pre-restore*")
    await shutdown()


def corrupt_a_row(path: Path) -> None:
    """Change one stored username in place: the users table and its unique index disagree."""
    data = bytearray(path.read_bytes())
    at = data.index(b"zebra_writer")
    data[at : at + 5] = b"yebra"
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def not_sqlite(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 a zip file, say")


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (corrupt_a_row, "failed its integrity check: row 1 missing from index users_username"),
        (truncate, "failed its integrity check: database disk image is malformed"),
        (not_sqlite, "is not a Relay backup (not a SQLite database)"),
    ],
)
async def test_restore_refuses_a_damaged_backup(
    backup_file: Path, data_dir: Path, damage: Any, error: str
) -> None:
    damage(backup_file)
    before = state_of(data_dir)

    result = await relay("restore", str(backup_file), data_dir=data_dir)

    assert result.code == 1
    assert result.err.startswith(f"relay: restore: {backup_file} {error}"), result.err
    assert len(result.err.splitlines()) == 1
    assert state_of(data_dir) == before


@pytest.mark.parametrize(
    ("version", "error"),
    [
        (LATEST_VERSION + 1, f"has schema version {LATEST_VERSION + 1}, newer than this relay's"),
        (0, "is not a Relay database (schema version 0)"),
    ],
)
async def test_restore_refuses_a_schema_it_cannot_run(
    backup_file: Path, data_dir: Path, version: int, error: str
) -> None:
    with sqlite3.connect(backup_file) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    before = state_of(data_dir)

    result = await relay("restore", str(backup_file), data_dir=data_dir)

    assert result.code == 1
    assert result.err.startswith(f"relay: restore: {backup_file} {error}"), result.err
    assert state_of(data_dir) == before


async def test_restore_takes_an_older_schema_for_the_server_to_upgrade(
    data_dir: Path, tmp_path: Path
) -> None:
    older = tmp_path / "older.db"
    db = connect(older)
    db.execute("CREATE TABLE placeholder (x INTEGER)")  # not empty: migrate() goes step by step
    migrate(db, target=LATEST_VERSION - 1)
    db.execute("DROP TABLE placeholder")
    db.close()

    result = await relay("restore", str(older), data_dir=data_dir)

    assert result.code == 0, result.err
    assert result.out.splitlines()[-1].endswith(
        f"schema version {LATEST_VERSION - 1}; the server upgrades it to {LATEST_VERSION} at start)"
    )
    checked = await relay("check", data_dir=data_dir)
    assert checked.code == 0, checked.out
    assert f"schema version: ok ({LATEST_VERSION - 1}; the server upgrades" in checked.out


async def test_restore_into_an_empty_data_directory(backup_file: Path, tmp_path: Path) -> None:
    result = await relay("restore", "--progress", str(backup_file), data_dir=tmp_path / "new")

    assert result.code == 0, result.err
    assert result.err.splitlines()[-2].endswith(" pages (100%)")
    assert usernames(tmp_path / "new" / "relay.db") == ["zebra_writer"]


# -- check ---------------------------------------------------------------------------------------


async def test_check_a_sound_database(data_dir: Path) -> None:
    result = await relay("check", data_dir=data_dir)

    assert result.code == 0, result.out
    database = data_dir / "relay.db"
    size_mib = database.stat().st_size / (1024 * 1024)  # grows with the schema's tables
    assert result.out.splitlines() == [
        f"config: ok (defaults and RELAY_* variables; database {database})",
        f"database: ok ({database}, {size_mib:.1f} MiB, not in use)",
        "integrity: ok",
        "foreign keys: ok",
        f"schema version: ok ({LATEST_VERSION})",
    ]


def orphan_key(path: Path) -> None:
    with sqlite3.connect(path) as conn:  # foreign keys are off on a plain connection
        conn.execute(
            "INSERT INTO user_keys (user_id, public_key, created_at) VALUES (999, x'00', 1)"
        )
    conn.close()


def newer_schema(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()


def corrupt_old_owner(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(b"old_owner")
    data[at : at + 3] = b"new"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "failure"),
    [
        (corrupt_old_owner, "integrity: FAILED: row 1 missing from index users_username"),
        (orphan_key, "foreign keys: FAILED: user_keys row 1 refers to a missing users row"),
        (newer_schema, f"schema version: FAILED: {LATEST_VERSION + 1} is newer than this"),
    ],
)
async def test_check_finds_what_is_wrong(data_dir: Path, damage: Any, failure: str) -> None:
    damage(data_dir / "relay.db")

    result = await relay("check", data_dir=data_dir)

    assert result.code == 1
    assert any(line.startswith(failure) for line in result.out.splitlines()), result.out


async def test_check_a_bad_setting_or_no_database(tmp_path: Path) -> None:
    bad = await relay("check", data_dir=tmp_path, RELAY_HTTP_PORT="eighty")
    assert bad.code == 1
    assert bad.out.startswith("config: FAILED: ")
    assert "RELAY_HTTP_PORT" in bad.out
    assert len(bad.out.splitlines()) == 1

    missing = await relay("check", data_dir=tmp_path / "none")
    assert missing.code == 1
    assert missing.out.splitlines()[1] == (
        f"database: FAILED: no database at {tmp_path / 'none' / 'relay.db'} "
        "(a server creates it at start)"
    )


async def test_check_while_the_server_runs_names_it(nursery: trio.Nursery, tmp_path: Path) -> None:
    _, shutdown = await start_server(nursery, settings_for(tmp_path))
    result = await relay("check", data_dir=tmp_path / "data")
    await shutdown()
    assert result.code == 0, result.out
    assert f"in use by process {os.getpid()})" in result.out.splitlines()[1]
