"""How much of a photo's ingestion runs one thread at a time, and what that means on a big
machine.

    .venv/bin/python bench/gil_bench.py [--photos 400] [--seconds 6] [--repeats 3]

The local ingestion runs one process with a pool of threads: only the parts of a photo's work
that release Python's GIL (libjpeg's decoding and encoding, CRC-32C, numpy's larger operations)
run on several cores at once; the rest (header parsing, building the Example, framing, the
hashes' small numpy calls) runs on one core at a time whatever the thread count. Measured on
distinct real photos (375x500, bench/photos.py) with the product's own `convert_item`: photos a
second on one thread and on as many threads as this machine has cores (alternating, best of
`repeats`). Amdahl's law then gives the share s that runs one thread at a time
(speedup = 1 / (s + (1 - s) / n) on n cores), and the rate one process's threads could reach
on 16 and 64 cores, against processes (n times one core's rate). It assumes the work per photo
stays the same and ignores storage; on 2 cores, s is a rough figure (noise of a few percent in
either rate moves it by several points).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from bench.photos import write_photo_folders
    from components.ingest.pipeline import convert_item
    from components.ingest.sources import discover

    root = write_photo_folders(
        Path(tempfile.mkdtemp(prefix="gil-bench-")), args.photos, size=(375, 500), distinct=True
    )
    items = [item.to_json() for item in discover(str(root)).items]

    def rate(threads: int) -> float:
        stop, done, lock = threading.Event(), [0], threading.Lock()

        def converting(offset: int) -> None:
            n = 0
            while not stop.is_set():
                convert_item(items[(offset + n) % len(items)], None)
                n += 1
            with lock:
                done[0] += n

        workers = [threading.Thread(target=converting, args=(k * 97,)) for k in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        time.sleep(args.seconds)
        stop.set()
        for worker in workers:
            worker.join()
        return done[0] / (time.perf_counter() - start)

    cores = os.cpu_count() or 1
    for item in items[:50]:  # warm: imports, caches
        convert_item(item, None)
    best = {1: 0.0, cores: 0.0}
    for _ in range(args.repeats):
        for threads in best:
            best[threads] = max(best[threads], rate(threads))
    one, many = best[1], best[cores]
    speedup = many / one
    serial = min(max((cores / speedup - 1) / (cores - 1), 0.0), 1.0) if cores > 1 else 1.0
    print(f"{len(items)} distinct photos, 375x500 JPEG, convert_item, best of {args.repeats}")
    print(f"1 thread: {one:,.0f} photos/s; {cores} threads: {many:,.0f} photos/s "
          f"({speedup:.2f}x on {cores} cores)")  # fmt: skip
    print(f"share run one thread at a time (Amdahl): {serial:.0%}")
    for n in (16, 64):
        threads = one / (serial + (1 - serial) / n)
        print(f"{n:3d} cores: threads in one process {threads:8,.0f} photos/s "
              f"({threads / (n * one):.2f}x the cores), processes {n * one:8,.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
