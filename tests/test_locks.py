"""The dataset lock: readers share it, a rewrite has it alone, and a waiting rewrite is not
starved by readers that keep arriving (separate processes, as runs are)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from components import dataset

READER = """
import sys, time
from pathlib import Path
from components import dataset
folder, name = sys.argv[1], sys.argv[2]
with dataset.locked(folder, False):
    Path(folder, name + ".got").write_text(str(time.monotonic()))
    while not Path(folder, name + ".release").exists():
        time.sleep(0.05)
"""


def _reader(folder: Path, name: str) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRICKFLOW_READING"}
    return subprocess.Popen([sys.executable, "-c", READER, str(folder), name], cwd=root, env=env)


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_waiting_rewrite_goes_before_readers_that_came_after_it(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    first = _reader(folder, "first")
    try:
        _wait_for(folder / "first.got")
        waits: list[str] = []
        order: list[str] = []

        def rewrite() -> None:
            with dataset.locked(str(folder), True, waits.append):
                order.append("writer")
                time.sleep(0.5)

        writer = threading.Thread(target=rewrite)
        writer.start()
        deadline = time.monotonic() + 30
        while not waits and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waits, "the writer never had to wait"
        # Who holds it, and how long: the message names the reader's process.
        assert f"reading by pid {first.pid}" in waits[0]
        second = _reader(folder, "second")  # arrives while the writer waits
        try:
            time.sleep(3)  # time enough to start and be granted a shared lock, were it fair game
            assert not (folder / "second.got").exists(), "a later reader went before the writer"
            (folder / "first.release").write_text("")
            writer.join(60)
            assert order == ["writer"]
            _wait_for(folder / "second.got")
            (folder / "second.release").write_text("")
            assert second.wait(60) == 0
        finally:
            second.kill()
    finally:
        (folder / "first.release").write_text("")
        first.wait(60)
    assert not list(folder.glob(".lock.*.holder"))  # every holder's record removed


def test_a_stage_of_a_run_that_holds_the_dataset_does_not_queue_behind_a_writer(
    tmp_path: Path,
) -> None:
    """A run holds the dataset shared from ingestion to its end, and its stages take it shared
    again: behind a writer that waits for the run, such a stage would wait forever."""
    folder = tmp_path / "data"
    folder.mkdir()
    with dataset.locked(str(folder), False):
        writer = threading.Thread(target=lambda: dataset.locked(str(folder), True).__enter__())
        writer.daemon = True  # it waits for this run; it is let go with the test process
        writer.start()
        time.sleep(1)
        entered = threading.Event()

        def stage() -> None:
            with dataset.locked(str(folder), False):
                entered.set()

        threading.Thread(target=stage, daemon=True).start()
        assert entered.wait(10), "the run's own stage queued behind the writer"
        # and a process the run starts (Beam, a training subprocess) inherits the hold
        assert str(folder.resolve()) in os.environ[dataset.READING_ENV]
    assert (
        dataset.READING_ENV not in os.environ
        or str(folder.resolve()) not in os.environ[dataset.READING_ENV]
    )


CALLED = """
import sys
from pathlib import Path
from components import dataset
folder = sys.argv[1]
with dataset.held_by_caller(folder), dataset.locked(folder, False):
    Path(folder, "called.got").write_text("")
"""


def test_a_training_run_its_caller_waits_for_does_not_queue_behind_a_writer(
    tmp_path: Path,
) -> None:
    """A pipeline run holds the dataset and waits for its training run on the GPU pool (another
    process, not its child); a rewrite queues meanwhile. The training run reads under its
    caller's hold: it does not wait behind that rewrite, which waits for the caller."""
    folder = tmp_path / "data"
    folder.mkdir()
    with dataset.locked(str(folder), False):
        writer = threading.Thread(target=lambda: dataset.locked(str(folder), True).__enter__())
        writer.daemon = True
        writer.start()
        time.sleep(1)
        root = Path(__file__).resolve().parents[1]
        env = {k: v for k, v in os.environ.items() if k != "TRICKFLOW_READING"}
        called = subprocess.run([sys.executable, "-c", CALLED, str(folder)], cwd=root, env=env,
                                timeout=120, check=False)  # fmt: skip
        assert called.returncode == 0 and (folder / "called.got").exists()
