"""Image cleaning (Pillow): checked from the header before decoding, orientation applied,
metadata stripped by re-encoding, a WebP preview and thumbnail made.

Everything here blocks and is CPU-bound: `ImageWorkers` runs it in worker threads behind a
CapacityLimiter, so a burst of uploads queues rather than taking every core or the event loop.
A file that is not a decodable image of its sniffed kind raises BadImage (a 400), never
anything else: Pillow raises many types for corrupt input, all are caught here.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, TypeVar

import msgspec
import trio
from PIL import Image, ImageOps, ImageSequence

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

MAX_PIXELS = 40_000_000
MAX_SIDE = 10_000
PREVIEW_SIDE = 1280
THUMB_SIDE = 320
AVATAR_SIDE = 512
EMOJI_SIDE = 128
MAX_FRAMES = 1000  # frames of an animated image kept; each is decoded in turn

# Pillow's own bomb check is at 2x its limit and only warns below; ours runs first, on the
# header. Its limit is raised so it never fires for images our check let through.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS + 1
_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


class BadImage(Exception):
    """Not a usable image: corrupt, truncated, of another format, or too large."""


class Cleaned(msgspec.Struct, frozen=True):
    data: bytes  # re-encoded, without metadata
    content_type: str
    width: int
    height: int
    animated: bool
    preview: bytes | None  # WebP, longest side <= PREVIEW_SIDE (None for a small still image)
    thumbnail: bytes  # WebP, longest side <= THUMB_SIDE


def probe(data: bytes, content_type: str) -> Image.Image:
    """Open the image lazily and check its size from the header: nothing decoded yet."""
    expected = _FORMATS.get(content_type)
    if expected is None:
        raise BadImage(f"not an image type: {content_type}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[expected])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"the image has too many pixels; at most {MAX_PIXELS}") from exc
    except Exception as exc:
        raise BadImage(f"not a readable {expected} image") from exc
    width, height = im.size
    if width < 1 or height < 1:
        raise BadImage("the image has no pixels")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise BadImage(f"the image is {width}x{height}; at most {MAX_SIDE} px a side")
    if width * height > MAX_PIXELS:
        raise BadImage(f"the image has {width * height} pixels; at most {MAX_PIXELS}")
    return im


def _guarded(what: Callable[[], T]) -> T:
    try:
        return what()
    except BadImage:
        raise
    except (MemoryError, Exception) as exc:  # Pillow raises many types for bad input
        raise BadImage("the image is corrupt or truncated") from exc


def clean(data: bytes, content_type: str) -> Cleaned:
    """Decode, orient, strip and re-encode an image of the sniffed `content_type`, with its
    preview and thumbnail. Raises BadImage."""
    return _guarded(lambda: _clean(data, content_type))


def _clean(data: bytes, content_type: str) -> Cleaned:
    im = probe(data, content_type)
    animated = bool(getattr(im, "is_animated", False)) and content_type in (
        "image/gif",
        "image/webp",
    )
    fmt = _FORMATS[content_type]
    if animated:
        frames, durations = _frames(im)
        first = frames[0]
        out = io.BytesIO()
        first.save(
            out,
            format=fmt,
            save_all=True,
            append_images=frames[1:],
            duration=durations,
            loop=im.info.get("loop", 0),
            **({"lossless": True} if fmt == "WEBP" else {}),
        )
        width, height = first.size
    else:
        im.load()
        still = ImageOps.exif_transpose(im)  # the orientation, applied to the pixels
        still.info = {}  # nothing of the original's metadata reaches the encoder
        first = still
        out = io.BytesIO()
        _save_still(still, fmt, out)
        width, height = still.size
    preview = None
    if max(width, height) > THUMB_SIDE:
        preview = _webp(first, PREVIEW_SIDE)
    return Cleaned(
        data=out.getvalue(),
        content_type=content_type,
        width=width,
        height=height,
        animated=animated,
        preview=preview,
        thumbnail=_webp(first, THUMB_SIDE),
    )


def _frames(im: Image.Image) -> tuple[list[Image.Image], list[int]]:
    frames: list[Image.Image] = []
    durations: list[int] = []
    for frame in ImageSequence.Iterator(im):
        if len(frames) >= MAX_FRAMES:
            break
        durations.append(int(frame.info.get("duration", 100)) or 100)
        frames.append(frame.convert("RGBA"))
    return frames, durations


def _save_still(im: Image.Image, fmt: str, out: io.BytesIO) -> None:
    if fmt == "JPEG":
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        im.save(out, format="JPEG", quality=90, optimize=True)
    elif fmt == "GIF":
        im.save(out, format="GIF")
    elif fmt == "WEBP":
        im.save(out, format="WEBP", quality=90)
    else:
        im.save(out, format="PNG", optimize=False)


def _webp(im: Image.Image, side: int) -> bytes:
    small = im.copy()
    if small.mode not in ("RGB", "RGBA"):
        small = small.convert("RGBA")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="WEBP", quality=80)
    return out.getvalue()


class Square(msgspec.Struct, frozen=True):
    data: bytes  # WebP
    side: int
    animated: bool


def square(data: bytes, content_type: str, side: int) -> Square:
    """An avatar, icon or emoji: center-cropped to a square, at most `side` px, metadata
    stripped. Animated GIF/WebP stay animated (as animated WebP); stills become WebP too.
    Raises BadImage."""
    return _guarded(lambda: _square(data, content_type, side))


def _square(data: bytes, content_type: str, side: int) -> Square:
    im = probe(data, content_type)
    animated = bool(getattr(im, "is_animated", False))
    if animated:
        frames, durations = _frames(im)
        shaped = [_fit(frame, side) for frame in frames]
        out = io.BytesIO()
        shaped[0].save(
            out,
            format="WEBP",
            save_all=True,
            append_images=shaped[1:],
            duration=durations,
            loop=0,
            quality=85,
        )
        return Square(out.getvalue(), shaped[0].size[0], True)
    im.load()
    still = _fit(ImageOps.exif_transpose(im), side)
    out = io.BytesIO()
    still.save(out, format="WEBP", quality=85)
    return Square(out.getvalue(), still.size[0], False)


class Fitted(msgspec.Struct, frozen=True):
    data: bytes  # WebP, the first frame of an animated image
    width: int
    height: int


def fit_webp(data: bytes, content_type: str, side: int) -> Fitted:
    """A still WebP of the image, oriented, at most `side` px a side, without metadata (what
    other features store, e.g. link preview images). Raises BadImage."""
    return _guarded(lambda: _fit_webp(data, content_type, side))


def _fit_webp(data: bytes, content_type: str, side: int) -> Fitted:
    im = probe(data, content_type)
    im.load()
    still = ImageOps.exif_transpose(im)
    out = _webp(still, side)
    width, height = Image.open(io.BytesIO(out)).size
    return Fitted(out, width, height)


def _fit(im: Image.Image, side: int) -> Image.Image:
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA")
    edge = min(im.size)
    fitted = ImageOps.fit(im, (min(edge, side), min(edge, side)), Image.Resampling.LANCZOS)
    fitted.info = {}
    return fitted


class ImageWorkers:
    """The bounded pool image work runs in (`threads` at once; more wait their turn)."""

    def __init__(self, threads: int) -> None:
        self.limiter = trio.CapacityLimiter(threads)

    async def clean(self, data: bytes, content_type: str) -> Cleaned:
        return await trio.to_thread.run_sync(clean, data, content_type, limiter=self.limiter)

    async def square(self, data: bytes, content_type: str, side: int) -> Square:
        return await trio.to_thread.run_sync(square, data, content_type, side, limiter=self.limiter)

    async def fit_webp(self, data: bytes, content_type: str, side: int) -> Fitted:
        return await trio.to_thread.run_sync(
            fit_webp, data, content_type, side, limiter=self.limiter
        )
