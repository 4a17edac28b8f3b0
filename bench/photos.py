"""Benchmark data: real photo crops (scikit-learn's two sample photos) at ImageNet-like sizes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_photo_folders(
    root: Path, count: int, classes: int = 10, size=(400, 500), odd_every: int = 0
) -> Path:
    """`count` JPEGs of `size` (H, W) in class folders (90% train); every `odd_every`-th is a PNG
    or CMYK JPEG, as in crawled data, so that the re-encoding path is measured too."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    height, width = size
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = rng.uniform(0.5, 1.0)
        h, w = int(photo.shape[0] * scale), int(photo.shape[1] * scale)
        y, x = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
        image = Image.fromarray(photo[y : y + h, x : x + w]).resize((width, height))
        split = "val" if (i // classes) % 10 == 9 else "train"
        folder = root / split / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        out = io.BytesIO()
        if odd_every and i % odd_every == 1:
            image.save(out, format="PNG")
        elif odd_every and i % odd_every == 2:
            image.convert("CMYK").save(out, format="JPEG", quality=90)
        else:
            image.save(out, format="JPEG", quality=90)
        (folder / f"img_{i:06d}.JPEG").write_bytes(out.getvalue())
    return root
