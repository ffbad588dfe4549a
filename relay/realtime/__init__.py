"""The Trio-native WebSocket listener (wsproto): handshake, path -> endpoint, connections."""
