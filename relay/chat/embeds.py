"""Embeds: the Discord-shaped embed object, and the checks on those a sender writes.

A message's `embeds` hold the sender's rich embeds (type "rich", checked here) and then link
previews (relay.chat.previews). Limits are Discord's: at most 10 embeds; title 256, description
4096, at most 25 fields of name 256 / value 1024, footer text 2048, author name 256 characters;
6000 characters in all of a message's embeds. A request over one is a 400 naming the field
(`embeds[0].title`; `embeds` for the total).

Images are never handed to readers as third-party URLs: `image`, `thumbnail`, `author.icon_url`
and `footer.icon_url` of a sent embed are checked and then kept out of the stored embed; they
are handed to relay.chat.embedmedia (after the commit), the one place that will copy them into
Relay's media store and put Relay's own URL in.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from relay.chat.args import field_error
from relay.storage.messages import SUPPRESS_EMBEDS

MAX_EMBEDS = 10
MAX_FIELDS = 25
MAX_TOTAL_CHARS = 6000
MAX_URL_CHARS = 2048

Url = Annotated[str, Meta(min_length=1, max_length=MAX_URL_CHARS, pattern=r"^https?://[^\s]+$")]
Title = Annotated[str, Meta(min_length=1, max_length=256)]
Description = Annotated[str, Meta(min_length=1, max_length=4096)]
FieldName = Annotated[str, Meta(min_length=1, max_length=256)]
FieldValue = Annotated[str, Meta(min_length=1, max_length=1024)]
FooterText = Annotated[str, Meta(min_length=1, max_length=2048)]
Color = Annotated[int, Meta(ge=0, le=0xFFFFFF)]

# -- what readers get (also what is stored, as JSON) ---------------------------------------------


class _Out(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Absent parts are left out, as Discord does, rather than sent as null."""


class EmbedField(_Out, frozen=True, kw_only=True):
    name: str
    value: str
    inline: bool  # always sent


class EmbedAuthor(_Out, frozen=True, kw_only=True):
    name: str
    url: str | None = None
    icon_url: str | None = None  # a Relay media URL, never a third party's


class EmbedFooter(_Out, frozen=True, kw_only=True):
    text: str
    icon_url: str | None = None  # a Relay media URL, never a third party's


class EmbedImage(_Out, frozen=True, kw_only=True):
    url: str  # a Relay media URL, never a third party's
    width: int | None = None
    height: int | None = None


class EmbedProvider(_Out, frozen=True, kw_only=True):
    name: str | None = None
    url: str | None = None


class Embed(_Out, frozen=True, kw_only=True):
    type: Literal["rich", "link", "article", "image", "video"]  # always sent
    title: str | None = None
    description: str | None = None
    url: str | None = None
    timestamp: str | None = None  # ISO 8601
    color: int | None = None
    fields: list[EmbedField] = []
    author: EmbedAuthor | None = None
    footer: EmbedFooter | None = None
    image: EmbedImage | None = None
    thumbnail: EmbedImage | None = None
    provider: EmbedProvider | None = None


_stored = msgspec.json.Decoder(list[Embed])
_encoder = msgspec.json.Encoder()


def embeds_of(stored: str | None) -> list[Embed]:
    """A message's stored embeds (storage keeps them as a JSON array)."""
    return _stored.decode(stored) if stored else []


def stored(embeds: list[Embed]) -> str | None:
    return _encoder.encode(embeds).decode() if embeds else None


def shown(stored_embeds: str | None, flags: int) -> list[Embed]:
    """The embeds readers see: none with SUPPRESS_EMBEDS."""
    return [] if flags & SUPPRESS_EMBEDS else embeds_of(stored_embeds)


# -- what a sender writes ------------------------------------------------------------------------


class _In(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class EmbedFieldIn(_In, frozen=True, kw_only=True):
    name: FieldName
    value: FieldValue
    inline: bool = False


class EmbedAuthorIn(_In, frozen=True, kw_only=True):
    name: Title
    url: Url | None = None
    icon_url: Url | None = None


class EmbedFooterIn(_In, frozen=True, kw_only=True):
    text: FooterText
    icon_url: Url | None = None


class EmbedMediaIn(_In, frozen=True, kw_only=True):
    url: Url


class EmbedIn(_In, frozen=True, kw_only=True):
    """A rich embed as sent (`type` may be given, and must then be "rich")."""

    type: Literal["rich"] = "rich"
    title: Title | None = None
    description: Description | None = None
    url: Url | None = None
    timestamp: datetime | None = None
    color: Color | None = None
    fields: Annotated[list[EmbedFieldIn], Meta(max_length=MAX_FIELDS)] = []
    author: EmbedAuthorIn | None = None
    footer: EmbedFooterIn | None = None
    image: EmbedMediaIn | None = None
    thumbnail: EmbedMediaIn | None = None


EmbedsIn = Annotated[list[EmbedIn], Meta(max_length=MAX_EMBEDS)]


PENDING = "pending"  # stored beside a rich embed: {slot: url} of images not yet in the store


class ImageSource(msgspec.Struct, frozen=True):
    """An image a sent embed asked for: which slot ("image", "thumbnail", "author.icon_url",
    "footer.icon_url") and the URL given."""

    slot: str
    url: str


def text_chars(embed: EmbedIn) -> int:
    """The characters Discord counts toward the 6000 of a message."""
    total = len(embed.title or "") + len(embed.description or "")
    total += sum(len(f.name) + len(f.value) for f in embed.fields)
    total += len(embed.footer.text) if embed.footer else 0
    total += len(embed.author.name) if embed.author else 0
    return total


def checked_embeds(given: list[EmbedIn]) -> str | None:
    """Sent embeds as stored (JSON; None for none): images left out, the URLs asked for kept
    under PENDING (never shown: `embeds_of` ignores it) for relay.chat.embedmedia.

    Raises BadRequest("invalid_field") naming `embeds` (over 6000 characters in all) or
    `embeds[i]...` (an embed with nothing to show, a timestamp out of range). Per-field limits
    are the types' own (the edge's decoder names the field)."""
    if len(given) > MAX_EMBEDS:
        raise field_error("embeds", f"at most {MAX_EMBEDS} embeds")
    if sum(text_chars(e) for e in given) > MAX_TOTAL_CHARS:
        raise field_error("embeds", f"at most {MAX_TOTAL_CHARS} characters in all embeds")
    out: list[dict[str, Any]] = []
    for index, e in enumerate(given):
        if not (text_chars(e) or e.url or e.image or e.thumbnail):
            raise field_error(f"embeds[{index}]", "an embed needs some text, a url or an image")
        try:
            timestamp = _iso(e.timestamp) if e.timestamp is not None else None
        except (OverflowError, ValueError):  # a zone offset that leaves the datetime range
            raise field_error(f"embeds[{index}].timestamp", "out of range") from None
        embed = Embed(
            type="rich",
            title=e.title,
            description=e.description,
            url=e.url,
            timestamp=timestamp,
            color=e.color,
            fields=[EmbedField(name=f.name, value=f.value, inline=f.inline) for f in e.fields],
            author=EmbedAuthor(name=e.author.name, url=e.author.url) if e.author else None,
            footer=EmbedFooter(text=e.footer.text) if e.footer else None,
        )
        stored_embed: dict[str, Any] = msgspec.to_builtins(embed)
        pending = {
            slot: url
            for slot, url in (
                ("image", e.image.url if e.image else None),
                ("thumbnail", e.thumbnail.url if e.thumbnail else None),
                ("author.icon_url", e.author.icon_url if e.author else None),
                ("footer.icon_url", e.footer.icon_url if e.footer else None),
            )
            if url is not None
        }
        if pending:
            stored_embed[PENDING] = pending
        out.append(stored_embed)
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False) if out else None


def pending_images(embed: dict[str, Any]) -> list[ImageSource]:
    """The images a stored rich embed still waits for."""
    return [ImageSource(slot, url) for slot, url in embed.get(PENDING, {}).items()]


def with_image(embed: dict[str, Any], slot: str, image: EmbedImage) -> dict[str, Any]:
    """A stored rich embed with one of its pending images put in (as Relay's media URL)."""
    done = dict(embed)
    pending = {k: v for k, v in embed.get(PENDING, {}).items() if k != slot}
    if pending:
        done[PENDING] = pending
    else:
        done.pop(PENDING, None)
    if slot in ("image", "thumbnail"):
        done[slot] = msgspec.to_builtins(image)
    else:
        part, _, key = slot.partition(".")
        done[part] = {**done.get(part, {}), key: image.url}
    return done


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without a zone is taken as UTC
    utc = moment.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
