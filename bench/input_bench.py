"""The CPU side of the training input, against decoding alone, in one run.

    .venv/bin/python bench/input_bench.py [--images 1000] [--repeats 3] [--size 224]

The train task's CPU work per image is the product's own `train_transform`: sample a crop from
the JPEG header, decode only that window, resize it to the training size, keep uint8. Everything
else (flip, rotation, color, PCA lighting, normalization, mixup) runs on the accelerator inside
the train step. "decode only" is a full `decode_jpeg` of the same photos and nothing else: the
floor every pipeline that reads JPEGs pays. Both are full tf.data pipelines (parallel map, batch
128, prefetch) over the same in-memory photo crops of 400x500 px; the variants run interleaved,
`repeats` times each, and the best time of each counts. The ratio to decode-only follows, and
the cost of the antialiased resize (shared with evaluation) against the plain one.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

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


def cpu_side(size: int):
    def transform(jpeg: tf.Tensor) -> tf.Tensor:
        return train_transform(features(jpeg), size, AugmentConfig())["image"]

    return transform


def cpu_side_unfiltered(size: int):
    """The same with the plain bilinear resize training used before (no antialiasing), for the
    cost of the filter that training now shares with evaluation."""

    def transform(jpeg: tf.Tensor) -> tf.Tensor:
        crop = pp.decode_random_crop(features(jpeg))["image"]
        image = tf.image.resize(crop, [size, size], method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    return transform


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
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    root = write_photo_folders(Path(tempfile.mkdtemp()) / "src", args.images)
    jpegs = [p.read_bytes() for p in sorted(root.rglob("*.JPEG"))]
    variants = {
        "decode only": decode_only,
        "CPU side (crop window, resize, uint8)": cpu_side(args.size),
        "  the same, resize not antialiased": cpu_side_unfiltered(args.size),
    }
    best = {name: 0.0 for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            best[name] = max(best[name], throughput(jpegs, fn))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{len(jpegs)} JPEGs of 400x500 px -> {args.size}x{args.size}, best of {args.repeats}, "
        f"{os.cpu_count()} cores, peak RSS {peak_mb:.0f} MB"
    )
    for name, rate in best.items():
        print(f"{name:40s} {rate:8.1f} images/s")
    ratio = best["CPU side (crop window, resize, uint8)"] / best["decode only"]
    print(f"ratio to decode-only: {ratio:.2f}")
    filtered = best["CPU side (crop window, resize, uint8)"]
    print(
        f"antialiased / plain resize: {filtered / best['  the same, resize not antialiased']:.2f}"
    )


if __name__ == "__main__":
    main()
