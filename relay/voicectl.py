"""`relay voice play`: join a voice channel of a running server and play an Ogg Opus file into
it, with the bundled voice client (relay.voice_client): gateway op 4, the voice connection,
then one Opus frame every 20 ms over UDP or WebSocket (optionally end-to-end encrypted), and
leave. The server and the account are found as for `relay rooms` (relay.roomctl).

Resource handling: one `trio.run`; the gateway, the voice connection (and its UDP socket) and
the login are closed when the command returns or is interrupted.

Error handling: an unreadable or non-Opus file is refused before connecting; an unreachable
server, a refused join (no CONNECT, full channel, ...) or a closed voice connection is one line
on stderr and exit status 1; bad arguments exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio
import trio_websocket

from relay.client import open_gateway
from relay.cliutil import USAGE, CommandError
from relay.ids import parse_id
from relay.protocol.ogg import OggError
from relay.roomctl import (
    _account_options,
    _command,
    _server_options,
    _unreachable,
    api,
    logged_in,
    realtime_url,
)
from relay.voice_client import VoiceClosed, join_voice, open_voice, opus_file_frames, voice_base

if TYPE_CHECKING:
    import argparse

    from relay.config import Settings

CONNECT_TIMEOUT_S = 15.0
E2EE_KEYS_S = 0.5  # how long to wait for the others' E2EE keys before sealing ours to them


def _id(text: str, what: str) -> str:
    if parse_id(text) is None:
        raise CommandError(f"invalid {what} {text!r}: an id is a number", USAGE)
    return text


async def voice_play(args: argparse.Namespace, settings: Settings) -> None:
    server_id = _id(args.server_id, "SERVER_ID")
    channel_id = _id(args.channel_id, "CHANNEL_ID")
    try:
        frames = opus_file_frames(Path(args.file))
    except (OSError, OggError, ValueError) as e:
        raise CommandError(f"cannot play {args.file}: {e}") from None
    ws_url = realtime_url(settings, args.realtime_url)
    async with api(args, settings) as client, logged_in(client, args):
        assert client.access_token is not None
        try:
            async with open_gateway(ws_url) as gateway:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    ready = await gateway.identify(client.access_token)
                    grant = await join_voice(gateway, server_id, channel_id)
                assert gateway.session_id is not None
                async with (
                    open_voice(
                        voice_base(ws_url, grant["endpoint"]),
                        server_id=server_id,
                        user_id=str(ready["user"]["id"]),
                        session_id=gateway.session_id,
                        token=grant["token"],
                        protocol=args.protocol,
                        e2ee=args.e2ee,
                    ) as voice,
                    trio.open_nursery() as nursery,
                ):
                    nursery.start_soon(voice.discard_incoming)
                    nursery.start_soon(voice.send_heartbeats)
                    if args.e2ee:
                        await trio.sleep(E2EE_KEYS_S)  # the others' keys arrive
                        await voice.rotate_e2ee()
                    sent = await voice.play(frames)
                    nursery.cancel_scope.cancel()
                await gateway.send(4, {"server_id": server_id, "channel_id": None})
        except PermissionError as e:
            raise CommandError(f"the server refused to let you join: {e}") from None
        except VoiceClosed as e:
            raise CommandError(f"the voice connection closed: {e.code} {e.reason}") from None
        except (OSError, trio_websocket.HandshakeError) as e:
            raise _unreachable(ws_url, e) from None
        except trio.TooSlowError:
            raise CommandError("the server did not answer in time") from None
    sys.stdout.write(f"played {sent} frames ({sent * 20 / 1000:.2f} s) in {channel_id}\n")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `relay voice`."""
    voice = commands.add_parser(
        "voice",
        help="play audio into a running server's voice channel",
        description="Voice channels of a running server, through its gateway and /v1/voice.",
    )
    group = voice.add_subparsers(dest="voice_command", required=True, metavar="COMMAND")
    p = _command(
        group,
        "play",
        voice_play,
        "join a voice channel, play an Ogg Opus file, leave",
        "Join the voice channel as the account you log in as, send the Opus frames of FILE (an"
        " Ogg Opus .opus file, e.g. from `ffmpeg -i in.wav -c:a libopus out.opus`) at their"
        " real pace, and leave. Needs CONNECT and SPEAK there.",
    )
    p.add_argument("server_id", metavar="SERVER_ID")
    p.add_argument("channel_id", metavar="CHANNEL_ID", help="a voice channel of that server")
    p.add_argument("file", metavar="FILE", help="an Ogg Opus file")
    p.add_argument(
        "--protocol",
        choices=("udp", "websocket"),
        default="udp",
        help="the media transport (default udp; websocket where UDP cannot pass)",
    )
    p.add_argument(
        "--e2ee", action="store_true", help="end-to-end encrypt the media (docs/voice.md)"
    )
    _server_options(p, realtime=False)
    _server_options(p, realtime=True)
    _account_options(p)
