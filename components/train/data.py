"""tf.data input pipelines over the ingested TFRecords, parsed from the reviewed schema.

The CPU's whole job: read, decode the crop window, resize it to the training size, batch uint8.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from components.schema import parsing_spec
from components.train import preprocessing as pp
from components.train.config import AugmentConfig

AUTOTUNE = tf.data.AUTOTUNE


def parse(serialized: tf.Tensor) -> dict:
    """Serialized Example -> dict of every schema feature (var-length ones as SparseTensor)."""
    return tf.io.parse_single_example(serialized, parsing_spec())


def train_transform(features: dict, size: int, augment: AugmentConfig) -> dict:
    """The CPU half of train preprocessing: image uint8 [S, S, 3], a random crop (box-guided
    with the whole image as fallback, or GluonCV's with a center crop as fallback)."""
    if augment.crop == "gluoncv":
        features = pp.decode_resized_crop(
            features, size, augment.crop_area, augment.crop_aspect,
            dct_scaling=augment.dct_scaling,
        )  # fmt: skip
    else:
        features = pp.decode_random_crop(
            features, augment.crop_area, augment.crop_aspect, size, augment.dct_scaling
        )
    return pp.resize_crop(features, size)


def eval_transform(features: dict, size: int) -> dict:
    """Center-crop evaluation preprocessing; output image uint8 [S, S, 3]."""
    return pp.decode_center_crop(features, size)


def _example(features: dict) -> tuple[tf.Tensor, tf.Tensor]:
    return features["image"], tf.cast(features["label"], tf.int32)


def _records(pattern: str) -> tf.data.Dataset:
    """Every record of the files matching `pattern`, in file order."""
    files = tf.data.Dataset.list_files(pattern, shuffle=False)
    return files.interleave(
        tf.data.TFRecordDataset, cycle_length=16, num_parallel_calls=AUTOTUNE, deterministic=True
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: each epoch its own order, the same on every worker."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def epoch_records(
    pattern: str,
    epoch: int,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    workers: int = 1,
    worker: int = 0,
) -> tf.data.Dataset:
    """The serialized records of epoch `epoch` that worker `worker` of `workers` trains on, in
    an order fixed by (seed, epoch): the files shuffled, dealt round-robin to the workers (each
    reads only its own), interleaved, then shuffled through `shuffle_buffer` records. The same
    arguments give the same sequence, which is what lets a resumed run skip what it has seen.
    """
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"no training shards match {pattern}")
    if len(files) < workers:
        raise ValueError(
            f"{len(files)} training shards cannot feed {workers} workers (each reads its own "
            "shards): ingest with train_shards of at least the number of workers"
        )
    order = epoch_seed(seed, epoch)
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.shuffle(len(files), seed=order, reshuffle_each_iteration=False).shard(workers, worker)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(16, len(files)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return ds.shuffle(shuffle_buffer, seed=order, reshuffle_each_iteration=False)


def remaining_records(
    pattern: str,
    epoch: int,
    skip: int,
    batch_size: int,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    workers: int = 1,
    worker: int = 0,
) -> tf.data.Dataset:
    """This worker's records of epoch `epoch` after its first `skip` steps of global batch
    `batch_size`, endless: a step of the cluster takes batch_size / workers records from each
    worker's stream (tf.distribute splits each batch among the replicas). The epoch's order
    repeats from its start should a worker's shards run short, in a resumed run as in one that
    never stopped."""
    ds = epoch_records(pattern, epoch, shuffle_buffer, seed, workers, worker)
    return ds.repeat().skip(skip * batch_size // workers)


def train_dataset(
    pattern: str,
    batch_size: int,
    size: int,
    augment: AugmentConfig,
    shuffle_buffer: int = 10_000,
    seed: int = 0,
    epoch: int = 0,
    skip: int = 0,
    workers: int = 1,
    worker: int = 0,
    device: str | None = None,
) -> tf.data.Dataset:
    """Batches (image uint8 [B, S, S, 3], label int32 [B]) of epoch `epoch` from its batch
    `skip` on; `batch_size` is the global batch. `device` (one GPU without tf.distribute,
    whose strategies place batches themselves): the next batches are copied there ahead, so
    the ~38 MB of a 256 x 224² uint8 batch crosses while the step before it computes.

    A resumed run skips what the epoch's first `skip` steps read (`remaining_records`), before
    any decoding. The parallel decode may swap neighbouring records, so a batch at the point
    of the kill can differ by a few records (within the decode's window) from the one the run
    would have taken; the rest of the epoch is the same.
    """
    ds = remaining_records(pattern, epoch, skip, batch_size, shuffle_buffer, seed, workers, worker)
    ds = ds.map(
        lambda s: _example(train_transform(parse(s), size, augment)),
        num_parallel_calls=AUTOTUNE,
        deterministic=False,
    )
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
    if workers > 1:  # sharded here, by file: tf.distribute must not shard it again
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(options)
    if device:  # the last transformation, as it must be
        ds = ds.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))
    return ds


def eval_dataset(pattern: str, batch_size: int, size: int) -> tf.data.Dataset:
    """Every validation record once, in file order: (image uint8 [B, S, S, 3], label [B])."""
    ds = _records(pattern)
    ds = ds.map(lambda s: _example(eval_transform(parse(s), size)), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def jpeg_dataset(pattern: str, batch_size: int) -> tf.data.Dataset:
    """Raw stored JPEG bytes, labels and the file each record came from, in file order (the
    same order on every call: two models scored with it are scored image by image), for
    evaluating a servable that decodes by itself."""
    files = tf.data.Dataset.list_files(pattern, shuffle=False)
    ds = files.interleave(
        lambda f: tf.data.TFRecordDataset(f).map(lambda r: (r, f)),
        cycle_length=16, num_parallel_calls=AUTOTUNE, deterministic=True,
    )  # fmt: skip

    def fields(record: tf.Tensor, source: tf.Tensor):
        parsed = parse(record)
        return parsed["image"], parsed["label"], source

    ds = ds.map(fields, num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
