"""Ingestion throughput and memory at two sizes, side by side in one run.

    .venv/bin/python bench/ingest_bench.py [--small 1000] [--large 8000] [--dask-workers 2]
        [--photos distinct|crops]

Real photos, 375x500 px JPEGs (ImageNet's typical size), in class folders: by default distinct
ones (mosaics of crops of the bundled photos, bench/photos.py), with `--photos crops` crops of
two photos (near copies of one another by the hundred: the worst case for the duplicate
search). Measures, on the same files:
- one core's full-decode rate (read the file, decode every pixel with Pillow): the unit;
- a plain single-threaded loop that writes the same shards (what a one-file converter does);
- the Beam job on the local default runner; the same without the duplicate search's
  fingerprints (components/ingest/similarity.py), for their cost; that with the check's decode
  in color, as it was before the fingerprints; and on a local Dask cluster (optional);
each variant in a fresh process at both sizes (wall time of the ingestion call, peak RSS: the
job's process plus its largest shard process). The
marginal rate (images between the sizes / seconds between them) removes start-up costs. Every
variant's shards must be byte-identical to the plain loop's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.photos import write_photo_folders  # noqa: E402

SIZE = (375, 500)


def plain_loop(source: str, output: str) -> int:
    """Every file in turn on one thread, then the shards in key order (all records in memory)."""
    from components.dataset import shard_name
    from components.ingest import IngestConfig, _shard_counts
    from components.ingest.pipeline import convert_item
    from components.ingest.records import order_key, shard_of, tfrecord_frame
    from components.ingest.sources import discover

    found = discover(source)
    shards = _shard_counts(IngestConfig(source=source, output=output), found)
    per_shard = defaultdict(list)
    for item in found.items:
        example, _ = convert_item(item.to_json(), None)
        if example is not None:
            key = order_key(item.split, item.relpath)
            per_shard[(item.split, shard_of(key, shards[item.split]))].append((key, example))
    os.makedirs(output)
    for (split, shard), records in per_shard.items():
        with open(os.path.join(output, shard_name(split, shard, shards[split])), "wb") as handle:
            for _, example in sorted(records):
                handle.write(tfrecord_frame(example))
    return sum(len(r) for r in per_shard.values())


def one_variant(variant: str, source: str, output: str, address: str) -> None:
    """Runs one variant in this (fresh) process and prints its measurements as JSON."""
    from components.ingest import IngestConfig, run_ingest
    from components.ingest.records import example_messages

    example_messages()  # built before the clock

    if variant in ("unhashed", "before"):  # without the duplicate fingerprints, for their cost
        import components.ingest as ingest
        from components.ingest import images, pipeline

        if variant == "before":  # ... and the check's decode in color, as before them
            images.CHECK_MODE = "RGB"

        images.image_hashes = lambda image: None
        pipeline.exact_digest = lambda data: ""
        ingest.find_duplicates = lambda rows: {
            "counts": {"validation-train": 0, "train": 0, "validation": 0}, "leaked": [],
            "search": "none", "near_bits": 0, "pairs": [],
        }  # fmt: skip
    start = time.perf_counter()
    if variant == "loop":
        records = plain_loop(source, output)
    else:
        beam_args = (
            ["--runner=DaskRunner", f"--dask_client_address={address}"]
            if variant == "dask"
            else []  # the local default (given options would keep it to one process)
        )
        meta = run_ingest(
            IngestConfig(source=source, output=output, beam_args=beam_args), on_event=lambda e: None
        )
        records = sum(meta["records"].values())
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # and the largest shard process's (pages it shares with the job's process counted twice)
    rss += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "records": records, "rss_mb": rss}))


def decode_rate(source: Path, limit: int) -> float:
    from PIL import Image

    files = sorted(p for p in source.rglob("*.JPEG"))[:limit]
    start = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            image.load()
    return len(files) / (time.perf_counter() - start)


def run(variant: str, source: Path, output: Path, address: str = "") -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--source", str(source)]
    command += ["--output", str(output), "--address", address]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_shards(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*-of-*"))
    return names == sorted(p.name for p in b.glob("*-of-*")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=8000)
    parser.add_argument(
        "--photos",
        choices=("distinct", "crops"),
        default="distinct",
        help="distinct photos (mosaics of real ones), or crops of two (near copies by the hundred)",
    )
    parser.add_argument("--dask-workers", type=int, default=0, help="0: no Dask variant")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the fastest counts")
    parser.add_argument("--work", default=None, help="keeps the photos between runs")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--address", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return one_variant(args.variant, args.source, args.output, args.address)

    work = Path(args.work or tempfile.mkdtemp(prefix="ingest-bench-"))
    sizes = (args.small, args.large)
    sources = {}
    for n in sizes:
        sources[n] = work / f"{args.photos}-{n}"
        if not (sources[n] / "train").is_dir():
            write_photo_folders(sources[n], n, size=SIZE, distinct=args.photos == "distinct")
    cores = os.cpu_count() or 1
    unit = decode_rate(sources[args.large], 3000)
    print(
        f"{args.small} and {args.large} real photos ({args.photos}), {SIZE[0]}x{SIZE[1]} JPEG, "
        f"{cores} cores"
    )
    print(f"one core, full decode (read + Pillow decode): {unit:.0f} images/s")
    print(f"{'variant':28s} {'s@' + str(sizes[0]):>8s} {'s@' + str(sizes[1]):>8s} "
          f"{'marginal img/s':>15s} {'x cores*decode':>15s} {'peak RSS MB':>16s}")  # fmt: skip

    variants = [
        ("plain loop, 1 thread", "loop"),
        ("Beam, local default", "local"),
        ("the same, no duplicate search", "unhashed"),
        ("that, checked in color (before)", "before"),
    ]
    if args.dask_workers:
        variants.append((f"Beam on Dask, {args.dask_workers} workers", "dask"))
    for old_output in work.glob("out-*"):
        shutil.rmtree(old_output)
    repeat = run("local", sources[args.large], work / "out-repeat")  # also warms the page cache
    for name, variant in variants:
        context = _cluster(args.dask_workers) if variant == "dask" else _no_cluster()
        with context as address:
            if variant == "dask":  # workers import TensorFlow on their first task: warm them
                run(variant, sources[sizes[0]], work / "out-dask-warm-up", address)
            results = {
                n: min(
                    (run(variant, sources[n], work / f"out-{variant}-{n}-{r}", address)
                     for r in range(args.repeat)),
                    key=lambda result: result["seconds"],
                )
                for n in sizes
            }  # fmt: skip
        dt = results[sizes[1]]["seconds"] - results[sizes[0]]["seconds"]
        marginal = (sizes[1] - sizes[0]) / dt
        print(
            f"{name:28s} {results[sizes[0]]['seconds']:8.1f} {results[sizes[1]]['seconds']:8.1f} "
            f"{marginal:15.0f} {marginal / (cores * unit):15.2f} "
            f"{results[sizes[0]]['rss_mb']:7.0f} / {results[sizes[1]]['rss_mb']:6.0f}"
        )
        if variant != "loop":
            for n in sizes:
                if not same_shards(work / f"out-loop-{n}-0", work / f"out-{variant}-{n}-0"):
                    raise SystemExit(f"{name}: shards differ from the plain loop's at {n}")
    identical = same_shards(work / "out-repeat", work / f"out-local-{args.large}-0")
    print(f"local default, {args.large} again: {repeat['seconds']:.1f} s, shards identical: "
          f"{identical}; every variant's shards identical to the plain loop's")  # fmt: skip


def _no_cluster():
    from contextlib import nullcontext

    return nullcontext("")


def _cluster(workers: int):
    from bench.dask_cluster import dask_cluster

    return dask_cluster(workers=workers)


if __name__ == "__main__":
    main()
