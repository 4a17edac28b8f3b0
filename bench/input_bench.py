"""Training input pipeline throughput: our train preprocessing (crop inside the JPEG decoder, one
resampling for resize/flip/rotation, one color matrix) against the original's (decode the whole
image, crop, then each op on its own), and decode alone, in one run.

    .venv/bin/python bench/input_bench.py [--images 1000] [--repeats 3]

Each variant is a full tf.data pipeline (parallel map, batch 128) over the same in-memory JPEGs
of ~400x500 px; the variants run interleaved, `repeats` times each, and the best time counts.
"""

from __future__ import annotations

import argparse
import math
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

SIZE = 224


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


def decode_only(jpeg):
    return tf.io.decode_jpeg(jpeg, channels=3)


def ours(jpeg):
    return train_transform(features(jpeg), SIZE, AugmentConfig())["image"]


def original(jpeg):
    """The original's pipeline (its slips fixed): decode everything, crop, then one op at a time."""
    image = tf.io.decode_jpeg(jpeg, channels=3)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        tf.zeros([1, 0, 4]),
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.image.resize(tf.slice(image, begin, size), [SIZE, SIZE])
    image = tf.image.random_flip_left_right(image)
    angle = tf.random.uniform([], -7.0, 7.0) * math.pi / 180
    cos, sin, c = tf.cos(angle), tf.sin(angle), (SIZE - 1) / 2
    rotation = tf.stack(
        [cos, -sin, c - cos * c + sin * c, sin, cos, c - sin * c - cos * c, 0.0, 0.0]
    )
    image = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis],
        transforms=rotation[tf.newaxis],
        output_shape=[SIZE, SIZE],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )[0]
    image = image / 255.0 * tf.random.uniform([], 0.6, 1.4)
    image = tf.image.adjust_saturation(image, tf.random.uniform([], 0.6, 1.4))
    image = tf.image.adjust_hue(image, tf.random.uniform([], -0.2, 0.2))
    image = tf.clip_by_value(image, 0.0, 1.0) * 255.0
    alpha = tf.random.normal([3], stddev=0.1)
    image += tf.linalg.matvec(tf.constant(pp.PCA_EIGVEC), alpha * tf.constant(pp.PCA_EIGVAL))
    return pp.normalize({"image": tf.clip_by_value(image, 0.0, 255.0)})["image"]


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
    args = parser.parse_args()
    root = write_photo_folders(Path(tempfile.mkdtemp()) / "src", args.images)
    jpegs = [p.read_bytes() for p in sorted(root.rglob("*.JPEG"))]
    variants = {
        "decode only": decode_only,
        "original (decode, then crop)": original,
        "ours (crop in decoder)": ours,
    }
    best = {name: 0.0 for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            best[name] = max(best[name], throughput(jpegs, fn))
    print(f"{len(jpegs)} JPEGs of 400x500 px -> {SIZE}x{SIZE}, best of {args.repeats}")
    for name, rate in best.items():
        print(f"{name:30s} {rate:8.1f} images/s")
    ratio = best["ours (crop in decoder)"] / best["original (decode, then crop)"]
    print(f"ratio ours / original: {ratio:.2f}x")


if __name__ == "__main__":
    main()
