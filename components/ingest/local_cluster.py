"""A real Dask cluster on this machine: a `dask scheduler` and N `dask worker` processes.

What runs the local ingestion job in processes (`IngestSettings.processes`): one process's
threads share one interpreter lock, and the Python part of each photo's work (~8% of it,
bench/gil_bench.py) caps them near 0.45x of 16 cores; processes each with a few threads do not
share it. The same commands start a cluster across machines (infra/scale-out/beam-runners.md).

    with dask_cluster(workers=2) as address:   # "tcp://127.0.0.1:PORT"
        run_ingest(IngestConfig(..., beam_args=["--runner=DaskRunner",
                                                f"--dask_client_address={address}"]))
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _stop(process: subprocess.Popen) -> None:
    """TERM, then KILL; returns only when the process is gone."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def dask_cluster(workers: int = 2, threads: int = 1, timeout: float = 60.0) -> Iterator[str]:
    """Starts a scheduler on a free loopback port and `workers` worker processes; yields the
    scheduler address; stops them all (verified) on exit."""
    folder = Path(tempfile.mkdtemp(prefix="dask-"))
    scheduler_file = folder / "scheduler.json"
    # The commands of infra/scale-out/beam-runners.md, outside the checkout and with no
    # PYTHONPATH: the scheduler and the workers import the project as the installed package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dask = str(Path(sys.executable).parent / "dask")
    logs = open(folder / "cluster.log", "wb")  # noqa: SIM115 - closed below
    common = dict(cwd=folder, env=env, stdout=logs, stderr=subprocess.STDOUT)
    processes = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1",
             "--port", "0", "--dashboard-address", "127.0.0.1:0",
             "--scheduler-file", str(scheduler_file)],
            **common,
        )
    ]  # fmt: skip
    started = []  # whether the cluster came up (its folder is then removed at the end)
    try:
        deadline = time.monotonic() + timeout
        while not scheduler_file.exists():
            if processes[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start; see {folder / 'cluster.log'}")
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for _ in range(workers):
            processes.append(
                subprocess.Popen(
                    [dask, "worker", address, "--no-nanny",  # no child left behind a kill
                     "--nthreads", str(threads), "--nworkers", "1", "--no-dashboard",
                     "--host", "127.0.0.1", "--local-directory", str(folder)],
                    **common,
                )
            )  # fmt: skip
        _wait_for_workers(address, workers, deadline, folder)
        yield address
    except RuntimeError as err:
        if "did not start" not in str(err):  # a start that failed keeps the log it names
            started.append(True)
        raise
    else:
        started.append(True)
    finally:
        for process in reversed(processes):
            _stop(process)
        logs.close()
        if started:
            shutil.rmtree(folder, ignore_errors=True)


def _wait_for_workers(address: str, workers: int, deadline: float, folder: Path) -> None:
    from distributed import Client

    with Client(address, timeout=max(1.0, deadline - time.monotonic())) as client:
        try:
            client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
        except TimeoutError as err:
            raise RuntimeError(f"dask workers did not start; see {folder / 'cluster.log'}") from err
