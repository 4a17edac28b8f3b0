"""tf.data input pipelines over the ingested TFRecords, parsed from the reviewed schema.

The CPU's whole job: read, decode the crop window, resize it to the training size, batch uint8.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from components import dataset
from components.ingest.listing import is_remote
from components.ingest.records import (
    FRAMING,
    DamagedRecords,
    frame_lengths,
    opened_at,
    payload_offsets,
    record_at,
)
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


def _epoch_files(
    pattern: str, epoch: int, seed: int, workers: int, worker: int
) -> tuple[list[str], int]:
    """This worker's shards in epoch `epoch`'s order (shuffled by (seed, epoch), dealt
    round-robin to the workers), and the epoch's shuffling seed."""
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
    return [f.decode() for f in ds.as_numpy_iterator()], order


def _interleaved(ds: tf.data.Dataset, count: int, fn, parallel: bool = True) -> tf.data.Dataset:
    """The records of each element's stream, `count` streams at a time, one from each in turn:
    the shards' interleaving, the same for their bytes as for their record positions (in
    parallel or not, as it is deterministic; positions alone are ~10x faster in one thread)."""
    if not parallel:
        return ds.interleave(fn, cycle_length=min(16, count))
    return ds.interleave(
        fn, cycle_length=min(16, count), num_parallel_calls=AUTOTUNE, deterministic=True
    )


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
    arguments give the same sequence, which is what lets a resumed run start where it stopped.
    """
    files, order = _epoch_files(pattern, epoch, seed, workers, worker)
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = _interleaved(ds, len(files), tf.data.TFRecordDataset)
    return ds.shuffle(shuffle_buffer, seed=order, reshuffle_each_iteration=False)


def record_lengths(shard: str) -> np.ndarray:
    """The length of each record of a TFRecord file, in order: from the index ingestion wrote
    (beside the shard, or beside the file a view's link points to) when it accounts for the
    file's size exactly; otherwise read from each record's 12-byte header, the records
    themselves skipped, not read."""
    size = tf.io.gfile.stat(shard).length
    candidates = [dataset.record_index_file(shard)]
    if not is_remote(shard) and os.path.realpath(shard) != shard:
        candidates.append(dataset.record_index_file(os.path.realpath(shard)))
    for index in candidates:
        if tf.io.gfile.exists(index):
            try:
                with tf.io.gfile.GFile(index, "rb") as handle:
                    lengths = np.asarray(json.load(handle)["lengths"], dtype=np.int64)
            except (ValueError, KeyError, TypeError, OSError):  # unreadable: the headers say
                continue
            if int((lengths + FRAMING).sum()) == size and _agrees(shard, lengths):
                return lengths
    return _scanned_lengths(shard, size)


def _agrees(shard: str, lengths: np.ndarray) -> bool:
    """Whether the first and last records' headers say the lengths the index holds (a shard
    rewritten to the same size under an old index does not)."""
    if not len(lengths):
        return True
    with opened_at(shard) as read_at:
        for k in {0, len(lengths) - 1}:
            header = read_at(
                int(payload_offsets(lengths[k : k + 1])[0])
                - 12
                + int((lengths[:k] + FRAMING).sum()),
                12,
            )
            if len(header) < 12 or int.from_bytes(header[:8], "little") != int(lengths[k]):
                return False
    return True


def _scanned_lengths(path: str, size: int) -> np.ndarray:
    with opened_at(path) as read_at:
        try:
            return np.asarray(frame_lengths(read_at, size, path), dtype=np.int64)
        except DamagedRecords as err:
            raise ValueError(f"{err}; the shard cannot be resumed into (ingest it again)") from err


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
    never stopped.

    A resumed epoch reads nothing it has trained on. Its order is replayed on record positions
    (shard, record), which the shards' record lengths give without reading them: the same
    interleaving and the same seeded shuffle as the records take, so the same permutation. The
    positions past the resume point are then read one record each at its byte offset, through
    Python (a few microseconds a record, for the rest of that one epoch; the next epoch streams
    its shards again). On object stores the resumed epoch skips by reading, as before.
    """
    start = skip * batch_size // workers
    if start == 0 or is_remote(pattern):
        # Object stores: a read at an offset fetches a large chunk (16 MiB through Beam's GCS
        # reader), so the records before the resume point are streamed and skipped there.
        ds = epoch_records(pattern, epoch, shuffle_buffer, seed, workers, worker).repeat()
        return ds.skip(start)
    files, order = _epoch_files(pattern, epoch, seed, workers, worker)
    lengths = [record_lengths(f) for f in files]
    counts = tf.constant([len(x) for x in lengths], tf.int64)

    def positions(i: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.range(counts[i]).map(lambda r: (i, r))

    ds = _interleaved(tf.data.Dataset.range(len(files)), len(files), positions, parallel=False)
    ds = ds.shuffle(shuffle_buffer, seed=order, reshuffle_each_iteration=False)
    read = _RecordReader(files, lengths)
    ds = ds.repeat().skip(start)
    return ds.map(
        lambda i, r: tf.ensure_shape(tf.numpy_function(read, [i, r], tf.string), []),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


class _RecordReader:
    """Record `r` of file `i`, read at its byte offset (TensorFlow's readers read a file from its
    start, even to skip), its checksum checked as TensorFlow's TFRecord reader checks it."""

    def __init__(self, files: list[str], lengths: list[np.ndarray]):
        self.files, self.lengths = files, lengths
        self.offsets = [payload_offsets(x) for x in lengths]

    def __call__(self, i: np.int64, r: np.int64) -> bytes:
        path = self.files[i]
        with opened_at(path) as read_at:
            return record_at(read_at, self.offsets[i][r], int(self.lengths[i][r]), path)


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

    A resumed run starts at the record where the epoch's first `skip` steps ended, reading
    none of theirs (`remaining_records`). The parallel decode may swap neighbouring records,
    so a batch at the point of the kill can differ by a few records (within the decode's
    window) from the one the run would have taken; the rest of the epoch is the same.
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
