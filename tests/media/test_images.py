from __future__ import annotations

import io
import resource

import pytest
import trio
from PIL import Image

from relay.media import images
from relay.media.images import BadImage, ImageWorkers
from tests.media import samples


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_exif_gps_stripped_and_orientation_applied() -> None:
    original = samples.jpeg_with_gps((80, 40), orientation=6)
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(samples.GPS_TAG)
    cleaned = images.clean(original, "image/jpeg")
    im = decoded(cleaned.data)
    assert (cleaned.width, cleaned.height) == im.size == (40, 80)  # rotated upright
    assert not im.getexif()
    assert b"SpyCam" not in cleaned.data
    assert b"secret comment" not in cleaned.data
    assert "exif" not in im.info
    assert "comment" not in im.info
    assert cleaned.preview is None  # small: the thumbnail is enough
    assert decoded(cleaned.thumbnail).format == "WEBP"


def test_preview_and_thumbnail_sizes() -> None:
    cleaned = images.clean(samples.image("PNG", (2000, 1000)), "image/png")
    assert cleaned.preview is not None
    assert decoded(cleaned.preview).size == (1280, 640)
    assert decoded(cleaned.thumbnail).size == (320, 160)


def test_animated_gif_stays_animated() -> None:
    cleaned = images.clean(samples.animated_gif(3), "image/gif")
    im = Image.open(io.BytesIO(cleaned.data))
    assert cleaned.animated
    assert getattr(im, "n_frames", 1) == 3


def test_polyglot_gif_loses_its_script() -> None:
    gif = samples.image("GIF", (8, 8))
    polyglot = gif + b"/*';alert(document.domain)//"
    cleaned = images.clean(polyglot, "image/gif")
    assert b"alert" not in cleaned.data


def test_bomb_header_refused_without_allocating() -> None:
    bomb = samples.png_header(100_000, 100_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadImage, match=r"pixels|a side"):
        images.clean(bomb, "image/png")
    with pytest.raises(BadImage, match="pixels"):
        images.clean(samples.png_header(9000, 9000), "image/png")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 20_000  # KiB: nothing near the 30 GB the header claims


@pytest.mark.parametrize(
    "data",
    [
        samples.image("PNG")[:60],
        samples.image("JPEG", (300, 300))[:400],
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        b"GIF89a" + b"\xff" * 40,
        b"RIFF\x10\x00\x00\x00WEBPVP8 garbage",
    ],
    ids=["png-cut", "jpeg-cut", "png-corrupt", "gif-corrupt", "webp-corrupt"],
)
def test_truncated_and_corrupt_images_are_bad_image(data: bytes) -> None:
    kind = {
        b"\x89P": "image/png",
        b"\xff\xd8": "image/jpeg",
        b"GI": "image/gif",
        b"RI": "image/webp",
    }
    with pytest.raises(BadImage):
        images.clean(data, kind[data[:2]])


def test_other_format_than_sniffed_is_refused() -> None:
    with pytest.raises(BadImage):
        images.clean(samples.image("PNG"), "image/jpeg")


def test_square_crop_and_fit() -> None:
    big = images.square(samples.image("PNG", (1200, 700)), "image/png", 512)
    assert decoded(big.data).size == (512, 512)
    assert big.side == 512
    small = images.square(samples.image("PNG", (100, 60)), "image/png", 512)
    assert decoded(small.data).size == (60, 60)
    animated = images.square(samples.animated_gif(2), "image/gif", 128)
    assert animated.animated
    assert getattr(Image.open(io.BytesIO(animated.data)), "n_frames", 1) == 2
    fitted = images.fit_webp(samples.jpeg_with_gps((2000, 1000)), "image/jpeg", 1280)
    assert (fitted.width, fitted.height) == decoded(fitted.data).size == (640, 1280)


async def test_workers_are_bounded() -> None:
    workers = ImageWorkers(2)
    results = []

    async def one() -> None:
        results.append(await workers.clean(samples.image("PNG", (400, 400)), "image/png"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    assert len(results) == 5
    assert workers.limiter.total_tokens == 2
