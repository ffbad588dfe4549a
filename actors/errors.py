"""Errors the actor runtime raises to callers; each names the actor by its key."""

from __future__ import annotations

import trio


class ActorError(Exception):
    """Base of the runtime's errors, so an edge can catch them all."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class ActorStopped(ActorError):
    """The actor is gone (stopped, crashed or given up) and will not handle the message."""


class Overloaded(ActorError, trio.TooSlowError):
    """The actor's inbox is full; the caller picks the policy (drop, reply busy, disconnect)."""


class AskTimeout(ActorError, trio.TooSlowError):
    """No reply arrived within the ask's timeout."""
