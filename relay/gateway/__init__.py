"""The chat gateway: sessions, the hub that routes events to them, and the WebSocket endpoint."""
