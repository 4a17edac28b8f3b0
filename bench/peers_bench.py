"""Ingestion beside its peers on the same photos and cores, in one run.

    .venv/bin/python bench/peers_bench.py [--photos 8000] [--repeat 2] [--threads 2]

Distinct real photos (bench/photos.py mosaics), 375x500 JPEGs in class folders (90% train), then
each way of making TFRecord shards of them, in a fresh process each, the same shard counts
(train 16, validation 2), `--threads` threads each; the best of `--repeat` runs, with the peak
resident memory of that process:
- reference: `bench/reference_converter.py`, TensorFlow's build_imagenet_data.py ported to TF 2
  (every image decoded once in full to check it has 3 channels; PNG and CMYK found by a list of
  names; a bad file kills its thread and leaves its shards short);
- bytes only: each file's bytes framed into shards, nothing decoded or checked (the I/O and
  framing floor, what a converter that trusts its input costs);
- TrickFlow: `run_ingest` (every entry accounted for, the format found from the content, every
  image decoded at 1/8 scale in gray to prove it whole, baseline JPEGs kept byte for byte, the
  rest re-encoded, decode bombs and links refused, fingerprints for the duplicate search), as
  it runs by default (`--threads` processes writing shards, one thread each), and in one
  process with `--threads` threads (the default before shard processes).
Peak memory: the process's, and for TrickFlow's processes the largest of them ("+ N").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TRAIN_SHARDS, VALIDATION_SHARDS = 16, 2


def bytes_only(source: Path, output: Path, threads: int) -> None:
    from components.ingest.records import tfrecord_frame

    output.mkdir()
    for split, folder, shards in (("train", "train", TRAIN_SHARDS),
                                  ("validation", "val", VALIDATION_SHARDS)):  # fmt: skip
        files = sorted((source / folder).rglob("*.JPEG"))

        def write(shard: int, files=files, split=split, shards=shards) -> None:
            with open(output / f"{split}-{shard:05d}-of-{shards:05d}", "wb") as handle:
                for path in files[shard::shards]:
                    handle.write(tfrecord_frame(path.read_bytes()))

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, range(shards)))


def one(variant: str, source: Path, output: Path, threads: int) -> dict:
    """One variant in this fresh process: seconds from after its imports (TensorFlow's ~3 s is
    paid by each alike) to its last shard, and the process's peak memory."""
    import tensorflow  # noqa: F401

    from bench import reference_converter
    from components.ingest import IngestConfig, run_ingest

    start = time.perf_counter()
    if variant == "reference":
        output.mkdir()
        synsets = sorted(os.listdir(source / "train"))
        for folder, name, shards in (("val", "validation", VALIDATION_SHARDS),
                                     ("train", "train", TRAIN_SHARDS)):  # fmt: skip
            reference_converter.convert(
                str(source / folder), name, str(output), shards, threads, synsets, log=False
            )
    elif variant == "bytes":
        bytes_only(source, output, threads)
    else:
        processes = {"processes": threads, "threads": 1} if variant == "trickflow" else {
            "processes": 1, "threads": threads}  # fmt: skip
        run_ingest(
            IngestConfig(source=str(source), output=str(output), train_shards=TRAIN_SHARDS,
                         validation_shards=VALIDATION_SHARDS, **processes),
            on_event=lambda event: None,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak, "children_mb": children}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one(args.variant, args.source, args.output, args.threads)))
        return

    from bench.photos import write_photo_folders

    names = {"reference": "reference (build_imagenet_data.py, TF 2)", "bytes": "bytes only",
             "trickflow": f"TrickFlow run_ingest, {args.threads} processes",
             "threads": f"TrickFlow, one process, {args.threads} threads"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = write_photo_folders(work / "photos", args.photos, size=(375, 500), distinct=True)
        results = {}
        for r in range(args.repeat):  # variants alternate, so drift hits each alike
            for variant in names:
                command = [sys.executable, __file__, "--variant", variant, "--source",
                           str(source), "--output", str(work / f"{variant}-{r}"),
                           "--threads", str(args.threads)]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode:
                    raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                if variant not in results or result["seconds"] < results[variant]["seconds"]:
                    results[variant] = result
        reference = results["reference"]["seconds"]
        print(f"{args.photos:,} photos 375x500, {args.threads} threads, best of {args.repeat}")
        print(f"{'':42s} {'seconds':>8s} {'images/s':>9s} {'vs reference':>13s} {'peak MB':>8s}")
        for variant, name in names.items():
            r = results[variant]
            each = f" + {r['children_mb']:.0f} each" if variant == "trickflow" else ""
            print(f"{name:42s} {r['seconds']:8.2f} {args.photos / r['seconds']:9.0f} "
                  f"{reference / r['seconds']:12.2f}x {r['peak_mb']:8.0f}{each}")  # fmt: skip


if __name__ == "__main__":
    main()
