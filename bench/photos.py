"""Benchmark data: real photo crops (scikit-learn's two sample photos) at ImageNet-like sizes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_photo_folders(
    root: Path,
    count: int,
    classes: int = 10,
    size=(400, 500),
    odd_every: int = 0,
    distinct: bool = False,
) -> Path:
    """`count` JPEGs of `size` (H, W) in class folders (90% train); every `odd_every`-th is a PNG
    or CMYK JPEG, as in crawled data, so that the re-encoding path is measured too.

    By default each is a crop of one of scikit-learn's two sample photos, so they are near
    copies of one another by the hundred (a worst case for finding copies). `distinct`: each is
    a mosaic of four crops (each quadrant its own photo of three, place, scale and mirroring),
    as unlike one another as different photos are; the pixels, and so the JPEG's statistics,
    are still those of real photos."""
    rng = np.random.default_rng(0)
    height, width = size
    photos = _photos(3 if distinct else 2)
    for i in range(count):
        if distinct:
            image = Image.new("RGB", (width, height))
            for top in (0, height // 2):
                for left in (0, width // 2):
                    box = (width - width // 2 if left else width // 2,
                           height - height // 2 if top else height // 2)  # fmt: skip
                    image.paste(_crop(photos[rng.integers(len(photos))], rng, box), (left, top))
        else:
            image = _crop(photos[i % len(photos)], rng, (width, height), low=0.5, mirror=False)
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


def _photos(count: int) -> list[np.ndarray]:
    """scikit-learn's two sample photos, then matplotlib's Grace Hopper."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos.append(np.asarray(Image.open(handle).convert("RGB")))
    return photos[:count]


def _crop(
    photo: np.ndarray, rng, size: tuple[int, int], low: float = 0.2, mirror: bool = True
) -> Image.Image:
    """A random crop of `photo` (a `low` to 1 share of each side), resized to `size` (W, H)."""
    scale = rng.uniform(low, 1.0)
    h, w = int(photo.shape[0] * scale), int(photo.shape[1] * scale)
    y, x = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
    image = Image.fromarray(photo[y : y + h, x : x + w]).resize(size)
    if mirror and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def real_photo_tiles(size: int = 160, min_std: float = 20.0) -> list[Image.Image]:
    """Distinct real photos: the non-overlapping `size`-pixel tiles of the three photos that the
    installed packages ship (scikit-learn's two, matplotlib's Grace Hopper) whose gray levels
    vary by at least `min_std` (a patch of clear sky says nothing, and two of them look alike
    to anyone). 19 tiles at the defaults."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos.append(Image.open(handle).convert("RGB"))
    tiles = []
    for photo in photos:
        width, height = photo.size
        for y in range(0, height - size + 1, size):
            for x in range(0, width - size + 1, size):
                tile = photo.crop((x, y, x + size, y + size))
                if np.asarray(tile.convert("L"), np.float32).std() >= min_std:
                    tiles.append(tile)
    return tiles
