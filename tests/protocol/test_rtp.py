"""RTP headers, rtpsize AEAD, the replay window and IP discovery: round trips and arbitrary
bytes (hypothesis)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as aead_decrypt
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as aead_encrypt

from relay.protocol import rtp

KEY = bytes(range(32))
OTHER = bytes(32)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@settings(max_examples=100)
@given(st.binary(min_size=12, max_size=40), st.binary(max_size=1400), u32)
def test_seal_and_open_agree_with_pynacls_reference(
    header: bytes, body: bytes, counter: int
) -> None:
    """seal and open_packet call libsodium directly: the same bytes as PyNaCl's wrapper."""
    nonce = counter.to_bytes(4, "big") + bytes(20)
    reference = header + aead_encrypt(body, header, nonce, KEY) + counter.to_bytes(4, "big")
    assert rtp.seal(header, body, KEY, counter) == reference
    assert rtp.open_packet(reference, len(header), KEY) == body
    assert aead_decrypt(reference[len(header) : -4], header, nonce, KEY) == body


@settings(max_examples=100)
@given(st.integers(0, 127), u16, u32, u32, st.booleans(), st.binary(max_size=1400), u32)
def test_seal_then_open_round_trips(
    pt: int, seq: int, ts: int, ssrc: int, marker: bool, body: bytes, counter: int
) -> None:
    packet = rtp.seal(rtp.build_header(pt, seq, ts, ssrc, marker), body, KEY, counter)
    header = rtp.parse_header(packet)
    assert (header.payload_type, header.sequence, header.timestamp, header.ssrc) == (
        pt,
        seq,
        ts,
        ssrc,
    )
    assert header.marker is marker
    assert rtp.counter_of(packet) == counter
    assert rtp.open_packet(packet, header.aad_end, KEY) == body
    with pytest.raises(rtp.PacketError):
        rtp.open_packet(packet, header.aad_end, OTHER)


@settings(max_examples=100)
@given(st.binary(max_size=200), st.integers(0, 199))
def test_any_change_fails_authentication(body: bytes, where: int) -> None:
    packet = bytearray(rtp.seal(rtp.build_header(120, 1, 2, 3), body, KEY, 7))
    packet[where % len(packet)] ^= 0x01
    try:
        header = rtp.parse_header(bytes(packet))
    except rtp.PacketError:
        return
    with pytest.raises(rtp.PacketError):
        rtp.open_packet(bytes(packet), header.aad_end, KEY)


@settings(max_examples=200)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_packet_error(data: bytes) -> None:
    try:
        header = rtp.parse_header(data)
    except rtp.PacketError:
        pass
    else:
        with pytest.raises(rtp.PacketError):
            rtp.open_packet(data, header.aad_end, KEY)
    with contextlib.suppress(rtp.PacketError):
        rtp.parse_discovery(data)


@given(u32, st.from_regex(r"[0-9a-f.:]{1,64}", fullmatch=True), st.integers(0, 65535))
def test_discovery_round_trips_at_the_same_size(ssrc: int, address: str, port: int) -> None:
    request = rtp.discovery_request(ssrc)
    assert rtp.is_discovery(request)
    assert rtp.parse_discovery(request)[:2] == (rtp.DISCOVERY_REQUEST, ssrc)
    response = rtp.discovery_response(ssrc, address, port)
    assert len(response) == len(request) == rtp.DISCOVERY_BYTES  # no amplification
    assert rtp.parse_discovery(response) == (rtp.DISCOVERY_RESPONSE, ssrc, address, port)


@given(st.lists(st.integers(0, 300), max_size=300))
def test_replay_window_accepts_each_counter_once(counters: list[int]) -> None:
    window = rtp.ReplayWindow()
    seen: set[int] = set()
    top = -1
    for c in counters:
        fresh = c not in seen and c > top - 64
        assert window.accept(c) is fresh
        if fresh:
            seen.add(c)
            top = max(top, c)


def test_rtcp_is_told_apart() -> None:
    assert rtp.is_rtcp(bytes([0x81, 206, 0, 2]))  # PSFB (PLI)
    assert not rtp.is_rtcp(rtp.build_header(120, 1, 1, 1))
