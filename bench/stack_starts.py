"""The stack's start under load: `infra/stack.sh start` then `stop`, N times, each in a fresh home
on its own ports, beside CPU-bound processes that keep every core busy (as a test suite or a
training beside it would). Prints each start's outcome and seconds, and fails if a start fails,
a stop fails, or any process of a stack outlives its stop.

    .venv/bin/python bench/stack_starts.py [--starts 20] [--hogs 2]

Not a test (about a minute a start on 2 cores): a soak run whose output goes in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.test_e2e import stack_env  # noqa: E402 - the end-to-end test's own environment


def hog() -> None:
    while True:
        pass


def leftovers(home: Path) -> list[int]:
    """Processes whose environment names the stack's home."""
    found = []
    wanted = f"TRICKFLOW_HOME={os.path.realpath(home)}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    hogs = [multiprocessing.Process(target=hog, daemon=True) for _ in range(args.hogs)]
    for process in hogs:
        process.start()
    stack = str(REPO / "infra" / "stack.sh")
    failures = 0
    seconds = []
    try:
        for number in range(1, args.starts + 1):
            home = Path(tempfile.mkdtemp(prefix="stack-start-")) / "stack"
            env = stack_env(home)
            began = time.monotonic()
            started = subprocess.run([stack, "start"], cwd=REPO, env=env, capture_output=True,
                                     text=True, timeout=900)  # fmt: skip
            took = time.monotonic() - began
            stopped = subprocess.run([stack, "stop"], cwd=REPO, env=env, capture_output=True,
                                     text=True, timeout=300)  # fmt: skip
            left = leftovers(home)
            ok = started.returncode == 0 and stopped.returncode == 0 and not left
            failures += not ok
            seconds.append(took)
            print(f"start {number:2d}: {'ok' if ok else 'FAILED'} in {took:.0f} s", flush=True)
            if not ok:
                print(started.stderr[-2000:], stopped.stderr[-1000:], f"left: {left}")
    finally:
        for process in hogs:
            process.terminate()
    print(f"{args.starts - failures} of {args.starts} starts passed beside {args.hogs} busy "
          f"processes; {min(seconds):.0f}-{max(seconds):.0f} s a start")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
