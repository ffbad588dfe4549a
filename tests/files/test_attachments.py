"""Files end to end through the real server: multipart messages and two-phase uploads, what is
stored (type by content, EXIF gone, encrypted, once), limits refused as bytes arrive, and
serving by signed URL (Range, ETag, the safety headers, who gets a URL)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio
from PIL import Image

from tests.conftest import settings_for, start_server
from tests.media import samples
from tests.rest.test_messages import World, make_world, messages_path

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from tests.conftest import RunningServer
    from tests.rest.test_messages import Member

MiB = 1024 * 1024


async def post_files(
    member: Member,
    channel_id: str,
    files: list[tuple[str, bytes]],
    payload: dict[str, Any] | None = None,
) -> httpx.Response:
    parts: list[tuple[str, Any]] = [
        (f"files[{i}]", (name, data, "image/png")) for i, (name, data) in enumerate(files)
    ]
    data = {"payload_json": json.dumps(payload)} if payload is not None else None
    return await member.client.request("POST", messages_path(channel_id), files=parts, data=data)


async def raw_send(
    running: RunningServer,
    token: str,
    path: str,
    content_type: str,
    body: bytes,
    method: str = "POST",
) -> tuple[int, dict[str, Any], int]:
    """POST `body` over a raw socket, 64 KiB at a time, reading the answer meanwhile: the
    status, the JSON answer, and how many body bytes were sent before the server answered."""
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sent = 0
    answer = bytearray()

    async def send_body(cancel: trio.CancelScope) -> None:
        nonlocal sent
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(head.encode())
            for i in range(0, len(body), 65536):
                await stream.send_all(body[i : i + 65536])
                sent = i + len(body[i : i + 65536])

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send_body, nursery.cancel_scope)
        with trio.fail_after(20):
            while b"\r\n\r\n" not in answer or not _complete(answer):
                data = await stream.receive_some(65536)
                if not data:
                    break
                answer += data
        nursery.cancel_scope.cancel()
    header, _, payload = bytes(answer).partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload), sent


def _complete(answer: bytearray) -> bool:
    header, _, payload = bytes(answer).partition(b"\r\n\r\n")
    for line in header.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(payload) >= int(line.split(b":")[1])
    return False


def multipart(parts: list[tuple[str, str, bytes]]) -> tuple[str, bytes]:
    boundary = "testboundary7f3a"
    out = b""
    for name, filename, data in parts:
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return f"multipart/form-data; boundary={boundary}", out + f"--{boundary}--\r\n".encode()


async def fetch(member: Member, url: str, **headers: str) -> httpx.Response:
    return await member.client.request("GET", url, token="", headers=headers)


def blobs_dir(running: RunningServer) -> Path:
    from pathlib import Path

    return Path(running.settings.data_dir) / "media" / "blobs"


def stored_files(running: RunningServer) -> list[Path]:
    return [p for p in blobs_dir(running).rglob("*") if p.is_file()]


async def test_message_with_files_end_to_end(files_world: World) -> None:
    w = files_world
    jpeg = samples.jpeg_with_gps((80, 40))
    html = samples.HTML
    response = await post_files(
        w.alice, w.text, [("photo.jpg", jpeg), ("../../evil\u202e.html", html)], {"content": "look"}
    )
    assert response.status_code == 201, response.text
    message = response.json()
    assert message["content"] == "look"
    photo, page = message["attachments"]
    assert photo["content_type"] == "image/jpeg"
    assert (photo["width"], photo["height"]) == (40, 80)  # EXIF orientation applied
    assert "thumbnail_url" in photo
    assert "preview_url" not in photo
    assert page["filename"] == "evil.html"
    assert page["content_type"] == "application/octet-stream"

    # Served: EXIF gone, inline image; HTML as a download that can never run.
    got = await fetch(w.bob, photo["url"])
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-security-policy"] == "sandbox"
    assert got.headers["content-disposition"].startswith("inline")
    assert b"SpyCam" not in got.content
    assert not Image.open(io.BytesIO(got.content)).getexif()
    assert int(photo["size"]) == len(got.content)
    got = await fetch(w.bob, page["url"])
    assert got.content == html
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment")
    thumb = await fetch(w.bob, photo["thumbnail_url"])
    assert thumb.headers["content-type"] == "image/webp"

    # Nothing on disk holds the plaintext.
    for path in stored_files(w.running):
        data = path.read_bytes()
        assert b"alert(document.cookie)" not in data
        assert b"JFIF" not in data

    # History gives fresh signed URLs; a tampered or unsigned URL is 404.
    again = await w.bob.client.call("GET", messages_path(w.text, message["id"]))
    assert again["attachments"][1]["filename"] == "evil.html"
    url = again["attachments"][1]["url"]
    assert (await fetch(w.bob, url)).status_code == 200
    for bad in (url.replace("sig=", "sig=0"), url.split("?")[0], url.replace("ex=", "ex=1")):
        got = await fetch(w.bob, bad)
        assert got.status_code == 404
        assert got.json()["error"]["code"] == "unknown_file"
    other_id = url.replace(page["id"], photo["id"])
    assert (await fetch(w.bob, other_id)).status_code == 404

    # Eve sees nothing of the channel: no history, no URL.
    status = (await w.eve.client.request("GET", messages_path(w.text))).status_code
    assert status == 404

    # Deleting the message stops serving and deletes its blobs.
    before = len(stored_files(w.running))
    await w.alice.client.call("DELETE", messages_path(w.text, message["id"]))
    assert (await fetch(w.bob, url)).status_code == 404
    assert (await fetch(w.bob, photo["url"])).status_code == 404
    assert len(stored_files(w.running)) == before - 3  # file, thumbnail, the HTML


async def test_range_etag_and_two_phase_upload(files_world: World) -> None:
    w = files_world
    data = os.urandom(300_000)  # several 64 KiB chunks
    up = await w.alice.client.request(
        "POST", f"/v1/api/channels/{w.text}/attachments?filename=data.bin", content=data
    )
    assert up.status_code == 201, up.text
    upload_id = up.json()["upload_id"]
    message = await w.alice.client.call(
        "POST", messages_path(w.text), {"attachments": [{"id": upload_id}]}
    )
    assert message["content"] == ""
    (att,) = message["attachments"]
    assert att["size"] == len(data)
    assert att["content_type"] == "application/octet-stream"
    url = att["url"]
    for start, end in [(0, 10), (65530, 65546), (65536, 131072), (299_990, 299_999), (1, 299_999)]:
        got = await fetch(w.bob, url, Range=f"bytes={start}-{end}")
        assert got.status_code == 206
        assert got.content == data[start : end + 1]
        assert got.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    got = await fetch(w.bob, url, Range="bytes=-100")
    assert got.content == data[-100:]
    got = await fetch(w.bob, url, Range="bytes=400000-")
    assert got.status_code == 416
    full = await fetch(w.bob, url)
    assert full.content == data
    assert "immutable" in full.headers["cache-control"]
    assert full.headers["last-modified"]
    cached = await fetch(w.bob, url, **{"If-None-Match": full.headers["etag"]})
    assert cached.status_code == 304
    assert cached.content == b""

    # An upload is claimed once, by its uploader, in its channel.
    again = await w.alice.client.request(
        "POST", messages_path(w.text), json={"attachments": [{"id": upload_id}]}
    )
    assert again.status_code == 400
    up = await w.alice.client.request(
        "POST", f"/v1/api/channels/{w.text}/attachments?filename=x.txt", content=b"hello"
    )
    theirs = await w.bob.client.request(
        "POST", messages_path(w.text), json={"attachments": [{"id": up.json()["upload_id"]}]}
    )
    assert theirs.status_code == 400
    assert theirs.json()["error"]["fields"] == {
        "attachments": theirs.json()["error"]["fields"]["attachments"]
    }


async def test_identical_uploads_stored_once_and_limits(files_world: World) -> None:
    w = files_world
    png = samples.image("PNG", (50, 50))
    for _ in range(2):
        r = await post_files(w.alice, w.text, [("a.png", png)])
        assert r.status_code == 201, r.text
    assert len(stored_files(w.running)) == 2  # one image, one thumbnail

    # Over max_upload_bytes (2 MiB): 413 file_too_large once the first byte over arrives,
    # long before the rest of a 20 MiB body is sent; eleven files: too_many_files.
    path = messages_path(w.text)
    kind, body = multipart([("files[0]", "big.bin", os.urandom(20 * MiB))])
    status, answer, sent = await raw_send(w.running, w.alice.token, path, kind, body)
    assert (status, answer["error"]["code"]) == (413, "file_too_large")
    assert sent < 6 * MiB
    kind, body = multipart([(f"files[{i}]", f"{i}.txt", b"hi") for i in range(11)])
    status, answer, _ = await raw_send(w.running, w.alice.token, path, kind, body)
    assert (status, answer["error"]["code"]) == (413, "too_many_files")
    # Corrupt image: 400 bad_image.
    r = await post_files(w.alice, w.text, [("cut.png", png[:80])])
    assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_image")
    bomb = samples.png_header(100_000, 100_000)
    r = await post_files(w.alice, w.text, [("bomb.png", bomb)])
    assert (r.status_code, r.json()["error"]["code"]) == (400, "bad_image")
    # Empty file, and a message of nothing at all.
    r = await post_files(w.alice, w.text, [("empty", b"")])
    assert r.status_code == 201
    assert r.json()["attachments"][0]["size"] == 0
    r = await post_files(w.alice, w.text, [], {"content": ""})
    assert r.status_code == 400
    # Malformed multipart.
    r = await w.alice.client.request(
        "POST",
        messages_path(w.text),
        content=b"--x\r\nnope",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_form")

    # The daily quota (5 MiB): two 2 MiB files pass, the third is cut.
    blob = os.urandom(2 * MiB - 10)
    path = f"/v1/api/channels/{w.text}/attachments?filename=q"
    for _ in range(2):
        r = await w.bob.client.request("POST", path, content=blob)
        assert r.status_code == 201, r.text
    status, answer, _ = await raw_send(w.running, w.bob.token, path, "text/plain", blob)
    assert (status, answer["error"]["code"]) == (413, "upload_quota")


async def test_concurrent_identical_uploads_and_prune(files_world: World) -> None:
    from relay.services import prune_files

    w = files_world
    rt = w.running.runtime
    data = os.urandom(MiB)
    path = f"/v1/api/channels/{w.text}/attachments?filename=same.bin"
    ids: list[str] = []

    async def one() -> None:
        r = await w.alice.client.request("POST", path, content=data)
        assert r.status_code == 201, r.text
        ids.append(r.json()["upload_id"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    assert len(set(ids)) == 2
    assert len(stored_files(w.running)) == 1  # stored once

    claimed = await w.alice.client.call(
        "POST", messages_path(w.text), {"attachments": [{"id": ids[0]}]}
    )
    r = await w.alice.client.request(
        "POST", f"/v1/api/channels/{w.text}/attachments?filename=lone.txt", content=b"lonely"
    )
    assert r.status_code == 201
    assert len(stored_files(w.running)) == 2

    def age_uploads(db: Any) -> None:
        db.execute("UPDATE attachments SET created_at = created_at - 7200000")

    await rt.store.write(age_uploads)
    assert rt.chat.media is not None
    await prune_files(rt.store, rt.chat.media, orphan_age_s=0)
    # The two unclaimed uploads are gone; the claimed one's blob (shared with one of them) stays.
    assert len(stored_files(w.running)) == 1
    got = await fetch(w.bob, claimed["attachments"][0]["url"])
    assert got.content == data


async def test_slow_uploads_are_cut_and_a_full_disk_refuses(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path, upload_min_rate=1 * MiB, upload_grace_s=0.3, min_free_disk_bytes=0
    )
    running, shutdown = await start_server(nursery, settings)
    async with AsyncExitStack() as stack:
        w = await make_world(stack, running)
        host, port = running.url.removeprefix("http://").rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(
                f"POST /v1/api/channels/{w.text}/attachments?filename=slow HTTP/1.1\r\n"
                f"Host: x\r\nAuthorization: Bearer {w.alice.token}\r\n"
                "Content-Length: 10000000\r\n\r\n".encode()
                + b"x" * 1000
            )
            answer = b""
            with trio.fail_after(10):
                while b"upload_too_slow" not in answer:
                    data = await stream.receive_some(4096)
                    assert data, answer
                    answer += data
        assert answer.startswith(b"HTTP/1.1 408")
        assert not list((tmp_path / "data" / "media" / "tmp").iterdir())  # spool deleted
    await shutdown()

    settings = settings_for(tmp_path / "full", min_free_disk_bytes=10**18)
    running, shutdown = await start_server(nursery, settings)
    async with AsyncExitStack() as stack:
        w = await make_world(stack, running)
        r = await w.alice.client.request(
            "POST", f"/v1/api/channels/{w.text}/attachments?filename=a", content=b"abc"
        )
        assert (r.status_code, r.json()["error"]["code"]) == (507, "insufficient_storage")
        ready = await w.alice.client.request("GET", "/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["disk"].startswith("low")
    await shutdown()


async def test_attach_files_is_required(files_world: World) -> None:
    w = files_world
    everyone = w.server_id  # @everyone's role id is the server's
    role = await w.alice.client.call("GET", f"/v1/api/servers/{w.server_id}/roles")
    perms = next(r for r in role if r["id"] == everyone)["permissions"]
    from relay.permissions import P

    without = int(perms) & ~int(P.ATTACH_FILES)
    await w.alice.client.call(
        "PATCH", f"/v1/api/servers/{w.server_id}/roles/{everyone}", {"permissions": str(without)}
    )
    r = await post_files(w.bob, w.text, [("a.txt", b"hello")])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "missing_permission")
    r = await w.bob.client.request(
        "POST", f"/v1/api/channels/{w.text}/attachments?filename=a", content=b"abc"
    )
    assert r.status_code == 403
    # Alice (the owner) still may; Eve, not a member, gets 404.
    assert (await post_files(w.alice, w.text, [("a.txt", b"hello")])).status_code == 201
    r = await post_files(w.eve, w.text, [("a.txt", b"hello")])
    assert r.status_code == 404


async def test_a_member_who_cannot_see_the_channel_gets_no_url(files_world: World) -> None:
    from relay.permissions import P

    w = files_world
    r = await post_files(w.alice, w.text, [("a.txt", b"members only")])
    message = r.json()
    await w.alice.client.call(
        "PUT",
        f"/v1/api/channels/{w.text}/permissions/{w.bob.id}",
        {"type": "member", "deny": str(int(P.VIEW_CHANNEL))},
    )
    for path in (messages_path(w.text), messages_path(w.text, message["id"])):
        got = await w.bob.client.request("GET", path)
        assert got.status_code == 404
        assert "attachments" not in got.text
    r = await w.bob.client.request(
        "POST", f"/v1/api/channels/{w.text}/attachments?filename=a", content=b"abc"
    )
    assert r.status_code == 404


async def test_bulk_delete_releases_files(files_world: World) -> None:
    w = files_world
    ids = []
    for i in range(2):
        r = await post_files(w.alice, w.text, [(f"{i}.txt", f"file {i}".encode())])
        ids.append(r.json()["id"])
    assert len(stored_files(w.running)) == 2
    await w.alice.client.call(
        "POST", f"/v1/api/channels/{w.text}/messages/bulk-delete", {"messages": ids}
    )
    assert stored_files(w.running) == []
