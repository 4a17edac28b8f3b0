"""Ingestion throughput: the Beam job (local multi-process runner) against a plain single-process
Python loop that writes the same TFRecords, side by side in one run, outputs checked identical.

    .venv/bin/python bench/ingest_bench.py [--images 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.photos import write_photo_folders  # noqa: E402
from components.ingest import LOCAL_BEAM_ARGS, IngestConfig, run_ingest  # noqa: E402
from components.ingest.images import BadImage, to_stored_image  # noqa: E402
from components.ingest.records import (  # noqa: E402
    make_example,
    order_key,
    shard_name,
    shard_of,
    tfrecord_frame,
)
from components.ingest.sources import discover  # noqa: E402


def plain_loop(source: Path, output: Path, shards: dict[str, int]) -> int:
    """What a one-file converter does: every file in turn, then the shards in key order."""
    found = discover(str(source))
    per_shard = defaultdict(list)
    for item in found.items:
        if item.problem:  # unlabelled: quarantined, as in the Beam job
            continue
        try:
            stored = to_stored_image(Path(item.path).read_bytes())
        except BadImage:
            continue
        key = order_key(item.split, item.relpath)
        example = make_example(stored, item.label, item.text, Path(item.relpath).name, item.boxes)
        per_shard[(item.split, shard_of(key, shards[item.split]))].append((key, example))
    output.mkdir(parents=True)
    for (split, shard), records in per_shard.items():
        with open(output / shard_name(split, shard, shards[split]), "wb") as handle:
            for _, example in sorted(records):
                handle.write(tfrecord_frame(example))
    return sum(len(r) for r in per_shard.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    source = write_photo_folders(work / "src", args.images, odd_every=20)
    shards = {"train": 4, "validation": 1}
    print(f"{args.images} JPEGs of 400x500 px (5% PNG or CMYK), {os.cpu_count()} cores")

    start = time.perf_counter()
    written = plain_loop(source, work / "loop", shards)
    loop_s = time.perf_counter() - start

    variants = {
        "Beam, local default": list(LOCAL_BEAM_ARGS),
        "Beam, multi-processing": [
            "--runner=DirectRunner",
            "--direct_running_mode=multi_processing",
            f"--direct_num_workers={os.cpu_count()}",
        ],
    }
    print(f"plain Python loop      : {written / loop_s:7.1f} images/s ({loop_s:.1f} s)")
    for number, (name, beam_args) in enumerate(variants.items()):
        output = work / f"beam{number}"
        start = time.perf_counter()
        meta = run_ingest(
            IngestConfig(
                source=str(source),
                output=str(output),
                train_shards=4,
                validation_shards=1,
                beam_args=beam_args,
            ),
            on_stage=lambda s: None,
        )
        beam_s = time.perf_counter() - start
        assert sum(meta["records"].values()) == written
        for shard in sorted((work / "loop").iterdir()):
            assert shard.read_bytes() == (output / shard.name).read_bytes(), shard.name
        print(
            f"{name:23s}: {written / beam_s:7.1f} images/s ({beam_s:.1f} s, "
            f"{loop_s / beam_s:.2f}x the loop; {' '.join(beam_args[1:])}); shards identical"
        )


if __name__ == "__main__":
    main()
