"""The CPU side of the training input, against decoding alone, in one run.

    .venv/bin/python bench/input_bench.py [--images 1000] [--repeats 3] [--sizes 224 128]

The train task's CPU work per image is the product's own `train_transform`: sample a crop from
the JPEG header, decode only that window (at 1/2, 1/4 or 1/8 scale when it is at least twice the
training size), resize it to the training size, keep uint8. Everything else (flip, rotation,
color, PCA lighting, normalization, mixup) runs on the accelerator inside the train step.
"decode only" is a full `decode_jpeg` of the same photos and nothing else: the floor every
pipeline that reads JPEGs pays. Also: the same transform with every window decoded at full
scale, and that with the plain (not antialiased) resize. All are full tf.data pipelines
(parallel map, batch 128, prefetch) over the same in-memory distinct photos of 375x500 px
(bench/photos.py); the variants run interleaved, `repeats` times each, and the best time of
each counts; at each training size. Then how many training crops are decoded at a reduced
scale, and how close their pixels are to full-scale decoding (PSNR, same windows, same resize).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.photos import write_photo_folders  # noqa: E402
from components.train import preprocessing as pp  # noqa: E402
from components.train.config import AugmentConfig  # noqa: E402
from components.train.data import train_transform  # noqa: E402


def features(jpeg: tf.Tensor) -> dict:
    empty = tf.zeros([0], tf.float32)
    return {
        "image": jpeg,
        "label": tf.constant(0, tf.int64),
        "bbox_xmin": empty,
        "bbox_ymin": empty,
        "bbox_xmax": empty,
        "bbox_ymax": empty,
    }


def decode_only(jpeg: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_jpeg(jpeg, channels=3)


def cpu_side(size: int, dct_scaling: bool = True):
    def transform(jpeg: tf.Tensor) -> tf.Tensor:
        augment = AugmentConfig(dct_scaling=dct_scaling)
        return train_transform(features(jpeg), size, augment)["image"]

    return transform


def cpu_side_unfiltered(size: int):
    """The same at full scale with the plain bilinear resize training used before (no
    antialiasing), for the cost of the filter that training now shares with evaluation."""

    def transform(jpeg: tf.Tensor) -> tf.Tensor:
        crop = pp.decode_random_crop(features(jpeg), dct_scaling=False)["image"]
        image = tf.image.resize(crop, [size, size], method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    return transform


def agreement(jpegs: list[bytes], size: int, count: int = 300) -> tuple[float, float, float]:
    """(share of training crops decoded at a reduced scale, mean PSNR in dB of those against
    the same windows decoded at full scale, the lowest PSNR): windows drawn as training draws
    them (area 8-100%, aspect 3/4-4/3), both resized with the same antialiased filter."""
    rng = np.random.default_rng(0)
    scaled, psnrs = 0, []
    for jpeg in jpegs[:count]:
        height, width = tf.io.extract_jpeg_shape(jpeg).numpy()[:2]
        while True:
            area = rng.uniform(0.08, 1.0) * height * width
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w, h = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
            if w <= width and h <= height:
                break
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        # edges on multiples of 8, so that both decode exactly the same pixels at any scale
        top, left, bottom, right = (
            -(-top // 8) * 8,
            -(-left // 8) * 8,
            (top + h) // 8 * 8,
            (left + w) // 8 * 8,
        )
        h, w = bottom - top, right - left
        window = tf.constant([top, left, h, w])
        images = [
            pp.resize_crop({"image": pp.decode_window(jpeg, window, size, dct)}, size)["image"]
            for dct in (True, False)
        ]
        if min(h, w) >= 2 * size:
            scaled += 1
            error = np.mean((images[0].numpy().astype(float) - images[1].numpy()) ** 2)
            psnrs.append(10 * np.log10(255**2 / max(error, 1e-12)))
    if not psnrs:
        return 0.0, float("nan"), float("nan")
    return scaled / count, float(np.mean(psnrs)), float(np.min(psnrs))


def throughput(jpegs: list[bytes], fn) -> float:
    ds = tf.data.Dataset.from_tensor_slices(jpegs).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(128).prefetch(tf.data.AUTOTUNE)
    start = time.perf_counter()
    for _ in ds:
        pass
    return len(jpegs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[224, 128])
    parser.add_argument("--photo", type=int, nargs=2, default=[375, 500], help="height width")
    args = parser.parse_args()
    photo = tuple(args.photo)
    root = write_photo_folders(
        Path(tempfile.mkdtemp()) / "src", args.images, size=photo, distinct=True
    )
    jpegs = [p.read_bytes() for p in sorted(root.rglob("*.JPEG"))]
    for size in args.sizes:
        variants = {
            "decode only": decode_only,
            "CPU side (crop window, resize, uint8)": cpu_side(size),
            "  the same, decoded at full scale": cpu_side(size, dct_scaling=False),
            "  that, resize not antialiased": cpu_side_unfiltered(size),
        }
        best = {name: 0.0 for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                best[name] = max(best[name], throughput(jpegs, fn))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{len(jpegs)} distinct photos of {photo[0]}x{photo[1]} px -> {size}x{size}, best of "
            f"{args.repeats}, {os.cpu_count()} cores, peak RSS {peak_mb:.0f} MB"
        )
        for name, rate in best.items():
            ratio = rate / best["decode only"]
            print(f"{name:40s} {rate:8.1f} images/s {ratio:5.2f}x decode only")
        share, mean, low = agreement(jpegs, size)
        print(
            f"crops at least twice {size} px (decoded at a reduced scale): {share:.0%}; their "
            f"pixels against full-scale decoding: PSNR {mean:.1f} dB on average, {low:.1f} dB "
            "at the lowest"
        )


if __name__ == "__main__":
    main()
