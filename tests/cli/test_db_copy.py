"""`relay db copy`: a SQLite database made by a real server (accounts, a server with channels and
roles, messages with edits, reactions, pins, a DM, an uploaded file) is copied into an empty
PostgreSQL database, and a server on PostgreSQL then answers exactly as the SQLite one did:
history, search, pins, the file's metadata and bytes, with the same logins. A second copy into
the now non-empty database is refused, as is a copy while a server holds the SQLite file."""

from __future__ import annotations

import sqlite3
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
import trio

from relay.storage.postgres.fromsqlite import CopyRefused, copy_database
from relay.storage.schema import LATEST_VERSION, migrate
from relay.storage.sqlite.db import connect
from tests.cli.conftest import BIN, clean_env
from tests.cluster.test_two_servers import client_for
from tests.conftest import settings_for, start_server
from tests.rest.test_messages import make_world, messages_path, post, reactions_path

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from relay.client import RelayClient
    from tests.conftest import RunningServer
    from tests.realservers import PostgresServer


async def relay_db_copy(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [str(BIN / "relay"), "db", "copy", *args],
        env=clean_env(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def answers(server: RunningServer, tokens: dict[str, str], ids: dict[str, str]) -> Any:
    """What the server shows of the world, through Alice's and Bob's logins."""
    alice, bob = client_for(server, tokens["alice"]), client_for(server, tokens["bob"])
    search = f"/v1/api/servers/{ids['server']}/messages/search?"
    shown: dict[str, Any] = {
        "me": await alice.call("GET", "/v1/api/users/@me"),
        "servers": await bob.call("GET", "/v1/api/users/@me/servers"),
        "channels": await bob.call("GET", f"/v1/api/servers/{ids['server']}/channels"),
        "history": await bob.call("GET", messages_path(ids["text"]) + "?limit=100"),
        "dm": await alice.call("GET", messages_path(ids["dm"])),
        "pins": await bob.call("GET", f"/v1/api/channels/{ids['text']}/pins"),
        "found": await bob.call("GET", search + urlencode({"content": "deploys"})),
        "phrase": await bob.call("GET", search + urlencode({"content": '"release notes"'})),
        "prefix": await bob.call("GET", search + urlencode({"content": "depl*", "sort": "oldest"})),
    }
    file_url = next(m for m in shown["history"] if m["attachments"])["attachments"][0]["url"]
    got = await bob.request("GET", file_url)
    shown["file"] = (got.status_code, got.content)
    await alice.aclose()
    await bob.aclose()
    return shown


async def test_a_sqlite_database_copied_into_postgresql_serves_the_same(
    nursery: trio.Nursery, tmp_path: Path, postgres: PostgresServer
) -> None:
    lite, stop_lite = await start_server(nursery, settings_for(tmp_path))
    db_file = str(tmp_path / "data" / "relay.db")
    dsn = postgres.new_database()
    async with AsyncExitStack() as stack:
        w = await make_world(stack, lite)
        alice, bob = w.alice, w.bob
        sent = [await post(alice, w.text, f"message {i} about deploys") for i in range(4)]
        await alice.client.call(
            "PATCH", messages_path(w.text, sent[0]["id"]), {"content": "the release notes"}
        )
        await bob.client.call("PUT", reactions_path(w.text, sent[1]["id"], "👍"))
        await alice.client.call("PUT", f"/v1/api/channels/{w.text}/pins/{sent[1]['id']}")
        await alice.client.call("POST", f"/v1/api/servers/{w.server_id}/roles", {"name": "mods"})
        await post(bob, w.dm, "hello in private")
        upload = await alice.client.request(
            "POST", f"/v1/api/channels/{w.text}/attachments?filename=data.bin", content=b"x" * 100
        )
        attached: RelayClient = alice.client
        await attached.call(
            "POST", messages_path(w.text), {"attachments": [{"id": upload.json()["upload_id"]}]}
        )
        tokens = {"alice": alice.token, "bob": bob.token}
        ids = {"server": w.server_id, "text": w.text, "dm": w.dm}
        before = await answers(lite, tokens, ids)
        # Not while a server holds the SQLite database (its lock).
        busy = await relay_db_copy("--from", db_file, "--to", dsn)
        assert busy.returncode == 1
        assert b"in use" in busy.stderr
    await stop_lite()

    with trio.fail_after(60):
        copied = await relay_db_copy("--from", db_file, "--to", dsn)
    assert copied.returncode == 0, copied.stderr
    # The writers' cache triggers, off during the copy, are on again (16: 8 tables, 2 each).
    enabled = postgres.psql(
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'writer_cache_%' AND tgenabled = 'O'",
        dsn.rsplit("/", 1)[1],
    )
    assert enabled.strip() == "16"
    out = copied.stdout.decode().splitlines()
    assert "messages: 6 rows" in out  # four, the DM's, the file's
    assert "message_search: 6 rows" in out
    assert out[-1].endswith(f"(schema version {LATEST_VERSION}); every table's row count matches")
    again = await relay_db_copy("--from", db_file, "--to", dsn)
    assert again.returncode == 1
    assert b"the target database is not empty" in again.stderr

    # The same data directory (the files' blobs, the media key), on PostgreSQL.
    pg, stop_pg = await start_server(nursery, settings_for(tmp_path, database=dsn))
    after = await answers(pg, tokens, ids)
    assert after == before
    assert after["file"] == (200, b"x" * 100)
    assert [m["id"] for m in after["found"]["messages"]] == [m["id"] for m in sent[1:4]][::-1]
    # New rows continue above the copied ones.
    newer = await client_for(pg, tokens["bob"]).call(
        "POST", messages_path(w.text), {"content": "on postgresql"}
    )
    assert int(newer["id"]) > max(int(m["id"]) for m in after["history"])
    await stop_pg()


def test_a_copy_refused_leaves_the_target_empty(tmp_path: Path, postgres: PostgresServer) -> None:
    """A text PostgreSQL cannot store (a NUL character, which SQLite keeps) stops the copy with
    the table named; nothing is written, so a later copy finds the target empty. A SQLite
    file at an older schema version is refused before anything is read."""
    db_file = tmp_path / "relay.db"
    db = connect(db_file)
    migrate(db)
    db.close()
    with sqlite3.connect(db_file) as lite:
        lite.execute("INSERT INTO server_secrets (name, value) VALUES (?, ?)", ("a\x00b", b"x"))
    dsn = postgres.new_database()
    with pytest.raises(CopyRefused, match=r"^table server_secrets: PostgreSQL refused a value"):
        copy_database(db_file, dsn)
    with sqlite3.connect(db_file) as lite:
        lite.execute("DELETE FROM server_secrets WHERE name = ?", ("a\x00b",))
    assert copy_database(db_file, dsn).version == LATEST_VERSION  # the target was empty
    with sqlite3.connect(db_file) as lite:
        lite.execute(f"PRAGMA user_version = {LATEST_VERSION - 1}")
    with pytest.raises(CopyRefused, match=r"run `relay db migrate` on it first"):
        copy_database(db_file, postgres.new_database())
