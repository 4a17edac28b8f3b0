"""Which Beam runner executes the ingestion job, and the options it needs.

Local default: Beam's FnApiRunner in its in-process mode (`in_memory`), named explicitly. The
job's parallelism is inside its one step (shards handed to processes it forks, a thread pool per
shard), so the runner needs no worker threads of its own, and two local alternatives are avoided
on purpose:

- `--runner=DirectRunner` first tries the Prism runner, which downloads a binary at run time;
  where the internet is reachable the job would silently run on Prism instead. A DirectRunner
  request is therefore run on FnApiRunner, the engine the DirectRunner picks for batch jobs.
- `--direct_running_mode=multi_threading` loses an element now and then: its SDK harness
  flushes each output buffer from a timer thread (every second) without a lock shared with the
  thread writing into the buffer, so an element written between the flush's read and its clear
  of the buffer is dropped (Beam 2.72, worker/data_plane.py TimeBasedBufferingClosableOutputStream).

Distributed: any runner's options pass through (Dataflow, Flink, Spark, Dask). Beam's DaskRunner
puts all elements of a Create into one partition of 128 unless told otherwise, which would run
every shard on one Dask worker; without partitioning options it gets one partition per shard.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

LOCAL_BEAM_ARGS = [
    "--runner=FnApiRunner",
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
]
_DIRECT = {"directrunner", "switchingdirectrunner"}
# Beam knows the DaskRunner only by its full name; `--runner=DaskRunner` is accepted here.
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def _runner(args: list[str]) -> tuple[int, str] | None:
    """(index, runner name) of the --runner option, in either `--runner X` or `--runner=X` form."""
    for index, arg in enumerate(args):
        if arg == "--runner" and index + 1 < len(args):
            return index, args[index + 1]
        if arg.startswith("--runner="):
            return index, arg.split("=", 1)[1]
    return None


def runner_name(args: list[str]) -> str:
    found = _runner(args)
    return found[1].rsplit(".", 1)[-1] if found else "FnApiRunner"


def resolve_beam_args(args: list[str], num_tasks: int) -> list[str]:
    """The options the job really runs with (see the module docstring for why)."""
    found = _runner(args)
    if found is not None:
        index, name = found
        short = name.rsplit(".", 1)[-1].lower()
        if short == "daskrunner":
            args = [*args]
            args[index : index + (2 if args[index] == "--runner" else 1)] = [
                f"--runner={DASK_RUNNER}"
            ]
            if not any(a.startswith(("--dask_npartitions", "--dask_partition_size")) for a in args):
                args.append(f"--dask_npartitions={max(1, num_tasks)}")
            return args
        if short not in _DIRECT:
            return list(args)
        log.warning(
            "--runner=%s tries the Prism runner first (it downloads a binary at run time); "
            "running on FnApiRunner, the direct runner's batch engine, instead",
            name,
        )
        args = args[:index] + args[index + (2 if args[index] == "--runner" else 1) :]
    if "--direct_running_mode=multi_threading" in args:
        log.warning(
            "--direct_running_mode=multi_threading can drop an element (a timer thread flushes "
            "output buffers without the writer's lock); the job's count check will catch it"
        )
    given = {a.split("=")[0] for a in args}
    return [*(a for a in LOCAL_BEAM_ARGS if a.split("=")[0] not in given), *args]


# A container's or a service's CPU limit, on the cgroup this process is in (/proc/self/cgroup)
# and every cgroup above it: cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD"), or cgroup v1's
# CFS quota and period (-1: no limit) under the hierarchy that holds the cpu controller.
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _quota_cores() -> int | None:
    """The fewest cores the CPU quotas on this process's cgroup path allow (rounded up), or
    None without a quota."""
    found = []
    for line in (_read(PROC_CGROUP) or "").splitlines():
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if number == "0" and controllers == "":  # cgroup v2
            folder, files = CGROUP_ROOT, ("cpu.max",)
        elif "cpu" in controllers.split(","):  # cgroup v1, mounted as cpu,cpuacct or cpu
            names = [controllers, "cpu,cpuacct", "cpu"]
            folder = next(
                (f"{CGROUP_ROOT}/{n}" for n in names if os.path.isdir(f"{CGROUP_ROOT}/{n}")), ""
            )
            files = ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        parts = [p for p in path.strip().split("/") if p]
        for depth in range(len(parts), -1, -1):  # the cgroup itself, then each one above
            here = "/".join([folder, *parts[:depth]])
            texts = [_read(f"{here}/{name}") for name in files]
            try:
                if len(files) == 1 and texts[0]:
                    quota, period = texts[0].split()[:2]
                else:
                    quota, period = texts
                if quota is None or quota.strip() in ("max", "-1"):
                    continue
                quota, period = int(quota), int(period)
            except (ValueError, TypeError):
                continue
            if quota > 0 and period > 0:
                found.append(max(1, -(-quota // period)))
    return min(found) if found else None


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, and a container's CPU quota (what a
    Kubernetes CPU limit sets; cgroup v2 or v1) when lower."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _quota_cores()
    return max(1, min(cores, quota) if quota else cores)
