"""A real Dask cluster on this machine: a `dask scheduler` and N `dask worker` processes.

For the tests and benchmarks of the ingestion job on Beam's DaskRunner: the same commands start
a cluster across machines (infra/scale-out/beam-runners.md). (The local job no longer uses it:
its shards are written by processes it forks, components/ingest/pipeline.py ShardProcesses.)

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


def _stop(process: subprocess.Popen) -> None:
    """TERM, then KILL, to the process's whole session (a worker's nanny and the worker it
    runs); returns only when the process is gone."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)  # the leader not reaped: its group is ours
            process.wait(timeout=10)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # started in a session of its own: its group is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _address(scheduler_file: Path) -> str | None:
    """The scheduler's address once its file is whole (it is written in place)."""
    try:
        return json.loads(scheduler_file.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None


@contextmanager
def dask_cluster(workers: int = 2, threads: int = 1, timeout: float = 60.0) -> Iterator[str]:
    """Starts a scheduler on a free loopback port and `workers` worker processes; yields the
    scheduler address; stops them all (verified) on exit. Whatever keeps the cluster from
    starting is a RuntimeError naming its log; the temporary folder goes once it has run."""
    folder = Path(tempfile.mkdtemp(prefix="dask-"))
    scheduler_file = folder / "scheduler.json"
    # The commands of infra/scale-out/beam-runners.md, outside the checkout and with no
    # PYTHONPATH: the scheduler and the workers import the project as the installed package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dask = str(Path(sys.executable).parent / "dask")
    logs = open(folder / "cluster.log", "wb")  # noqa: SIM115 - closed below
    common = dict(cwd=folder, env=env, stdout=logs, stderr=subprocess.STDOUT,
                  start_new_session=True)  # fmt: skip
    processes, ran = [], False
    try:
        try:
            processes.append(
                subprocess.Popen(
                    [dask, "scheduler", "--host", "127.0.0.1",
                     "--port", "0", "--dashboard-address", "127.0.0.1:0",
                     "--scheduler-file", str(scheduler_file)],
                    **common,
                )
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            while (address := _address(scheduler_file)) is None:
                if processes[0].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the scheduler did not start")
                time.sleep(0.2)
            for _ in range(workers):
                processes.append(
                    subprocess.Popen(
                        [dask, "worker", address,
                         "--nthreads", str(threads), "--nworkers", "1", "--no-dashboard",
                         "--host", "127.0.0.1", "--local-directory", str(folder)],
                        **common,
                    )
                )  # fmt: skip
            _wait_for_workers(address, workers, deadline)
        except Exception as err:
            raise RuntimeError(
                f"the local Dask cluster did not start ({type(err).__name__}: {err}); see "
                f"{folder / 'cluster.log'}"
            ) from err
        ran = True
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)
        logs.close()
        if ran:  # a start that failed keeps the log it names
            shutil.rmtree(folder, ignore_errors=True)


def _wait_for_workers(address: str, workers: int, deadline: float) -> None:
    from distributed import Client

    with Client(address, timeout=max(1.0, deadline - time.monotonic())) as client:
        try:
            client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
        except TimeoutError as err:
            raise RuntimeError(f"{workers} workers did not all start") from err
