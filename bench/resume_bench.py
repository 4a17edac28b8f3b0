"""What a run resumed late in an epoch reads before its first batch: skipping the records it had
seen (what the loop did before) against entering the epoch's order at the resume point.

    .venv/bin/python bench/resume_bench.py [--shards 32] [--records 400] [--bytes 110000]
        [--at 0.1 0.5 0.9] [--imagenet]

Shards of `records` records of `bytes` bytes each (ImageNet's JPEGs average ~110 KB; the bytes
are random, as reading does not look at them), written under a temporary folder. For each
resume point: seconds and bytes read (this process's read calls, /proc/self/io) until the
first record is out, each way, in one run. The files are in the page cache after the first
pass, so the seconds are a floor: on a disk or a network store the skipping way reads the same
bytes again. `--imagenet` also times finding the position alone (no files) on ImageNet's shape:
1,281,167 records in 1,024 shards, a 10,000-record shuffle buffer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no /proc/self/io")


def first_record(make) -> tuple[float, int]:
    before, start = bytes_read(), time.perf_counter()
    next(iter(make()))
    return time.perf_counter() - start, bytes_read() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--bytes", type=int, default=110_000)
    parser.add_argument("--at", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    parser.add_argument("--imagenet", action="store_true")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from components.train.data import _interleaved, epoch_records, remaining_records

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for shard in range(args.shards):
            path = os.path.join(folder, f"train-{shard:05d}-of-{args.shards:05d}")
            with tf.io.TFRecordWriter(path) as writer:
                for _ in range(args.records):
                    writer.write(rng.bytes(args.bytes))
        pattern = os.path.join(folder, "train-*")
        total = args.shards * args.records
        shard_bytes = os.path.getsize(path)
        print(f"{args.shards} shards x {args.records} records x {args.bytes:,} bytes "
              f"({total * args.bytes / 1e9:.2f} GB), batch 256, shuffle buffer 10,000")  # fmt: skip
        first_record(lambda: remaining_records(pattern, 0, 1, 256))  # warm: imports, cache
        print(f"{'at':>5} {'skipping s':>11} {'read MB':>9} {'entering s':>11} {'read MB':>9} "
              f"{'shards read':>12}")  # fmt: skip
        for at in args.at:
            skip = int(at * total) // 256
            old = first_record(
                lambda: epoch_records(pattern, 0, 10_000).repeat().skip(skip * 256)  # noqa: B023
            )
            new = first_record(lambda: remaining_records(pattern, 0, skip, 256))  # noqa: B023
            print(f"{at:>5.0%} {old[0]:>11.2f} {old[1] / 1e6:>9.1f} {new[0]:>11.2f} "
                  f"{new[1] / 1e6:>9.3f} {new[1] / shard_bytes:>12.3f}")  # fmt: skip

    if args.imagenet:
        counts = tf.constant([1251] * 1023 + [1_281_167 - 1251 * 1023], tf.int64)

        def positions(i):
            return tf.data.Dataset.range(counts[i]).map(lambda r: (i, r))

        print("finding the position on ImageNet's shape (1,281,167 records, 1,024 shards):")
        for at in args.at:
            start = time.perf_counter()
            ds = _interleaved(tf.data.Dataset.range(1024), 1024, positions, parallel=False)
            ds = ds.shuffle(10_000, seed=0, reshuffle_each_iteration=False)
            next(iter(ds.repeat().skip(int(at * 1_281_167))))
            print(f"  at {at:.0%}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
