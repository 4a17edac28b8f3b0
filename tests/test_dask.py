"""The ingestion job on a real Dask cluster (scheduler and two worker processes on loopback)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.dask_cluster import dask_cluster
from bench.photos import write_photo_folders
from components.ingest import IngestConfig, run_ingest
from tests.conftest import folder_files

pytestmark = pytest.mark.integration


def _shard_processes_left() -> list:
    """This process's children that are forks of it (same command line): shard processes."""
    import psutil

    me, left = psutil.Process(), []
    for child in me.children(recursive=True):
        try:  # another test's child may be a zombie by now, or gone
            if child.cmdline() == me.cmdline():
                left.append(child)
        except psutil.Error:
            pass
    return left


def test_dask_runner_and_shard_processes_write_the_same_bytes_as_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from components.ingest import pipeline

    source = write_photo_folders(tmp_path / "photos", 120, size=(375, 500), odd_every=10)
    (source / "train" / "n00000001" / "truncated.JPEG").write_bytes(
        (source / "train" / "n00000001" / "img_000001.JPEG").read_bytes()[:3000]
    )
    (source / "val" / "stray.txt").write_text("not an image")
    local = run_ingest(
        IngestConfig(source=str(source), output=str(tmp_path / "local"), train_shards=3)
    )
    before = set(Path(tempfile.gettempdir()).glob("dask-*"))
    with dask_cluster(workers=2) as address:
        distributed = run_ingest(
            IngestConfig(
                source=str(source),
                output=str(tmp_path / "dask"),
                train_shards=3,
                beam_args=["--runner=DaskRunner", f"--dask_client_address={address}"],
            )
        )
    assert set(Path(tempfile.gettempdir()).glob("dask-*")) == before  # its folder removed
    writers = tmp_path / "writers"
    write_shard = pipeline.write_shard

    def noted(*args, **kwargs):  # which process wrote each shard (the forks inherit this)
        with open(writers, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return write_shard(*args, **kwargs)

    monkeypatch.setattr(pipeline, "write_shard", noted)
    stages = []
    processes = run_ingest(
        IngestConfig(
            source=str(source), output=str(tmp_path / "processes"), train_shards=3, processes=2
        ),
        on_event=lambda event: stages.append(event["message"]),
    )
    assert any(m.endswith("; 2 shard processes)") for m in stages), stages
    pids = writers.read_text().split()
    assert len(pids) == 4 and str(os.getpid()) not in pids  # 3 train shards and 1 validation
    assert not _shard_processes_left()
    assert (
        distributed["quarantined"]
        == processes["quarantined"]
        == local["quarantined"]
        == {"train": 1, "validation": 1}
    )
    local_files = folder_files(tmp_path / "local")
    assert "train-00002-of-00003" in local_files and "quarantine.jsonl" in local_files
    assert "record_index/train-00002-of-00003.json" in local_files
    for other in ("dask", "processes"):
        files = folder_files(tmp_path / other)
        assert sorted(local_files) == sorted(files)
        for name in local_files:
            assert local_files[name] == files[name], (other, name)


def test_cluster_processes_are_gone_after_the_block() -> None:
    import psutil

    with dask_cluster(workers=1) as address:
        assert address.startswith("tcp://127.0.0.1:")
        port = address.rsplit(":", 1)[1]
    leftovers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and any("distributed.cli" in c for c in p.info["cmdline"])
    ]
    assert not leftovers, leftovers
    assert port


def test_a_shard_process_that_dies_fails_the_run_naming_its_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decoder crash on a hostile file, or the OOM killer: the process writing a shard is gone.
    The run fails saying which shard, leaves no dataset (no metadata.json: nothing trains on a
    folder with a shard missing), and the next run is whole."""
    import os

    from components.ingest import pipeline

    source = write_photo_folders(tmp_path / "photos", 30, classes=3, size=(120, 160))
    write_shard = pipeline.write_shard

    def crashing(task, *args, **kwargs):
        if task["split"] == "train" and task["shard"] == 1:
            os._exit(139)  # as a segfault leaves it: no exception, no cleanup
        return write_shard(task, *args, **kwargs)

    monkeypatch.setattr(pipeline, "write_shard", crashing)
    config = IngestConfig(source=str(source), output=str(tmp_path / "out"), train_shards=2,
                          processes=2)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"a shard process died .* not finished: .*"
                       r"train-00001-of-00002"):  # fmt: skip
        run_ingest(config)
    assert not (tmp_path / "out" / "metadata.json").exists()
    assert not (tmp_path / "out" / "train-00001-of-00002").exists()
    assert not _shard_processes_left()

    def failing(task, *args, **kwargs):  # an error of the machine, not of a file: raised
        if task["split"] == "train" and task["shard"] == 1:
            raise MemoryError("a 9 GB allocation while converting a.JPEG")
        return write_shard(task, *args, **kwargs)

    monkeypatch.setattr(pipeline, "write_shard", failing)
    with pytest.raises(RuntimeError, match="a 9 GB allocation while converting a.JPEG"):
        run_ingest(config)
    assert not _shard_processes_left()
    monkeypatch.setattr(pipeline, "write_shard", write_shard)
    meta = run_ingest(config)
    assert meta["records"] == {"train": 27, "validation": 3}


_KILLED = """
import sys, time
from components.ingest import IngestConfig, pipeline, run_ingest
def slow(*args, **kwargs):
    time.sleep(120)
pipeline.write_shard = slow
run_ingest(IngestConfig(source=sys.argv[1], output=sys.argv[2], train_shards=2, processes=2))
"""


def test_shard_processes_end_with_a_killed_job_and_leave_the_dataset_unlocked(
    tmp_path: Path,
) -> None:
    """The job's process killed (kill -9, the OOM killer picks the biggest process): its shard
    processes end within seconds instead of writing on and holding the dataset's lock, whose
    open file they inherited; the next run gets the lock at once."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    source = write_photo_folders(tmp_path / "photos", 30, classes=3, size=(120, 160))
    job = subprocess.Popen([sys.executable, "-c", _KILLED, str(source), str(tmp_path / "out")])
    children = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            children = psutil.Process(job.pid).children()
            if len(children) >= 2:
                break
            time.sleep(0.2)
        assert len(children) >= 2, "the shard processes never started"
        time.sleep(1)  # writing their shards (sleeping in write_shard)
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"{len(alive)} shard processes outlived their job"
    finally:
        job.kill()
        for child in children:  # when the test fails: not left holding the lock
            with contextlib.suppress(psutil.Error):
                child.kill()
    started = time.monotonic()
    meta = run_ingest(IngestConfig(source=str(source), output=str(tmp_path / "out")))
    assert meta["records"] == {"train": 27, "validation": 3}
    assert time.monotonic() - started < 60


def test_shard_processes_that_cannot_start_leave_the_job_to_its_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No memory to fork, or the container's process limit, at the second fork: the run says so
    and writes the shards itself, the same records; the process forked first is not left
    waiting. Never more processes than shards: 8 asked, 3 shards, 3 tried."""
    import errno

    from components.ingest import pipeline

    forks = []

    class Unforkable(pipeline.ProcessPoolExecutor):
        def _spawn_process(self):
            forks.append(1)
            if len(forks) == 2:
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
            super()._spawn_process()

    monkeypatch.setattr(pipeline, "ProcessPoolExecutor", Unforkable)
    source = write_photo_folders(tmp_path / "photos", 30, classes=3, size=(120, 160))
    config = IngestConfig(source=str(source), output=str(tmp_path / "out"), train_shards=2,
                          processes=8)  # fmt: skip
    with caplog.at_level("WARNING", logger="components.ingest.pipeline"):
        meta = run_ingest(config)
    assert meta["records"] == {"train": 27, "validation": 3}
    assert "could not start 3 shard processes ([Errno 11] Resource temporarily" in caplog.text
    assert not _shard_processes_left()


def _signals() -> tuple[bool, bool]:
    import signal

    return (
        signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
    )


def test_a_shard_process_takes_the_default_signals_not_its_parent_s() -> None:
    """A flow run's process turns SIGTERM into an exception; a shard process forked from it
    must die of SIGTERM, not raise and go on to the next shard."""
    import multiprocessing
    import os
    import signal
    from concurrent.futures import ProcessPoolExecutor

    from components.ingest.pipeline import _shard_process_started

    def raising(signum, frame):
        raise RuntimeError("terminated")

    before = signal.signal(signal.SIGTERM, raising)
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_shard_process_started,
                                 initargs=(os.getpid(),)) as pool:  # fmt: skip
            default_term, ignored_interrupt = pool.submit(_signals).result(timeout=60)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert default_term and ignored_interrupt
