"""The ingestion driver's own work at ImageNet size: build the item list, fingerprint it, stage
one task file per shard. Synthetic entries with ImageNet's paths (no images are read).

    .venv/bin/python bench/driver_bench.py [--train 1281167] [--validation 50000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.dataset import ClassInfo  # noqa: E402
from components.ingest import IngestConfig, _shard_counts, _stage_tasks  # noqa: E402
from components.ingest.sources import Discovery, SourceItem  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=1_281_167)
    parser.add_argument("--validation", type=int, default=50_000)
    args = parser.parse_args()
    start = time.perf_counter()
    classes = [ClassInfo(i, f"n{i:08d}", "tench, Tinca tinca") for i in range(1000)]
    items = []
    for i in range(args.train):
        c = classes[i % 1000]
        rel = f"train/{c.wnid}/{c.wnid}_{i}.JPEG"
        xml = f"/data/imagenet/bbox/train/{c.wnid}/{c.wnid}_{i}.xml" if i % 2 else ""
        items.append(
            SourceItem(f"/data/imagenet/{rel}", rel, "train", 110_000, c.label, c.wnid, c.text,
                       box_file=xml)
        )  # fmt: skip
    for i in range(args.validation):
        c = classes[i % 1000]
        rel = f"val/ILSVRC2012_val_{i + 1:08d}.JPEG"
        items.append(
            SourceItem(f"/data/imagenet/{rel}", rel, "validation", 110_000, c.label, c.wnid, c.text)
        )
    found = Discovery("ilsvrc2012", classes, items, [])
    print(f"{len(items)} items built: {time.perf_counter() - start:.1f} s, {peak_mb():.0f} MB")
    found.fingerprint()
    print(f"fingerprinted: {time.perf_counter() - start:.1f} s, {peak_mb():.0f} MB")
    shards = _shard_counts(IngestConfig(source="/data/imagenet", output="/out"), found)
    staged = time.perf_counter()
    with tempfile.TemporaryDirectory() as staging:
        tasks = _stage_tasks(found, shards, staging, "bench")
    print(
        f"{len(tasks)} task files staged ({shards}): {time.perf_counter() - start:.1f} s "
        f"({time.perf_counter() - staged:.1f} s of it staging), peak RSS {peak_mb():.0f} MB"
    )


if __name__ == "__main__":
    main()
