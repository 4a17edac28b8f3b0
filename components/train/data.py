"""tf.data input pipelines over the ingested TFRecords, parsed from the reviewed schema.

The CPU's whole job: read, decode the crop window, resize it to the training size, batch uint8.
"""

from __future__ import annotations

import tensorflow as tf

from components.schema import parsing_spec
from components.train import preprocessing as pp
from components.train.config import AugmentConfig

AUTOTUNE = tf.data.AUTOTUNE


def parse(serialized: tf.Tensor) -> dict:
    """Serialized Example -> dict of every schema feature (var-length ones as SparseTensor)."""
    return tf.io.parse_single_example(serialized, parsing_spec())


def train_transform(features: dict, size: int, augment: AugmentConfig) -> dict:
    """The CPU half of train preprocessing: image uint8 [S, S, 3], a random (box-guided) crop."""
    features = pp.decode_random_crop(features, augment.crop_area, augment.crop_aspect)
    return pp.resize_crop(features, size)


def eval_transform(features: dict, size: int) -> dict:
    """Center-crop evaluation preprocessing; output image uint8 [S, S, 3]."""
    return pp.decode_center_crop(features, size)


def _records(pattern: str, shuffle: bool, seed: int) -> tf.data.Dataset:
    files = tf.data.Dataset.list_files(pattern, shuffle=shuffle, seed=seed)
    return files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=16,
        num_parallel_calls=AUTOTUNE,
        deterministic=not shuffle,
    )


def _example(features: dict) -> tuple[tf.Tensor, tf.Tensor]:
    return features["image"], tf.cast(features["label"], tf.int32)


def train_dataset(
    pattern: str,
    batch_size: int,
    size: int,
    augment: AugmentConfig,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
) -> tf.data.Dataset:
    """Endless shuffled batches (image uint8 [B, S, S, 3], label int32 [B])."""
    ds = _records(pattern, shuffle=True, seed=seed).shuffle(shuffle_buffer, seed=seed).repeat()
    ds = ds.map(
        lambda s: _example(train_transform(parse(s), size, augment)),
        num_parallel_calls=AUTOTUNE,
        deterministic=False,
    )
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def eval_dataset(pattern: str, batch_size: int, size: int) -> tf.data.Dataset:
    """Every validation record once, in file order: (image uint8 [B, S, S, 3], label [B])."""
    ds = _records(pattern, shuffle=False, seed=0)
    ds = ds.map(lambda s: _example(eval_transform(parse(s), size)), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def jpeg_dataset(pattern: str, batch_size: int) -> tf.data.Dataset:
    """Raw stored JPEG bytes and labels, for evaluating a servable that decodes by itself."""
    ds = _records(pattern, shuffle=False, seed=0)
    ds = ds.map(lambda s: parse(s), num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda f: (f["image"], f["label"]), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
