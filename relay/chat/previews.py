"""Link previews: the links of a new or edited message are fetched after its commit, and what
the pages say becomes the message's link embeds, announced as MESSAGE_UPDATE.

Off the send path: the channel actor's commit hands the stored row to `LinkPreviews.submit`
(through the hub's `on_created` hook; an edit calls it from relay.chat.messages.edit), which
only puts it in a bounded queue. `preview_workers` tasks (owned by `run`'s nursery, in the
services tree) take jobs from it. Overflow policy: DROP NEWEST, counted and logged: a burst of
links costs some previews, never a sender's time or unbounded memory.

A job: skip it if the message suppresses embeds or its author lacks EMBED_LINKS there (checked
at processing time, so a permission taken away in between counts); preview up to 5 links (each
through the cache, else through relay.netfetch's guarded fetch: an HTML page's OpenGraph /
Twitter card / oEmbed / title, or a direct image); put in any images the sender's own embeds
wait for (relay.chat.embedmedia, the image seam: fetched, stored in the media store, Relay's
URL put in); write it all in one transaction that first checks that the message was not edited
meanwhile (relay.storage.messages.set_fetched_embeds); announce; record the stored images the
message shows and release those it does not (relay.chat.images.show_images). No image of a
third party ever reaches an embed: images go through the seam only.

The cache: in memory, not SQLite. A preview is cheap to make again, and writing every fetched
URL through the single SQLite writer would compete with messages for it; a restart losing the
cache costs one fetch per URL. It is bounded (`preview_cache_entries`, least recently used go
first) and each entry lives `preview_cache_ttl_s`; failures are remembered too (for a tenth of
that), so a dead link posted a hundred times is fetched once.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from relay.chat import events
from relay.chat.embedmedia import relay_image
from relay.chat.embeds import (
    Embed,
    EmbedAuthor,
    EmbedProvider,
    pending_images,
    with_image,
)
from relay.chat.imagerefs import embed_image_digests, show_images
from relay.chat.objects import message_out
from relay.chat.pagemeta import MAX_LINKS, OEmbed, PageMeta, find_links, parse_oembed, parse_page
from relay.errors import RelayError
from relay.netfetch import FetchError, Limits, fetch
from relay.netfetch.fetcher import HTML_MAX_BYTES
from relay.permissions import P
from relay.storage import files as stored_files
from relay.storage.messages import SUPPRESS_EMBEDS, split_embeds

if TYPE_CHECKING:
    from relay.chat.context import Chat
    from relay.config import Settings
    from relay.netfetch import FetchPolicy
    from relay.storage.messages import MessageRow

log = logging.getLogger("relay.previews")

HTML_TYPES = ("text/html", "application/xhtml+xml")
OEMBED_TYPES = ("application/json", "text/json", "application/json+oembed")
OEMBED_MAX_BYTES = 64 * 1024
FAILED_TTL_SHARE = 0.1  # failures are remembered for this share of preview_cache_ttl_s
_HTML = Limits(content_types=HTML_TYPES, max_bytes=HTML_MAX_BYTES)
_OEMBED = Limits(content_types=OEMBED_TYPES, max_bytes=OEMBED_MAX_BYTES)


class PreviewCache:
    """URL -> preview (an embed, or None for "no preview"), each until its expiry; at most
    `max_entries`, the least recently used dropped first."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, Embed | None]] = OrderedDict()

    def get(self, url: str, now: float) -> tuple[bool, Embed | None]:
        """(True, preview) if `url` is known and fresh, else (False, None)."""
        entry = self._entries.get(url)
        if entry is None:
            return False, None
        if entry[0] <= now:
            del self._entries[url]
            return False, None
        self._entries.move_to_end(url)
        return True, entry[1]

    def put(self, url: str, preview: Embed | None, now: float) -> None:
        ttl = self.ttl_s if preview is not None else self.ttl_s * FAILED_TTL_SHARE
        self._entries[url] = (now + ttl, preview)
        self._entries.move_to_end(url)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class LinkPreviews:
    """The preview queue and its workers (see the module doc)."""

    def __init__(self, chat: Chat, policy: FetchPolicy, settings: Settings) -> None:
        self.chat = chat
        self.policy = policy
        self.workers = settings.preview_workers
        self.cache = PreviewCache(settings.preview_cache_entries, settings.preview_cache_ttl_s)
        self._send, self._recv = trio.open_memory_channel[Any](settings.preview_queue)
        self._parsers = trio.CapacityLimiter(settings.preview_workers)  # HTML parsing threads
        # Counted for /metrics (relay.telemetry): jobs refused because the queue was full (drop
        # newest); fetches by result ("preview", "none", or the FetchError's reason); cache hits.
        self.dropped = 0
        self.fetches: Counter[str] = Counter()
        self.cache_hits = 0

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker now."""
        return self._send.statistics().current_buffer_used

    def submit(self, row: MessageRow) -> None:
        """Queue a committed message if it may need previews or images; never waits or raises
        (it runs in a channel's publisher, after the commit)."""
        if not wanted(row):
            return
        try:
            self._send.send_nowait(row)
        except trio.WouldBlock:
            self.dropped += 1
            log.warning("preview queue full: a message gets no preview", extra={"id": row.id})
        except trio.ClosedResourceError:
            pass  # shutting down

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.workers):
                nursery.start_soon(self._work)
            task_status.started()

    async def _work(self) -> None:
        async for row in self._recv:
            try:
                await self.process(row)
            except RelayError as e:  # the message or channel went away meanwhile
                log.info("preview not stored", extra={"id": row.id, "reason": str(e)})
            except Exception:  # a bug here must not cost the server its previews
                log.exception("preview job failed", extra={"id": row.id})

    async def process(self, row: MessageRow) -> None:
        """Make and store one message's previews and images; announce them if they changed."""
        chat = self.chat
        rich, _ = split_embeds(row.embeds)
        urls = find_links(row.content) if not row.flags & SUPPRESS_EMBEDS else []
        if urls:
            channel = await chat.store.read(
                chat.q.audience.visible_channel, row.channel_id, row.author.id
            )
            if channel is None or not channel.permissions & P.EMBED_LINKS:
                urls = []
        previews: list[Embed | None] = [None] * len(urls[:MAX_LINKS])

        async def one(index: int, url: str) -> None:
            previews[index] = await self.preview(url)

        async with trio.open_nursery() as nursery:  # a message's links at once, in order
            for index, url in enumerate(urls[:MAX_LINKS]):
                nursery.start_soon(one, index, url)
        links = [msgspec.to_builtins(embed) for embed in previews if embed is not None]
        filled = [await self._with_images(embed) for embed in rich]
        stored = await chat.store.write(
            chat.q.messages.set_fetched_embeds,
            row.channel_id,
            row.id,
            row.content,
            rich,
            filled,
            links,
        )
        if stored is not None:
            event = events.MessageUpdate(d=message_out(stored, for_event=True))
            await chat.fanout.to_channel(row.channel_id, event)
        # Written or not (the message may be gone or edited), the images it does not show now
        # are released; those it shows are counted as its own.
        await show_images(chat, row.id, embed_image_digests([*filled, *links]))

    async def _with_images(self, embed: dict[str, Any]) -> dict[str, Any]:
        for source in pending_images(embed):
            image = await relay_image(self.chat, source.url, self.policy)
            if image is not None:
                embed = with_image(embed, source.slot, image)
        return embed

    async def preview(self, url: str) -> Embed | None:
        """The preview of one link, from the cache or fetched (None: there is none)."""
        known, embed = self.cache.get(url, trio.current_time())
        if known and embed is not None and not await self._images_kept(embed):
            known = False  # its image was released meanwhile (no message showed it): fetch again
        if known:
            self.cache_hits += 1
            return embed
        try:
            embed = await self._fetch_preview(url)
            self.fetches["preview" if embed is not None else "none"] += 1
        except FetchError as e:
            log.info("no preview", extra={"url": url, "reason": e.reason, "detail": e.detail})
            self.fetches[e.reason] += 1
            embed = None
        self.cache.put(url, embed, trio.current_time())
        return embed

    async def _images_kept(self, embed: Embed) -> bool:
        digests = embed_image_digests([msgspec.to_builtins(embed)])
        return all([await self.chat.store.read(stored_files.has_image, d) for d in digests])

    async def _fetch_preview(self, url: str) -> Embed | None:
        try:
            page = await fetch(url, self.policy, _HTML, headers={"Accept": "text/html"})
        except FetchError as e:
            if e.reason == "content_type" and e.media_type.startswith("image/"):
                image = await relay_image(self.chat, url, self.policy)
                return Embed(type="image", url=url, thumbnail=image) if image else None
            raise
        if page.status != 200:
            return None
        html = page.body.decode(_charset(page.headers.get("content-type", "")), "replace")
        meta = await trio.to_thread.run_sync(
            parse_page, html, page.url, limiter=self._parsers, abandon_on_cancel=True
        )
        oembed = await self._oembed(meta.oembed_url) if meta.oembed_url else None
        return await self._embed_of(url, meta, oembed)

    async def _oembed(self, url: str) -> OEmbed | None:
        try:
            answer = await fetch(url, self.policy, _OEMBED, headers={"Accept": "application/json"})
        except FetchError as e:
            log.info("no oEmbed", extra={"url": url, "reason": e.reason})
            return None
        return parse_oembed(answer.body, answer.url) if answer.status == 200 else None

    async def _embed_of(self, url: str, meta: PageMeta, oembed: OEmbed | None) -> Embed | None:
        o = oembed or OEmbed()
        title = meta.title or o.title
        if not title and not meta.description:
            return None
        image_url = meta.image or o.thumbnail_url
        image = await relay_image(self.chat, image_url, self.policy) if image_url else None
        provider_name = meta.site_name or o.provider_name
        video = o.type == "video" or (meta.type or "").startswith("video")
        return Embed(
            type="video" if video else ("article" if meta.type == "article" else "link"),
            title=title,
            description=meta.description,
            url=url,  # the link as posted: a page's og:url cannot send readers elsewhere
            color=meta.color,
            author=EmbedAuthor(name=o.author_name, url=o.author_url) if o.author_name else None,
            provider=(
                EmbedProvider(name=provider_name, url=o.provider_url)
                if provider_name or o.provider_url
                else None
            ),
            thumbnail=image,
        )


def wanted(row: MessageRow) -> bool:
    """Whether a committed message has anything for the workers: links to preview (a cheap
    test first: this runs for every message) or images its rich embeds wait for."""
    if "://" in row.content and not row.flags & SUPPRESS_EMBEDS and find_links(row.content):
        return True
    return row.embeds is not None and '"pending"' in row.embeds


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset":
            name = value.strip().strip('"').lower()
            try:
                "".encode(name)
            except LookupError:
                return "utf-8"
            return name
    return "utf-8"
