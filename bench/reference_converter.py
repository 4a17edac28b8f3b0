"""The converter most ImageNet users ran, ported to TensorFlow 2 with its algorithm unchanged:
TensorFlow's `build_imagenet_data.py` (tensorflow/models, research/inception). Used as the
peer in the ingestion benchmark, and by the tests to make Inception-layout TFRecords the way
people made theirs.

    .venv/bin/python bench/reference_converter.py --train_directory SRC/train
        --validation_directory SRC/val --output_directory OUT [--labels_file synsets.txt]
        [--imagenet_metadata_file metadata.txt] [--bounding_box_file boxes.csv]
        [--train_shards 1024] [--validation_shards 128] [--num_threads 8]

What it does, as the original does it: the labels file lists the synsets (one per line; here
the sorted class folders when none is given), and label i (1-based: 0 is left for a
background class) is the i-th; `<dir>/<synset>/*.JPEG` are found per synset, shuffled with
`random.seed(12345)`, cut into `num_threads` equal ranges, each thread writing
`num_shards / num_threads` consecutive shards (`train-00000-of-01024`). Every image is read,
converted if its name is on the hard-coded lists (one PNG, 22 CMYK JPEGs of ILSVRC2012 train),
decoded once to check it has three channels, and written with the Inception features
(`image/encoded`, `image/class/label`, `image/class/synset`, `image/class/text`,
`image/object/bbox/*` relative, `image/filename`, ...). An image that fails to decode raises in
its thread: the thread dies and its shards stay short; nothing else notices.

What TensorFlow 2 changed: one shared `tf.Session` fed through placeholders became the same
ops run eagerly (a kernel releases the GIL while it runs, as `Session.run` did);
`tf.gfile.FastGFile`, `tf.gfile.Glob` and `tf.python_io.TFRecordWriter` became `tf.io.gfile.GFile`,
`tf.io.gfile.glob` and `tf.io.TFRecordWriter`; `np.int` became `int`; flags became argparse.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
from datetime import datetime

import numpy as np

# The original's hard-coded repairs of ILSVRC2012's training set (by file name).
PNG_NAMES = ("n02105855_2933.JPEG",)
CMYK_NAMES = (
    "n01739381_1309.JPEG", "n02077923_14822.JPEG", "n02447366_23489.JPEG",
    "n02492035_15739.JPEG", "n02747177_10752.JPEG", "n03018349_4028.JPEG",
    "n03062245_4620.JPEG", "n03347037_9675.JPEG", "n03467068_12171.JPEG",
    "n03529860_11437.JPEG", "n03544143_17228.JPEG", "n03633091_5218.JPEG",
    "n03710637_5125.JPEG", "n03961711_5286.JPEG", "n04033995_2932.JPEG",
    "n04258138_17003.JPEG", "n04264628_27969.JPEG", "n04336792_7448.JPEG",
    "n04371774_5854.JPEG", "n04596742_4225.JPEG", "n07583066_647.JPEG",
    "n13037406_4650.JPEG",
)  # fmt: skip


def _feature(kind: str, values):
    import tensorflow as tf

    values = values if isinstance(values, list) else [values]
    if kind == "int":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def inception_example(
    filename: str,
    jpeg: bytes,
    label: int,
    synset: str,
    human: str,
    boxes: list[list[float]],
    height: int,
    width: int,
) -> bytes:
    """One record with the Inception features; `boxes` relative [xmin, ymin, xmax, ymax]."""
    import tensorflow as tf

    corners = [[b[i] for b in boxes] for i in range(4)]
    features = {
        "image/height": _feature("int", height),
        "image/width": _feature("int", width),
        "image/colorspace": _feature("bytes", "RGB"),
        "image/channels": _feature("int", 3),
        "image/class/label": _feature("int", label),
        "image/class/synset": _feature("bytes", synset),
        "image/class/text": _feature("bytes", human),
        "image/object/bbox/xmin": _feature("float", corners[0]),
        "image/object/bbox/ymin": _feature("float", corners[1]),
        "image/object/bbox/xmax": _feature("float", corners[2]),
        "image/object/bbox/ymax": _feature("float", corners[3]),
        "image/object/bbox/label": _feature("int", [label] * len(boxes)),
        "image/format": _feature("bytes", "JPEG"),
        "image/filename": _feature("bytes", os.path.basename(filename)),
        "image/encoded": _feature("bytes", jpeg),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


class Coder:
    """The original's three image conversions, run eagerly."""

    def png_to_jpeg(self, data: bytes) -> bytes:
        import tensorflow as tf

        image = tf.io.decode_png(data, channels=3)
        return tf.io.encode_jpeg(image, format="rgb", quality=100).numpy()

    def cmyk_to_rgb(self, data: bytes) -> bytes:
        import tensorflow as tf

        image = tf.io.decode_jpeg(data, channels=0)
        return tf.io.encode_jpeg(image, format="rgb", quality=100).numpy()

    def decode_jpeg(self, data: bytes) -> np.ndarray:
        import tensorflow as tf

        image = tf.io.decode_jpeg(data, channels=3).numpy()
        assert image.ndim == 3 and image.shape[2] == 3
        return image


def process_image(filename: str, coder: Coder) -> tuple[bytes, int, int]:
    import tensorflow as tf

    with tf.io.gfile.GFile(filename, "rb") as handle:
        data = handle.read()
    name = filename.split("/")[-1]
    if name in PNG_NAMES:
        print(f"Converting PNG to JPEG for {filename}")
        data = coder.png_to_jpeg(data)
    elif name in CMYK_NAMES:
        print(f"Converting CMYK to RGB for {filename}")
        data = coder.cmyk_to_rgb(data)
    image = coder.decode_jpeg(data)
    return data, image.shape[0], image.shape[1]


def _write_thread_shards(coder, thread, ranges, name, rows, num_shards, output, log) -> None:
    """Thread `thread`'s `num_shards / threads` consecutive shards, from its range of rows."""
    import tensorflow as tf

    per_thread = num_shards // len(ranges)
    start, stop = ranges[thread]
    bounds = np.linspace(start, stop, per_thread + 1).astype(int)
    done = 0
    for s in range(per_thread):
        shard = thread * per_thread + s
        path = os.path.join(output, f"{name}-{shard:05d}-of-{num_shards:05d}")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(bounds[s], bounds[s + 1]):
                filename, label, synset, human, boxes = rows[i]
                jpeg, height, width = process_image(filename, coder)
                writer.write(
                    inception_example(filename, jpeg, label, synset, human, boxes, height, width)
                )
                done += 1
                if log and not done % 1000:
                    print(f"{datetime.now()} [thread {thread}]: processed {done} of {stop - start}")
                    sys.stdout.flush()


def process_files(name: str, rows: list, num_shards: int, threads: int, output: str, log=True):
    """rows: (filename, label, synset, human, boxes) in the order they are written."""
    assert not num_shards % threads, "num_shards must be a multiple of num_threads"
    spacing = np.linspace(0, len(rows), threads + 1).astype(int)
    ranges = [(int(spacing[i]), int(spacing[i + 1])) for i in range(threads)]
    coder = Coder()
    workers = [
        threading.Thread(
            target=_write_thread_shards,
            args=(coder, t, ranges, name, rows, num_shards, output, log),
        )
        for t in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def find_image_files(directory: str, synsets: list[str]) -> list[tuple[str, int, str]]:
    """(filename, label, synset) of `<directory>/<synset>/*.JPEG`, labels 1-based in the order
    of `synsets`, shuffled with the original's fixed seed."""
    import tensorflow as tf

    found = []
    for label, synset in enumerate(synsets, start=1):
        found += [(f, label, synset) for f in tf.io.gfile.glob(f"{directory}/{synset}/*.JPEG")]
    order = list(range(len(found)))
    random.seed(12345)
    random.shuffle(order)
    return [found[i] for i in order]


def convert(
    directory: str,
    name: str,
    output: str,
    num_shards: int,
    threads: int,
    synsets: list[str],
    humans: dict[str, str] | None = None,
    boxes: dict[str, list[list[float]]] | None = None,
    log: bool = True,
) -> None:
    humans, boxes = humans or {}, boxes or {}
    rows = [
        (f, label, synset, humans.get(synset, synset), boxes.get(os.path.basename(f), []))
        for f, label, synset in find_image_files(directory, synsets)
    ]
    process_files(name, rows, num_shards, threads, output, log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_directory", required=True)
    parser.add_argument("--validation_directory", required=True)
    parser.add_argument("--output_directory", required=True)
    parser.add_argument("--labels_file")
    parser.add_argument("--imagenet_metadata_file")
    parser.add_argument("--bounding_box_file")
    parser.add_argument("--train_shards", type=int, default=1024)
    parser.add_argument("--validation_shards", type=int, default=128)
    parser.add_argument("--num_threads", type=int, default=8)
    args = parser.parse_args()
    if args.labels_file:
        with open(args.labels_file) as handle:
            synsets = [line.strip() for line in handle if line.strip()]
    else:
        synsets = sorted(os.listdir(args.train_directory))
    humans = {}
    if args.imagenet_metadata_file:
        with open(args.imagenet_metadata_file) as handle:
            humans = dict(line.rstrip("\n").split("\t", 1) for line in handle if "\t" in line)
    boxes: dict[str, list[list[float]]] = {}
    if args.bounding_box_file:
        with open(args.bounding_box_file) as handle:
            for line in handle:
                name, *corners = line.strip().split(",")
                boxes.setdefault(name, []).append([float(c) for c in corners])
    os.makedirs(args.output_directory, exist_ok=True)
    for directory, name, shards in (
        (args.validation_directory, "validation", args.validation_shards),
        (args.train_directory, "train", args.train_shards),
    ):
        convert(directory, name, args.output_directory, shards, args.num_threads, synsets,
                humans, boxes)  # fmt: skip


if __name__ == "__main__":
    main()
