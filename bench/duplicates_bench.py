"""What finding copies costs ingestion: per photo, and for the pair search.

    .venv/bin/python bench/duplicates_bench.py [--photos 2000] [--rows 8000 100000]

1. Per photo: `to_stored_image` (the check ingestion makes of each file) on real photo crops
   (375x500 JPEG, bench/photos.py), with and without the fingerprints (exact digest and the two
   perceptual hashes), alternating, best of 5 passes each, in one process.
2. The pair search (`find_duplicates`) on the fingerprints of those photos (crops of two
   pictures: nearly every pair is a near copy, the worst case) and on random 64-bit hashes for
   sets of distinct photos of the sizes given (10% validation).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--rows", type=int, nargs="*", default=[8000, 100_000])
    args = parser.parse_args()

    from bench.photos import write_photo_folders
    from components.ingest import images
    from components.ingest.similarity import exact_digest, find_duplicates, image_hashes

    root = write_photo_folders(Path(tempfile.mkdtemp(prefix="dup-bench-")), args.photos)
    files = sorted(root.rglob("*.JPEG"))
    data = [f.read_bytes() for f in files]

    def one_pass(hashing: bool) -> float:
        images.image_hashes = image_hashes if hashing else (lambda image: None)
        start = time.perf_counter()
        for raw in data:
            stored = images.to_stored_image(raw)
            if hashing:
                exact_digest(stored.jpeg)
        return (time.perf_counter() - start) / len(data)

    with_them, without = [], []
    for _ in range(5):
        without.append(one_pass(False))
        with_them.append(one_pass(True))
    plain, hashed = min(without), min(with_them)
    print(f"{len(data)} real photo crops, 375x500 JPEG, one thread")
    print(f"check per photo: {plain * 1e6:.0f} us without fingerprints, {hashed * 1e6:.0f} us "
          f"with (+{100 * (hashed / plain - 1):.1f}%)")  # fmt: skip

    images.image_hashes = image_hashes
    rows = []
    for path, raw in zip(files, data, strict=True):
        stored = images.to_stored_image(raw)
        rows.append({"split": "validation" if "/val/" in str(path) else "train",
                     "path": str(path), "digest": exact_digest(stored.jpeg),
                     "hashes": [f"{h:016x}" for h in stored.hashes or ()]})  # fmt: skip
    start = time.perf_counter()
    found = find_duplicates(rows)
    seconds = time.perf_counter() - start
    print(f"pair search, these {len(rows)} crops of two pictures: {seconds:.2f} s "
          f"({found['search']}; pairs {found['counts']}, {len(found['leaked'])} validation "
          "images copy training images)")  # fmt: skip
    rng = np.random.default_rng(0)
    for n in args.rows:
        distinct = [
            {"split": "validation" if i % 10 == 9 else "train", "path": str(i),
             "digest": str(i), "hashes": [f"{int(h):016x}" for h in rng.integers(0, 2**63, 2)]}
            for i in range(n)
        ]  # fmt: skip
        start = time.perf_counter()
        found = find_duplicates(distinct)
        seconds = time.perf_counter() - start
        print(f"pair search, {n:,} distinct photos (random hashes): {seconds:.2f} s "
              f"({found['search']}; pairs {found['counts']})")  # fmt: skip


if __name__ == "__main__":
    main()
