"""The bundled voice client: join a voice channel through the gateway (op 4), open the voice
connection (`/v1/voice`), and send and receive Opus frames over UDP or WebSocket
(docs/voice.md). The client encrypts each frame with its transport key
(`aead_xchacha20_poly1305_rtpsize`) and decrypts what the server re-encrypted for it; it never
needs a codec itself (frames are opaque bytes: encode them with libopus, e.g. PyAV).

`play` sends frames at their real pace (one per 20 ms) from any iterable or async iterable of
Opus packets: `opus_file_frames` reads them from an Ogg Opus (`.opus`) file, and a generator
can make them as it goes.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
import trio
import trio_websocket
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import SecretBox
from nacl.utils import random as nacl_random

from relay.client import _open_websocket
from relay.protocol import ogg, rtp

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from pathlib import Path

    from relay.client import Gateway

OPUS_PAYLOAD_TYPE = 120
VIDEO_PAYLOAD_TYPE = 96  # a dynamic type, e.g. VP8 or H.264: opaque to the server
SAMPLES_PER_FRAME = 960  # 20 ms at 48 kHz
FRAME_S = 0.020  # one frame's duration: `play` sends one per FRAME_S
MAX_OPUS_FILE_BYTES = 64 * 1024 * 1024  # an .opus file read whole (~4.5 h at 32 kbit/s)


def opus_file_frames(path: Path) -> list[bytes]:
    """The Opus frames of an Ogg Opus file (raises OggError for anything else, OSError if it
    cannot be read, ValueError over MAX_OPUS_FILE_BYTES)."""
    with path.open("rb") as f:
        data = f.read(MAX_OPUS_FILE_BYTES + 1)
    if len(data) > MAX_OPUS_FILE_BYTES:
        raise ValueError(f"{path} is over {MAX_OPUS_FILE_BYTES} bytes")
    return list(ogg.opus_frames(data))


class VoiceClosed(Exception):
    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"voice connection closed: {code} {reason}")
        self.code = code
        self.reason = reason


class Received(msgspec.Struct, frozen=True):
    ssrc: int
    sequence: int
    timestamp: int
    payload: bytes
    rtcp: bool = False  # a keyframe request: `ssrc` is the asker's, payload starts with ours


class E2ee:
    """The client's end-to-end encryption: an X25519 key pair (published with op 20), its own
    media key (replaced by `rotate`, sealed to each member with op 21), and the keys others
    sealed to it. A payload is the 4-byte epoch and a SecretBox of the frame; the server only
    ever forwards it."""

    def __init__(self) -> None:
        self.private = PrivateKey.generate()
        self.peers: dict[str, PublicKey] = {}  # user id -> their X25519 key
        self.epoch = 0
        self.media_key = nacl_random(SecretBox.KEY_SIZE)
        self.keys: dict[tuple[str, int], bytes] = {}  # (user id, epoch) -> their media key

    def public_key(self) -> str:
        return base64.b64encode(bytes(self.private.public_key)).decode()

    def rotate(self) -> dict[str, str]:
        """A new media key and epoch, sealed to every known member."""
        self.epoch += 1
        self.media_key = nacl_random(SecretBox.KEY_SIZE)
        plain = self.epoch.to_bytes(4, "big") + self.media_key
        return {
            user: base64.b64encode(SealedBox(key).encrypt(plain)).decode()
            for user, key in self.peers.items()
        }

    def opened(self, user_id: str, sealed: str) -> None:
        plain = SealedBox(self.private).decrypt(base64.b64decode(sealed))
        self.keys[(user_id, int.from_bytes(plain[:4], "big"))] = plain[4:]

    def encrypt(self, payload: bytes) -> bytes:
        return self.epoch.to_bytes(4, "big") + bytes(SecretBox(self.media_key).encrypt(payload))

    def decrypt(self, user_id: str, data: bytes) -> bytes:
        """Raises KeyError (no key for that epoch) or nacl's CryptoError."""
        key = self.keys[(user_id, int.from_bytes(data[:4], "big"))]
        return SecretBox(key).decrypt(data[4:])


class VoiceClient:
    """One identified voice connection. `send_frame` sends one Opus frame; `receive` returns
    the next frame someone else sent (decrypted); `events` holds the control frames seen."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.ready: dict[str, Any] = {}
        self.key = b""
        self.ssrc = 0
        self.sequence = 0
        self.timestamp = 0
        self.counter = 0
        self.udp: trio.socket.SocketType | None = None
        self.server_addr: tuple[str, int] | None = None
        self.controls: list[dict[str, Any]] = []
        self.sources: dict[int, str] = {}
        self.user_id = ""
        self.e2ee: E2ee | None = None
        self.users: dict[int, str] = {}  # SSRC -> user id, from CLIENT_CONNECT
        self._media_send, self._media_recv = trio.open_memory_channel[bytes](1024)

    async def send_control(self, op: int, d: Any) -> None:
        await self.ws.send_message(msgspec.json.encode({"op": op, "d": d}).decode())

    async def _next(self) -> str | bytes:
        try:
            data: str | bytes = await self.ws.get_message()
        except trio_websocket.ConnectionClosed as e:
            code, text = (e.reason.code, e.reason.reason) if e.reason else (None, None)
            raise VoiceClosed(code, text) from None
        return data

    async def control(self, op: int | None = None) -> dict[str, Any]:
        """The next control frame (of `op`, others are kept in `controls`); media read
        meanwhile is kept for `receive`."""
        while True:
            data = await self._next()
            if isinstance(data, bytes):
                self._media_send.send_nowait(data)
                continue
            frame: dict[str, Any] = msgspec.json.decode(data)
            self._seen(frame)
            if op is None or frame["op"] == op:
                return frame
            self.controls.append(frame)

    def _seen(self, frame: dict[str, Any]) -> None:
        """Keep what later frames need: who has which SSRC, E2EE keys."""
        op, d = frame["op"], frame["d"]
        if op == 11:
            for c in d["clients"]:
                self.users[c["ssrc"]] = c["user_id"]
        elif op == 20 and self.e2ee is not None:
            self.e2ee.peers[d["user_id"]] = PublicKey(base64.b64decode(d["public_key"]))
        elif op == 21 and self.e2ee is not None:
            self.e2ee.opened(d["user_id"], d["sealed"])

    async def pump(self, seconds: float) -> None:
        """Read control frames for a while (UDP clients' WebSocket is otherwise unread)."""
        with trio.move_on_after(seconds):
            while True:
                message = await self._next()
                if isinstance(message, bytes):
                    self._media_send.send_nowait(message)
                else:
                    frame = msgspec.json.decode(message)
                    self._seen(frame)
                    self.controls.append(frame)

    async def discard_incoming(self) -> None:
        """Read the WebSocket forever, keeping what control frames teach (SSRCs, E2EE keys) and
        dropping media and the rest: for a client that only sends (`play`), whose unread
        WebSocket would otherwise fill."""
        while True:
            message = await self._next()
            if not isinstance(message, bytes):
                self._seen(msgspec.json.decode(message))

    async def send_heartbeats(self) -> None:
        """HEARTBEAT on READY's interval, forever (the server closes a silent connection)."""
        interval = self.ready.get("heartbeat_interval", 41250) / 1000
        nonce = 0
        while True:
            await trio.sleep(interval)
            nonce += 1
            await self.heartbeat(nonce)

    async def rotate_e2ee(self) -> None:
        """A new media key, sealed to every member known now (after a join or leave)."""
        assert self.e2ee is not None
        keys = self.e2ee.rotate()
        await self.send_control(21, {"epoch": self.e2ee.epoch, "keys": keys})

    def packet(self, payload: bytes, ssrc: int | None = None) -> bytes:
        """One Opus frame (or, with a source's `ssrc`, one video packet's payload) as an
        encrypted RTP packet."""
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + SAMPLES_PER_FRAME) & 0xFFFFFFFF
        self.counter += 1
        kind = OPUS_PAYLOAD_TYPE if ssrc is None else VIDEO_PAYLOAD_TYPE
        header = rtp.build_header(kind, self.sequence, self.timestamp, ssrc or self.ssrc)
        return rtp.seal(header, payload, self.key, self.counter)

    async def announce_sources(self, types: list[str]) -> list[dict[str, Any]]:
        """Op 12: this member's video sources (camera, screen, app); returns them with the
        SSRCs the server gave."""
        await self.send_control(12, {"sources": [{"type": t} for t in types]})
        while True:
            frame = await self.control(12)
            if frame["d"]["user_id"] == self.user_id:
                sources: list[dict[str, Any]] = frame["d"]["sources"]
                self.sources = {s["ssrc"]: s["type"] for s in sources}
                return sources

    async def select_sources(self, ssrcs: list[int]) -> None:
        """Op 15: the video sources this member wants to receive."""
        await self.send_control(15, {"ssrcs": ssrcs})

    async def request_keyframe(self, media_ssrc: int) -> None:
        """An RTCP picture loss indication for a source: reaches its sender only."""
        header, body = rtp.build_pli(self.ssrc, media_ssrc)
        self.counter += 1
        await self.send_raw(rtp.seal(header, body, self.key, self.counter))

    async def send_frame(self, payload: bytes) -> None:
        """One Opus frame (end-to-end encrypted first, with E2EE on)."""
        if self.e2ee is not None:
            payload = self.e2ee.encrypt(payload)
        await self.send_raw(self.packet(payload))

    async def play(
        self, frames: Iterable[bytes] | AsyncIterable[bytes], *, frame_s: float = FRAME_S
    ) -> int:
        """Send every frame at its pace (one per `frame_s`, on a fixed clock so a slow turn does
        not drift), speaking on before and off after; returns how many were sent."""
        await self.speaking(True)
        sent = 0
        start = trio.current_time()
        try:
            if isinstance(frames, AsyncIterable):
                async for frame in frames:
                    await self._paced(frame, start + sent * frame_s)
                    sent += 1
            else:
                for frame in frames:
                    await self._paced(frame, start + sent * frame_s)
                    sent += 1
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.speaking(False)
        return sent

    async def _paced(self, frame: bytes, at: float) -> None:
        await trio.sleep_until(at)
        await self.send_frame(frame)

    async def send_raw(self, packet: bytes) -> None:
        if self.protocol == "udp":
            assert self.udp is not None
            assert self.server_addr is not None
            await self.udp.sendto(packet, self.server_addr)
        else:
            await self.ws.send_message(packet)

    def open(self, packet: bytes) -> Received:
        if rtp.is_rtcp(packet):
            _, _, asker = rtp.parse_rtcp(packet)
            body = rtp.open_packet(packet, rtp.RTCP_HEADER_BYTES, self.key)
            return Received(asker, 0, 0, body, rtcp=True)
        header = rtp.parse_header(packet)
        body = rtp.open_packet(packet, header.aad_end, self.key)
        return Received(header.ssrc, header.sequence, header.timestamp, body)

    async def receive_raw(self) -> bytes:
        if self.protocol == "udp":
            assert self.udp is not None
            data: bytes = await self.udp.recv(4096)
            return data
        try:
            return self._media_recv.receive_nowait()
        except trio.WouldBlock:
            pass
        while True:
            message = await self._next()
            if isinstance(message, bytes):
                return message
            frame = msgspec.json.decode(message)
            self._seen(frame)
            self.controls.append(frame)

    async def receive(self) -> Received:
        """The next packet for us, transport-decrypted (and, with E2EE, end-to-end decrypted)."""
        received = self.open(await self.receive_raw())
        if self.e2ee is not None and not received.rtcp:
            user = self.users.get(received.ssrc, "")
            payload = self.e2ee.decrypt(user, received.payload)
            received = msgspec.structs.replace(received, payload=payload)
        return received

    async def speaking(self, on: bool) -> None:
        await self.send_control(5, {"speaking": 1 if on else 0, "delay": 0, "ssrc": self.ssrc})

    async def heartbeat(self, nonce: int = 0) -> None:
        await self.send_control(3, nonce)


def voice_base(ws_url: str, endpoint: str) -> str:
    """Where to open the voice connection a VOICE_SERVER_UPDATE names (for `open_voice`): its
    `endpoint` is a path on the gateway's realtime listener, or in cluster mode the full URL of
    the process serving the channel (docs/cluster.md#voice-channels)."""
    if endpoint.startswith(("ws://", "wss://")):
        return endpoint.removesuffix("/v1/voice")
    return ws_url


async def join_voice(
    gateway: Gateway, server_id: str, channel_id: str | None, **flags: bool
) -> dict[str, Any]:
    """Gateway op 4; returns VOICE_SERVER_UPDATE's `d` (raises on VOICE_STATE_REFUSED)."""
    await gateway.send(4, {"server_id": server_id, "channel_id": channel_id, **flags})
    while True:
        frame = await gateway.dispatch()
        if frame["t"] == "VOICE_SERVER_UPDATE":
            result: dict[str, Any] = frame["d"]
            return result
        if frame["t"] == "VOICE_STATE_REFUSED":
            raise PermissionError(frame["d"]["code"])


@asynccontextmanager
async def open_voice(
    ws_url: str,
    *,
    server_id: str,
    user_id: str,
    session_id: str,
    token: str,
    protocol: str = "udp",
    e2ee: bool = False,
) -> AsyncIterator[VoiceClient]:
    """Open `/v1/voice`, IDENTIFY, do IP discovery (udp) and SELECT_PROTOCOL; yields once the
    SESSION_DESCRIPTION (the key) arrived. With `e2ee`, publishes an X25519 key (op 20); call
    `rotate_e2ee()` once the others' keys arrived and after every join or leave."""
    url = f"{ws_url.rstrip('/')}/v1/voice"
    async with _open_websocket(url, None, 2**20) as (ws, _):
        client = VoiceClient(ws, protocol)
        client.user_id = user_id
        await client.control(8)  # HELLO
        identify = {
            "server_id": server_id,
            "user_id": user_id,
            "session_id": session_id,
            "token": token,
        }
        await client.send_control(0, identify)
        client.ready = (await client.control(2))["d"]
        client.ssrc = client.ready["ssrc"]
        data: dict[str, Any] = {"mode": rtp.MODE, "e2ee": e2ee}
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            if protocol == "udp":
                # Loopback for a local server; otherwise any interface, so the route decides.
                local = client.ready["ip"] in ("127.0.0.1", "localhost")
                await udp.bind(("127.0.0.1" if local else "0.0.0.0", 0))
                client.udp = udp
                client.server_addr = (client.ready["ip"], client.ready["port"])
                await udp.sendto(rtp.discovery_request(client.ssrc), client.server_addr)
                with trio.fail_after(5):
                    answer = await udp.recv(rtp.DISCOVERY_BYTES)
                _, _, address, port = rtp.parse_discovery(answer)
                data.update(address=address, port=port)
            await client.send_control(1, {"protocol": protocol, "data": data})
            description = (await client.control(4))["d"]
            client.key = bytes(description["secret_key"])
            if e2ee:
                client.e2ee = E2ee()
                await client.send_control(20, {"public_key": client.e2ee.public_key()})
            yield client


@asynccontextmanager
async def resume_voice(
    ws_url: str, previous: VoiceClient, *, server_id: str, session_id: str, token: str
) -> AsyncIterator[VoiceClient]:
    """RESUME a voice session whose connection closed: the same SSRC, key and (UDP) socket go
    on, with a new WebSocket (`previous`'s UDP socket must still be open)."""
    url = f"{ws_url.rstrip('/')}/v1/voice"
    async with _open_websocket(url, None, 2**20) as (ws, _):
        client = VoiceClient(ws, previous.protocol)
        client.ready, client.key, client.ssrc = previous.ready, previous.key, previous.ssrc
        client.sequence, client.timestamp = previous.sequence, previous.timestamp
        client.counter = previous.counter
        client.udp, client.server_addr = previous.udp, previous.server_addr  # still bound
        client.user_id, client.sources = previous.user_id, previous.sources
        await client.control(8)  # HELLO
        resume = {"server_id": server_id, "session_id": session_id, "token": token}
        await client.send_control(7, resume)
        await client.control(9)  # RESUMED
        yield client
