"""What finding copies costs ingestion: per photo, and for the pair search.

    .venv/bin/python bench/duplicates_bench.py [--photos 2000] [--pile 8000] [--rows 8000 100000]

1. Per photo: `to_stored_image` (the check ingestion makes of each file) on distinct real
   photos (375x500 JPEG, mosaics of the bundled photos, bench/photos.py): with the
   fingerprints (exact digest and the two perceptual hashes, from the check's decode in gray),
   without them, and without them checked in color as before they existed; alternating, best
   of 5 passes each, in one process.
2. The pair search (`find_duplicates`) on the fingerprints of those photos; on a pile of near
   copies (crops of two pictures: nearly every pair is a near copy, the worst case; time and
   the growth of peak memory); and on random 64-bit hashes for sets of distinct photos of the
   sizes given (10% validation; four hashes each, as ingestion keeps them).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _rows(files: list[Path], data: list[bytes]) -> list[dict]:
    from components.ingest import images
    from components.ingest.similarity import exact_digest

    rows = []
    for path, raw in zip(files, data, strict=True):
        stored = images.to_stored_image(raw)
        rows.append({"split": "validation" if "/val/" in str(path) else "train",
                     "path": str(path), "digest": exact_digest(stored.jpeg),
                     "hashes": [f"{h:016x}" for h in stored.hashes or ()]})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--pile", type=int, default=8000)
    parser.add_argument("--rows", type=int, nargs="*", default=[8000, 100_000])
    args = parser.parse_args()

    from bench.photos import write_photo_folders
    from components.ingest import images
    from components.ingest.similarity import exact_digest, find_duplicates, image_hashes

    root = write_photo_folders(
        Path(tempfile.mkdtemp(prefix="dup-bench-")), args.photos, size=(375, 500), distinct=True
    )
    files = sorted(root.rglob("*.JPEG"))
    data = [f.read_bytes() for f in files]

    def one_pass(hashing: bool, mode: str) -> float:
        images.image_hashes = image_hashes if hashing else (lambda image: None)
        images.CHECK_MODE = mode
        start = time.perf_counter()
        for raw in data:
            stored = images.to_stored_image(raw)
            if hashing:
                exact_digest(stored.jpeg)
        return (time.perf_counter() - start) / len(data)

    variants = {"with fingerprints": (True, "L"), "without": (False, "L"),
                "without, checked in color (before)": (False, "RGB")}  # fmt: skip
    times = {name: [] for name in variants}
    for _ in range(5):
        for name, (hashing, mode) in variants.items():
            times[name].append(one_pass(hashing, mode))
    images.image_hashes, images.CHECK_MODE = image_hashes, "L"
    best = {name: min(t) for name, t in times.items()}
    base = best["without"]
    print(f"{len(data)} distinct real photos, 375x500 JPEG, one thread: check per photo")
    for name, seconds in best.items():
        print(f"  {name:36s} {seconds * 1e6:6.0f} us ({100 * (seconds / base - 1):+.1f}%)")

    rows = _rows(files, data)
    start = time.perf_counter()
    found = find_duplicates(rows)
    seconds = time.perf_counter() - start
    print(f"pair search, these {len(rows)} photos: {seconds:.2f} s ({found['search']}; pairs "
          f"{found['counts']})")  # fmt: skip

    pile = write_photo_folders(Path(tempfile.mkdtemp(prefix="dup-pile-")), args.pile)
    pile_files = sorted(pile.rglob("*.JPEG"))
    pile_rows = _rows(pile_files, [f.read_bytes() for f in pile_files])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    found = find_duplicates(pile_rows)
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    print(f"pair search, {len(pile_rows)} crops of two pictures (a pile of near copies): "
          f"{seconds:.2f} s, peak memory +{grown:.0f} MB ({found['search']}; pairs "
          f"{found['counts']}, {len(found['leaked'])} validation images leaked)")  # fmt: skip

    rng = np.random.default_rng(0)
    for n in args.rows:
        distinct = [
            {"split": "validation" if i % 10 == 9 else "train", "path": str(i),
             "digest": str(i), "hashes": [f"{int(h):016x}" for h in rng.integers(0, 2**63, 4)]}
            for i in range(n)
        ]  # fmt: skip
        start = time.perf_counter()
        found = find_duplicates(distinct)
        seconds = time.perf_counter() - start
        print(f"pair search, {n:,} distinct photos (random hashes): {seconds:.2f} s "
              f"({found['search']}; pairs {found['counts']})")  # fmt: skip


if __name__ == "__main__":
    main()
