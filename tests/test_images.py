"""Content-based conversion of every odd-but-decodable file, and quarantine of broken ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.ingest.images import BadImage, _is_baseline_jpeg, to_stored_image
from tests.odd_files import broken, odd_but_decodable

ODD = odd_but_decodable()
BROKEN = broken()


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_files_become_baseline_rgb_jpegs(name: str) -> None:
    stored = to_stored_image(ODD[name], max_side=4096)
    decoded = tf.io.decode_jpeg(stored.jpeg, channels=0)  # channels as stored, not forced
    assert decoded.shape[-1] == 3
    assert (stored.height, stored.width) == tuple(decoded.shape[:2])
    assert _is_baseline_jpeg(stored.jpeg)
    image = Image.open(io.BytesIO(stored.jpeg))
    assert (image.format, image.mode) == ("JPEG", "RGB")


def test_baseline_rgb_jpeg_is_kept_byte_for_byte() -> None:
    stored = to_stored_image(ODD["baseline.JPEG"])
    assert stored.jpeg == ODD["baseline.JPEG"] and not stored.reencoded


@pytest.mark.parametrize(
    "name", ["cmyk.JPEG", "progressive.JPEG", "png_named.JPEG", "grayscale.JPEG"]
)
def test_non_baseline_or_non_rgb_files_are_reencoded(name: str) -> None:
    stored = to_stored_image(ODD[name])
    assert stored.reencoded
    assert stored.source_format != "JPEG" or name == "progressive.JPEG"


def test_png_named_jpeg_is_detected_by_content() -> None:
    assert to_stored_image(ODD["png_named.JPEG"]).source_format == "PNG"


def test_cmyk_colors_survive_conversion() -> None:
    stored = to_stored_image(ODD["cmyk.JPEG"])
    original = np.asarray(Image.open(io.BytesIO(ODD["baseline.JPEG"])), np.float32)
    converted = tf.io.decode_jpeg(stored.jpeg).numpy().astype(np.float32)
    assert np.abs(original.mean((0, 1)) - converted.mean((0, 1))).max() < 20


def test_transparency_is_composited_on_white() -> None:
    transparent = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    out = io.BytesIO()
    transparent.save(out, format="PNG")
    pixels = tf.io.decode_jpeg(to_stored_image(out.getvalue()).jpeg).numpy()
    assert pixels.min() > 240


def test_huge_images_are_downscaled_to_max_side() -> None:
    stored = to_stored_image(ODD["huge.JPEG"], max_side=1000)
    assert max(stored.height, stored.width) == 1000 and stored.resized


def test_huge_images_are_kept_without_max_side() -> None:
    stored = to_stored_image(ODD["huge.JPEG"])
    assert (stored.width, stored.height) == (6000, 4000) and not stored.resized


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.JPEG", "empty file"),
        ("truncated.JPEG", "truncated"),
        ("corrupt.JPEG", "not an image"),
        ("error_page.JPEG", "HTML"),
        ("random.JPEG", "not an image"),
    ],
)
def test_broken_files_raise_with_a_reason(name: str, reason: str) -> None:
    with pytest.raises(BadImage, match=reason):
        to_stored_image(BROKEN[name])


@pytest.mark.parametrize("fmt", ["PNG", "PPM", "TIFF"])
def test_16_bit_gray_keeps_its_range(fmt: str) -> None:
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, format=fmt)
    pixels = tf.io.decode_jpeg(to_stored_image(out.getvalue()).jpeg).numpy()
    assert pixels.min() < 10 and pixels.max() > 245  # neither black nor clipped


def test_big_endian_16_bit_tiff_converts() -> None:
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(">u2")
    image = Image.frombytes("I;16B", (32, 32), ramp.tobytes())
    out = io.BytesIO()
    image.save(out, format="TIFF")
    pixels = tf.io.decode_jpeg(to_stored_image(out.getvalue()).jpeg).numpy()
    assert pixels.max() > 200


def test_boxes_stay_relative_to_the_source_after_downscaling() -> None:
    from components.ingest.records import make_example

    big = io.BytesIO()
    Image.new("RGB", (1000, 800), (20, 30, 40)).save(big, format="PNG")
    stored = to_stored_image(big.getvalue(), max_side=500)
    assert (stored.width, stored.height) == (500, 400)
    example = tf.train.Example.FromString(
        make_example(stored, 0, "x", "x.png", [[100, 100, 900, 700]])
    )
    feature = example.features.feature
    assert feature["bbox_xmin"].float_list.value[0] == pytest.approx(0.1)
    assert feature["bbox_ymax"].float_list.value[0] == pytest.approx(0.875)
