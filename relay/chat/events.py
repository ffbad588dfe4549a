"""Chat events: one Struct per event, in one tagged union whose tag is the event's name (`t`).

The chat layer builds them after the commit and hands them to the fan-out (`relay.chat.fanout`);
nothing else spells an event name. Each event carries its payload as `d`, an object of
`relay.chat.objects`, so an event encodes to msgpack as `{"t": name, "d": payload}` and decodes
back unchanged (`decode`): what a broker between processes would carry.

Each event class also says which intent bits receive it (`intent`; `dm_intent` for the same
event about a DM channel): the gateway's `Intent` classes (docs/gateway.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from relay.chat.objects import (
    Channel,
    Deleted,
    EmojisUpdate,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    Message,
    MessageAck,
    MessageDeleted,
    MessagesDeleted,
    PinsUpdate,
    Presence,
    ReactionEvent,
    Ready,
    RecipientEvent,
    Resumed,
    RoleDeleted,
    RoleEvent,
    Server,
    ServerWithChannels,
    ThreadMembersUpdate,
    TypingStart,
    User,
    VoiceRefusal,
    VoiceServer,
    VoiceState,
)
from relay.protocol.gateway import ALWAYS_INTENT, Intent

_SERVERS = int(Intent.SERVERS)
_MEMBERS = int(Intent.SERVER_MEMBERS)
_MESSAGES = int(Intent.SERVER_MESSAGES)
_DMS = int(Intent.DIRECT_MESSAGES)


class ChatEvent(msgspec.Struct, frozen=True, tag_field="t"):
    """An event's name is its class's tag; its payload is `d` (typed by each event)."""

    d: Any
    intent: ClassVar[int] = ALWAYS_INTENT
    dm_intent: ClassVar[int | None] = None  # None: the same as `intent`

    @property
    def t(self) -> str:
        tag = self.__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    def intent_for(self, *, dm: bool) -> int:
        """The intent bits that receive this event; `dm`: it is about a DM channel."""
        if dm and self.dm_intent is not None:
            return self.dm_intent
        return self.intent


# -- the session's own ---------------------------------------------------------------------------


class ReadyEvent(ChatEvent, frozen=True, tag="READY"):
    d: Ready


class ResumedEvent(ChatEvent, frozen=True, tag="RESUMED"):
    d: Resumed


class UserUpdate(ChatEvent, frozen=True, tag="USER_UPDATE"):
    """The user's own account changed (an avatar): to their sessions."""

    d: User


# -- servers, channels, roles, members -----------------------------------------------------------


class _ServerEvent(ChatEvent, frozen=True):
    intent: ClassVar[int] = _SERVERS


class ServerCreate(_ServerEvent, frozen=True, tag="SERVER_CREATE"):
    d: ServerWithChannels


class ServerUpdate(_ServerEvent, frozen=True, tag="SERVER_UPDATE"):
    d: Server


class ServerDelete(_ServerEvent, frozen=True, tag="SERVER_DELETE"):
    d: Deleted


class ServerEmojisUpdate(_ServerEvent, frozen=True, tag="SERVER_EMOJIS_UPDATE"):
    """The server's custom emoji changed: all of them."""

    d: EmojisUpdate


class _ChannelEvent(_ServerEvent, frozen=True):
    dm_intent: ClassVar[int | None] = _DMS


class ChannelCreate(_ChannelEvent, frozen=True, tag="CHANNEL_CREATE"):
    d: Channel


class ChannelUpdate(_ChannelEvent, frozen=True, tag="CHANNEL_UPDATE"):
    d: Channel


class ChannelDelete(_ChannelEvent, frozen=True, tag="CHANNEL_DELETE"):
    d: Channel


class ChannelRecipientAdd(ChatEvent, frozen=True, tag="CHANNEL_RECIPIENT_ADD"):
    """Someone joined a group DM (to its recipients)."""

    intent: ClassVar[int] = _DMS
    d: RecipientEvent


class ChannelRecipientRemove(ChatEvent, frozen=True, tag="CHANNEL_RECIPIENT_REMOVE"):
    """Someone left or was removed from a group DM (to those who remain)."""

    intent: ClassVar[int] = _DMS
    d: RecipientEvent


# Threads: to everyone who can see the parent channel (docs/threads.md).


class ThreadCreate(_ServerEvent, frozen=True, tag="THREAD_CREATE"):
    d: Channel


class ThreadUpdate(_ServerEvent, frozen=True, tag="THREAD_UPDATE"):
    d: Channel


class ThreadDelete(_ServerEvent, frozen=True, tag="THREAD_DELETE"):
    d: Channel


class ThreadMembersUpdateEvent(_ServerEvent, frozen=True, tag="THREAD_MEMBERS_UPDATE"):
    d: ThreadMembersUpdate


class RoleCreate(_ServerEvent, frozen=True, tag="ROLE_CREATE"):
    d: RoleEvent


class RoleUpdate(_ServerEvent, frozen=True, tag="ROLE_UPDATE"):
    d: RoleEvent


class RoleDelete(_ServerEvent, frozen=True, tag="ROLE_DELETE"):
    d: RoleDeleted


class _MemberEvent(ChatEvent, frozen=True):
    intent: ClassVar[int] = _MEMBERS


class MemberAddEvent(_MemberEvent, frozen=True, tag="MEMBER_ADD"):
    d: MemberAdd


class MemberUpdateEvent(_MemberEvent, frozen=True, tag="MEMBER_UPDATE"):
    d: MemberUpdate


class MemberRemoveEvent(_MemberEvent, frozen=True, tag="MEMBER_REMOVE"):
    d: MemberRemove


# -- messages ------------------------------------------------------------------------------------


class _MessageEvent(ChatEvent, frozen=True):
    intent: ClassVar[int] = _MESSAGES
    dm_intent: ClassVar[int | None] = _DMS


class MessageCreate(_MessageEvent, frozen=True, tag="MESSAGE_CREATE"):
    d: Message


class MessageUpdate(_MessageEvent, frozen=True, tag="MESSAGE_UPDATE"):
    d: Message


class MessageDelete(_MessageEvent, frozen=True, tag="MESSAGE_DELETE"):
    d: MessageDeleted


class MessageDeleteBulk(_MessageEvent, frozen=True, tag="MESSAGE_DELETE_BULK"):
    d: MessagesDeleted


class ReactionAdd(_MessageEvent, frozen=True, tag="MESSAGE_REACTION_ADD"):
    d: ReactionEvent


class ReactionRemove(_MessageEvent, frozen=True, tag="MESSAGE_REACTION_REMOVE"):
    d: ReactionEvent


class PinsUpdateEvent(_MessageEvent, frozen=True, tag="CHANNEL_PINS_UPDATE"):
    d: PinsUpdate


class MessageAckEvent(ChatEvent, frozen=True, tag="MESSAGE_ACK"):
    """The user's own read state: for any session that follows messages, servers' or DMs'."""

    intent: ClassVar[int] = _MESSAGES | _DMS
    d: MessageAck


class TypingStartEvent(ChatEvent, frozen=True, tag="TYPING_START"):
    intent: ClassVar[int] = int(Intent.MESSAGE_TYPING)
    d: TypingStart


class PresenceUpdateEvent(ChatEvent, frozen=True, tag="PRESENCE_UPDATE"):
    intent: ClassVar[int] = int(Intent.PRESENCES)
    d: Presence


class VoiceStateUpdate(ChatEvent, frozen=True, tag="VOICE_STATE_UPDATE"):
    """To the server's online members (it follows the servers intent)."""

    intent: ClassVar[int] = _SERVERS
    d: VoiceState


class VoiceServerUpdate(ChatEvent, frozen=True, tag="VOICE_SERVER_UPDATE"):
    """To the gateway session that sent op 4 only."""

    d: VoiceServer


class VoiceStateRefused(ChatEvent, frozen=True, tag="VOICE_STATE_REFUSED"):
    """To the gateway session that sent op 4 only."""

    d: VoiceRefusal


Event = (
    ReadyEvent
    | ResumedEvent
    | UserUpdate
    | ServerCreate
    | ServerUpdate
    | ServerDelete
    | ServerEmojisUpdate
    | ChannelCreate
    | ChannelUpdate
    | ChannelDelete
    | ChannelRecipientAdd
    | ChannelRecipientRemove
    | ThreadCreate
    | ThreadUpdate
    | ThreadDelete
    | ThreadMembersUpdateEvent
    | RoleCreate
    | RoleUpdate
    | RoleDelete
    | MemberAddEvent
    | MemberUpdateEvent
    | MemberRemoveEvent
    | MessageCreate
    | MessageUpdate
    | MessageDelete
    | MessageDeleteBulk
    | ReactionAdd
    | ReactionRemove
    | PinsUpdateEvent
    | MessageAckEvent
    | TypingStartEvent
    | PresenceUpdateEvent
    | VoiceStateUpdate
    | VoiceServerUpdate
    | VoiceStateRefused
)

_msgpack_decoder = msgspec.msgpack.Decoder(Event)
_msgpack_encoder = msgspec.msgpack.Encoder()


def encode(event: ChatEvent) -> bytes:
    """An event as msgpack `{"t": name, "d": payload}`."""
    return _msgpack_encoder.encode(event)


def decode(data: bytes) -> Event:
    """The event `encode` made. Raises msgspec.DecodeError/ValidationError for anything else."""
    return _msgpack_decoder.decode(data)
