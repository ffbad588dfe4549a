"""`Chat`: what every chat operation works with, passed to each explicitly.

The store with each area's queries (`q`, relay.storage.areas), the fan-out
(relay.chat.fanout), the permission views (relay.chat.views: the one
answer to who sees which channel), the settings, and the per-user budgets that every edge shares
(a REST post and a gateway send spend the same one). Built once by the composition root
(relay.services) and handed to the edges; there is no service locator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from relay.chat.messages import SendableMemo
from relay.chat.voice import VoiceStates
from relay.errors import RateLimited
from relay.netfetch import FetchPolicy
from relay.ratelimit import Budget, Decision, RateLimiter
from relay.storage.areas import SQLITE

if TYPE_CHECKING:
    from relay.chat.fanout import Fanout
    from relay.chat.previews import LinkPreviews
    from relay.chat.push import PushNotifier
    from relay.chat.views import Views
    from relay.config import Settings
    from relay.media.service import Media
    from relay.storage.areas import Areas
    from relay.storage.sqlite.db import Store


class LocalBudget:
    """A `Budget` kept in this process (a token bucket per key)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self._limiter = RateLimiter(limit, window_s)

    async def take(self, key: str) -> Decision:
        return self._limiter.hit(key, trio.current_time())


TYPING_KEYS = 50_000  # (user, channel) pairs remembered for that; the idlest are forgotten


class Chat:
    def __init__(
        self,
        store: Store,
        fanout: Fanout,
        views: Views,
        settings: Settings,
        areas: Areas = SQLITE,
        media: Media | None = None,
    ) -> None:
        self.store = store
        self.q = areas  # each area's queries, behind its interface (relay.storage.areas)
        self.fanout = fanout
        self.views = views
        self.settings = settings
        # Messages per user, over REST and all their gateway connections; and their edits,
        # reaction changes and DM opens, each of which is written and sent to others too.
        # Budgets: in this process by default; shared through Redis in cluster mode (set by
        # relay.services, relay.cluster.limits).
        window = settings.message_window_s
        self.message_limiter: Budget = LocalBudget(settings.message_rate, window)
        self.action_limiter: Budget = LocalBudget(settings.action_rate, window)
        self.search_limiter: Budget = LocalBudget(settings.search_rate, window)
        self.typing_limiter = RateLimiter(1, settings.typing_interval_s, max_keys=TYPING_KEYS)
        self.sendable = SendableMemo(views)  # who may post where, as last checked
        self.voice = VoiceStates(settings, fanout)  # who is in which voice channel
        # Set by relay.services when link_previews is on: edits queue their previews here.
        self.link_previews: LinkPreviews | None = None
        # Bot accounts (relay.chat.applications), whose messages count against bot_message_rate;
        # filled at start-up and by every application created or deleted.
        self.bots: set[int] = set()
        self.bot_message_limiter: Budget = LocalBudget(settings.bot_message_rate, window)
        # Messages per webhook (relay.chat.webhooks): webhook_rate per webhook_window_s.
        self.webhook_limiter = RateLimiter(settings.webhook_rate, settings.webhook_window_s)
        # Set by relay.services when push_notifications is on (relay.chat.push).
        self.push: PushNotifier | None = None
        self.media = media  # files (relay.media); None where a test builds Chat without them
        # Where images from URLs users give (embeds, webhook avatars) may be fetched from.
        self.fetch_policy = FetchPolicy.from_settings(settings)

    @property
    def file_urls(self) -> Media | None:
        """What signs the file URLs of message objects (see `objects.message_out`)."""
        return self.media

    async def message_refused(self, user_id: int) -> RateLimited | None:
        """Count one message of `user_id` (a REST post or a gateway send): None if it may go,
        else the error that refuses it (with retry_after)."""
        if user_id in self.bots:
            limiter, name = self.bot_message_limiter, "bot_message_rate"
            return await self._refused(limiter, user_id, "bot messages", name)
        return await self._refused(self.message_limiter, user_id, "messages", "message_rate")

    async def action_refused(self, user_id: int) -> RateLimited | None:
        """Count one message edit, reaction change or DM open of `user_id`, like
        `message_refused`."""
        what = "edits, reactions and DM opens"
        return await self._refused(self.action_limiter, user_id, what, "action_rate")

    async def search_refused(self, user_id: int) -> RateLimited | None:
        """Count one message search of `user_id` (they read the index: the costliest reads)."""
        return await self._refused(self.search_limiter, user_id, "searches", "search_rate")

    async def _refused(
        self, limiter: Budget, user_id: int, what: str, name: str
    ) -> RateLimited | None:
        # Without a broker `take` never yields: a local limit adds no checkpoint.
        decision = await limiter.take(str(user_id))
        if decision.allowed:
            return None
        window = self.settings.message_window_s
        message = f"at most {decision.limit} {what} per {window:g} s"
        return RateLimited.refusing(message, decision, name)
