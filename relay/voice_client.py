"""The bundled voice client: join a voice channel through the gateway (op 4), open the voice
connection (`/v1/voice`), and send and receive Opus frames over UDP or WebSocket
(docs/voice.md). The client encrypts each frame with its transport key
(`aead_xchacha20_poly1305_rtpsize`) and decrypts what the server re-encrypted for it; it never
needs a codec itself (frames are opaque bytes: encode them with libopus, e.g. PyAV).
"""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
import trio
import trio_websocket

from relay.client import _open_websocket
from relay.protocol import rtp

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from relay.client import Gateway

OPUS_PAYLOAD_TYPE = 120
VIDEO_PAYLOAD_TYPE = 96  # a dynamic type, e.g. VP8 or H.264: opaque to the server
SAMPLES_PER_FRAME = 960  # 20 ms at 48 kHz


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
            if op is None or frame["op"] == op:
                return frame
            self.controls.append(frame)

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
        await self.send_raw(self.packet(payload))

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
            self.controls.append(msgspec.json.decode(message))

    async def receive(self) -> Received:
        return self.open(await self.receive_raw())

    async def speaking(self, on: bool) -> None:
        await self.send_control(5, {"speaking": 1 if on else 0, "delay": 0, "ssrc": self.ssrc})

    async def heartbeat(self, nonce: int = 0) -> None:
        await self.send_control(3, nonce)


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
) -> AsyncIterator[VoiceClient]:
    """Open `/v1/voice`, IDENTIFY, do IP discovery (udp) and SELECT_PROTOCOL; yields once the
    SESSION_DESCRIPTION (the key) arrived."""
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
        data: dict[str, Any] = {"mode": rtp.MODE}
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            if protocol == "udp":
                await udp.bind(("127.0.0.1", 0))
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
