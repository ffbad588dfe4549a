"""The relayd-compatible byte relay: a TCP listener and `/v1/relay` over WebSocket, one hub."""

from relay.byterelay.hub import ByteRelay, RelayStatistics, Why
from relay.byterelay.tcp import serve_byte_relay
from relay.byterelay.ws import RelayEndpoint

__all__ = ["ByteRelay", "RelayEndpoint", "RelayStatistics", "Why", "serve_byte_relay"]
