"""A dataset of the odd and broken files real image sets contain, made on the fly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import jpeg_bytes, pattern_image


def _save(image: Image.Image, fmt: str, **args) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **args)
    return out.getvalue()


def odd_but_decodable() -> dict[str, bytes]:
    """name -> bytes of files that must be stored as RGB JPEGs."""
    rgb = Image.fromarray(pattern_image(1, 0, (60, 80)))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    gray16 = Image.fromarray((np.arange(60 * 80).reshape(60, 80) * 13 % 65535).astype(np.uint16))
    frames = [rgb.convert("P"), Image.fromarray(pattern_image(2, 0, (60, 80))).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    return {
        "baseline.JPEG": jpeg_bytes(np.asarray(rgb)),
        "cmyk.JPEG": _save(rgb.convert("CMYK"), "JPEG"),
        "grayscale.JPEG": _save(rgb.convert("L"), "JPEG"),
        "progressive.JPEG": _save(rgb, "JPEG", progressive=True),
        "png_named.JPEG": _save(rgb, "PNG"),
        "palette.png": _save(rgb.convert("P"), "PNG"),
        "rgba.png": _save(rgba, "PNG"),
        "gray16.png": _save(gray16, "PNG"),
        "bitmap.bmp": _save(rgb, "BMP"),
        "animated.gif": gif.getvalue(),
        "photo.webp": _save(rgb, "WEBP"),
        "huge.JPEG": _save(Image.new("RGB", (6000, 4000), (10, 120, 200)), "JPEG"),
        "ünïcødé 名前.JPEG": jpeg_bytes(pattern_image(1, 1, (60, 80))),
    }


def broken() -> dict[str, bytes]:
    """name -> bytes of files that must be quarantined."""
    good = jpeg_bytes(pattern_image(0, 0, (60, 80)))
    corrupt = bytearray(good)
    corrupt[2:40] = b"\x00" * 38  # headers destroyed
    return {
        "empty.JPEG": b"",
        "truncated.JPEG": good[: len(good) // 2],
        "corrupt.JPEG": bytes(corrupt),
        "error_page.JPEG": b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "random.JPEG": bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)),
    }


def make_odd_dataset(root: Path) -> Path:
    """Class folders: class a holds the odd files, class b the broken ones, plus good images."""
    for split in ("train", "val"):
        for label, name in enumerate(("n01000000", "n02000000")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(3):
                (folder / f"good_{i}.JPEG").write_bytes(jpeg_bytes(pattern_image(label, i)))
    for name, data in odd_but_decodable().items():
        (root / "train" / "n01000000" / name).write_bytes(data)
    for name, data in broken().items():
        (root / "train" / "n02000000" / name).write_bytes(data)
    (root / "val" / "n09999999").mkdir()
    (root / "val" / "n09999999" / "unknown_class.JPEG").write_bytes(jpeg_bytes(pattern_image(0, 9)))
    return root
