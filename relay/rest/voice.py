"""Voice over REST: who is in a voice channel (joining is gateway op 4; moderation is
PATCH /servers/{id}/members/{user})."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from relay.chat import objects
from relay.chat import voice as chat_voice
from relay.rest.apidoc import doc
from relay.rest.http import json_response, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime


def voice_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("voice", __name__, url_prefix="/v1/api")

    @bp.get("/channels/<channel_id>/voice-states")
    @doc(
        "The voice states of a voice channel the caller can see",
        response=list[objects.VoiceState],
        errors=("unknown_channel", "not_a_voice_channel"),
    )
    async def voice_states(channel_id: str) -> Response:
        who = principal(rt)
        return json_response(await chat_voice.channel_states(rt.chat, who.user_id, channel_id))

    return bp
