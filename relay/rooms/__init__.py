"""App rooms: a relay for games and collaborative apps (REST `/v1/api/rooms`, WebSocket
`/v1/websocket`), one actor per room. This package is the WebSocket edge; the room manager and
the REST operations are in relay.chat.rooms."""
