"""Content-based conversion of every odd-but-decodable file, and quarantine of broken ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.ingest.images import BadImage, _is_baseline_jpeg, to_stored_image
from tests.conftest import jpeg_bytes
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


def _photo_crops(rng: np.random.Generator):
    """(name, JPEG) of four 375x500 crops of each of scikit-learn's sample photos, placed by
    `rng` (which the caller may go on drawing from between crops)."""
    from sklearn.datasets import load_sample_images

    for index, photo in enumerate(load_sample_images().images):
        for crop in range(4):
            y, x = rng.integers(0, 60), rng.integers(0, 100)
            yield f"photo{index}-{crop}", jpeg_bytes(photo[y : y + 375, x : x + 500], quality=90)


def _damaged_photos() -> list[tuple[str, bytes]]:
    """Real photo JPEGs cut short, without their end marker, or with bytes overwritten."""
    rng = np.random.default_rng(0)
    cases = []
    for name, data in _photo_crops(rng):
        cases.append((name, data))
        cases.append((f"{name} cut", data[: int(len(data) * 0.9)]))
        cases.append((f"{name} no end marker", data[:-2]))
        for hit in range(3):
            spot = int(rng.integers(len(data) // 4, len(data) - 100))
            damaged = bytearray(data)
            damaged[spot : spot + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
            cases.append((f"{name} overwritten {hit}", bytes(damaged)))
    return cases


def test_every_stored_image_decodes_in_tensorflow_and_damage_never_passes_silently() -> None:
    """Whatever is stored (kept as is, or re-encoded) decodes with tf.io.decode_jpeg to the
    stated size; a stream cut short is always quarantined."""
    stored = quarantined = 0
    for name, data in _damaged_photos():
        try:
            image = to_stored_image(data)
        except BadImage:
            quarantined += 1
            continue
        assert not name.endswith("cut"), name
        pixels = tf.io.decode_jpeg(image.jpeg)
        assert pixels.shape == (image.height, image.width, 3), name
        stored += 1
    assert stored >= 8 and quarantined >= 8


def _jpeg_that_pillow_reads_without_its_end_marker() -> bytes:
    """A real photo whose last block ends right at the cut: libjpeg warns, Pillow accepts."""
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[0]
    for offset in range(400):
        data = jpeg_bytes(photo[offset % 50 : offset % 50 + 96, offset : offset + 128])[:-2]
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
            return data
        except OSError:
            continue
    raise AssertionError("no such crop found")


def test_jpeg_without_end_marker_is_reencoded_so_tensorflow_reads_it() -> None:
    data = _jpeg_that_pillow_reads_without_its_end_marker()
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_jpeg(data)
    stored = to_stored_image(data)
    assert stored.reencoded
    assert tf.io.decode_jpeg(stored.jpeg).shape == (96, 128, 3)


def _png_bomb(width: int, height: int) -> bytes:
    """A 16-bit gray PNG of zeros: a few hundred KB that declare width x height x 2 bytes.
    Written row by row, so building it costs no memory either."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    compress, row, idat = zlib.compressobj(9), b"\0" * (1 + 2 * width), []
    for _ in range(height):
        idat.append(compress.compress(row))
    idat.append(compress.flush())
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(idat))
        + (chunk(b"IEND", b""))
    )


BOMB_PROBE = """
import resource, sys
from components.ingest.images import BadImage, to_stored_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    to_stored_image(data, max_bytes=int(sys.argv[2]))
    print("converted")
except BadImage as err:
    print("quarantined:", err)
print("peak growth KB:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_decompression_bomb_is_refused_from_its_header_within_the_budget(tmp_path) -> None:
    """10,000 x 10,000 16-bit pixels in ~200 KB: once 2.6 GB of memory at its peak. The peak
    RSS growth of a fresh process that is handed the file stays far below the budget."""
    import subprocess
    import sys
    from pathlib import Path

    bomb = _png_bomb(10_000, 10_000)
    assert len(bomb) < 400_000
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    budget = 64 * 2**20
    out = subprocess.run(
        [sys.executable, "-c", BOMB_PROBE, str(path), str(budget)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent,
    ).stdout  # fmt: skip
    assert "quarantined: too large: 10000x10000x7 bytes > budget 67,108,864 bytes" in out, out
    growth_bytes = int(out.rsplit(":", 1)[1]) * 1024
    assert growth_bytes < budget, out


def test_images_within_the_budget_convert_and_the_budget_counts_bytes_per_pixel() -> None:
    gray16 = io.BytesIO()
    Image.fromarray(np.full((600, 500), 40_000, np.uint16)).save(gray16, format="PNG")
    # 500 x 600 x 7 bytes (16-bit, its 8-bit copy, RGB) = 2.1 MB: within 2.2 MB; RGB needs 8
    assert to_stored_image(gray16.getvalue(), max_bytes=2_200_000).width == 500
    rgb = jpeg_bytes(np.zeros((600, 500, 3), np.uint8))
    with pytest.raises(BadImage, match=r"too large: 500x600x8 bytes > budget 2,200,000"):
        to_stored_image(rgb, max_bytes=2_200_000)
    palette = io.BytesIO()  # 1 byte decoded, but RGBA, background and composite to convert
    Image.new("P", (500, 600)).save(palette, format="PNG", transparency=0)
    with pytest.raises(BadImage, match=r"too large: 500x600x17 bytes"):
        to_stored_image(palette.getvalue(), max_bytes=2_200_000)


def test_running_out_of_memory_is_never_a_verdict_on_the_file(monkeypatch) -> None:
    """A MemoryError is the machine's limit: it propagates instead of quarantining a good file."""
    from components.ingest import images

    def no_memory(image):  # noqa: ANN001, ANN202
        raise np.core._exceptions._ArrayMemoryError((20_000, 20_000), np.dtype(np.float64))

    monkeypatch.setattr(images, "_to_rgb", no_memory)
    with pytest.raises(MemoryError):
        to_stored_image(ODD["gray16.png"])


@pytest.mark.parametrize("name", ["gray16.png", "cmyk.JPEG", "progressive.JPEG"])
def test_a_decoder_out_of_memory_inside_load_is_never_a_verdict_either(monkeypatch, name) -> None:
    """A decoder that cannot allocate reports it as Pillow's OSError("out of memory when
    reading image file"), raised from image.load(): still the machine's limit, not the file's."""
    from PIL import ImageFile

    def no_memory(self):  # noqa: ANN001, ANN202
        raise ImageFile._get_oserror(-9, encoder=False)

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    with pytest.raises(MemoryError, match="out of memory when reading image file"):
        to_stored_image(ODD[name])


def _sos_end(data: bytes) -> int:
    """Where the first scan's entropy-coded data starts."""
    start = data.index(b"\xff\xda")
    return start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")


def _damaged_scans() -> list[tuple[str, bytes]]:
    """Real photos damaged inside the scan: cut short early, midway and near the end; random
    bytes over the Huffman-coded data; a marker that has no place in a scan (DHT), an early
    end-of-image marker and a stray restart marker, midway and late."""
    rng = np.random.default_rng(1)
    cases = []
    for name, data in _photo_crops(rng):
        scan, end = _sos_end(data), len(data)

        def at(fraction: float, scan: int = scan, end: int = end) -> int:
            return scan + int((end - scan) * fraction)

        for fraction in (0.1, 0.5, 0.97):
            cases.append((f"{name} cut at {fraction}", data[: at(fraction)]))
        for fraction in (0.2, 0.6, 0.95):
            damaged = bytearray(data)
            damaged[at(fraction) : at(fraction) + 16] = rng.bytes(16)
            cases.append((f"{name} huffman data at {fraction}", bytes(damaged)))
        for fraction in (0.5, 0.9):
            for marker in (b"\xff\xc4", b"\xff\xd9", b"\xff\xd0"):
                damaged = bytearray(data)
                damaged[at(fraction) : at(fraction) + 2] = marker
                cases.append((f"{name} {marker.hex()} at {fraction}", bytes(damaged)))
    return cases


def test_the_reduced_scale_check_judges_damage_as_a_full_decode_does() -> None:
    """A kept JPEG is only checked, at 1/8 scale and in gray: every scan damaged so that a full
    decode (Pillow's, and TensorFlow's, which training uses) fails is refused by the check too,
    and what both decode fully is accepted."""

    def decodes(decode, data: bytes) -> bool:
        try:
            decode(data)
            return True
        except Exception:  # noqa: BLE001 - any failure is the verdict
            return False

    refused = 0
    for name, data in _damaged_scans():
        full = decodes(lambda d: Image.open(io.BytesIO(d)).load(), data)
        in_tensorflow = decodes(tf.io.decode_jpeg, data)
        checked = decodes(to_stored_image, data)
        assert checked == full == in_tensorflow, (name, checked, full, in_tensorflow)
        refused += not checked
    assert refused >= 40  # every cut, every misplaced DHT, some Huffman damage
