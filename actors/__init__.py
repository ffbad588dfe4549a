"""Relay's actor runtime: bounded-inbox actors and the registry that starts and supervises them."""

from actors.base import Actor, Asked, Reply
from actors.errors import ActorError, ActorStopped, AskTimeout, Overloaded
from actors.registry import Registry

__all__ = [
    "Actor",
    "ActorError",
    "ActorStopped",
    "AskTimeout",
    "Asked",
    "Overloaded",
    "Registry",
    "Reply",
]
