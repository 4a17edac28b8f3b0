"""runners.resolve_beam_args and runner_name: the options the ingestion job really runs with."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from components.ingest.runners import DASK_RUNNER, LOCAL_BEAM_ARGS, resolve_beam_args, runner_name


def test_no_options_run_in_process_on_fn_api_runner() -> None:
    resolved = resolve_beam_args([], 8)
    assert resolved == LOCAL_BEAM_ARGS
    assert "--runner=FnApiRunner" in resolved and "--direct_running_mode=in_memory" in resolved
    resolved.append("--changed")  # a fresh list: the module's default stays as it was
    assert "--changed" not in LOCAL_BEAM_ARGS


def test_local_options_parse_as_beam_options() -> None:
    options = PipelineOptions(resolve_beam_args([], 1))
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    assert options.view_as(DirectOptions).direct_running_mode == "in_memory"
    assert options.view_as(DirectOptions).direct_num_workers == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--runner=DirectRunner", "--experiments=foo", "--direct_num_workers=4"],
        ["--runner", "DirectRunner", "--experiments=foo", "--direct_num_workers=4"],
        ["--experiments=foo", "--runner=SwitchingDirectRunner", "--direct_num_workers=4"],
        ["--experiments=foo", "--runner=directrunner", "--direct_num_workers", "4"],
    ],
)
def test_direct_runner_becomes_fn_api_runner_keeping_other_options(
    args: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="components.ingest.runners"):
        resolved = resolve_beam_args(args, 3)
    assert resolved[:2] == ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
    assert "--experiments=foo" in resolved
    assert not any("directrunner" in a.lower() for a in resolved)
    # The user's worker count wins over the default; neither is given twice.
    assert "--direct_num_workers=1" not in resolved
    assert sum(a.startswith("--direct_num_workers") for a in resolved) == 1
    assert runner_name(resolved) == "FnApiRunner"
    assert "Prism" in caplog.text


def test_options_without_a_runner_keep_theirs_over_the_defaults() -> None:
    resolved = resolve_beam_args(["--direct_running_mode=multi_threading", "--x=1"], 2)
    assert resolved == [
        "--runner=FnApiRunner",
        "--direct_num_workers=1",
        "--direct_running_mode=multi_threading",
        "--x=1",
    ]


@pytest.mark.parametrize(
    "runner",
    [["--runner=DaskRunner"], ["--runner", "DaskRunner"], [f"--runner={DASK_RUNNER}"]],
)
def test_dask_runner_gets_its_full_name_and_one_partition_per_task(runner: list[str]) -> None:
    args = ["--dask_client_address=tcp://sched:8786", *runner, "--experiments=foo"]
    resolved = resolve_beam_args(args, 7)
    assert resolved == [
        "--dask_client_address=tcp://sched:8786",
        f"--runner={DASK_RUNNER}",
        "--experiments=foo",
        "--dask_npartitions=7",
    ]
    assert args[1:-1] == runner  # the caller's list is left alone
    assert runner_name(resolved) == "DaskRunner"


@pytest.mark.parametrize(
    "partitioning", ["--dask_npartitions=3", "--dask_partition_size=10", "--dask_npartitions"]
)
def test_dask_partitioning_given_by_the_user_is_kept(partitioning: str) -> None:
    args = ["--runner=DaskRunner", partitioning] + (["3"] if "=" not in partitioning else [])
    resolved = resolve_beam_args(args, 7)
    assert resolved == [f"--runner={DASK_RUNNER}", *args[1:]]


def test_dask_with_no_tasks_still_gets_one_partition() -> None:
    assert resolve_beam_args(["--runner=DaskRunner"], 0)[-1] == "--dask_npartitions=1"


@pytest.mark.parametrize(
    "args",
    [
        ["--runner=DataflowRunner", "--project=p", "--region=europe-west1"],
        ["--runner", "FlinkRunner", "--flink_master=host:8081"],
        ["--runner=FnApiRunner", "--direct_running_mode=multi_processing"],
    ],
)
def test_other_runners_pass_through_untouched(args: list[str]) -> None:
    assert resolve_beam_args(args, 5) == args


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ([], "FnApiRunner"),
        (["--experiments=foo"], "FnApiRunner"),
        (["--runner=DataflowRunner"], "DataflowRunner"),
        (["--runner", "SparkRunner"], "SparkRunner"),
        ([f"--runner={DASK_RUNNER}"], "DaskRunner"),
    ],
)
def test_runner_name(args: list[str], name: str) -> None:
    assert runner_name(args) == name


def test_the_local_job_writes_shards_in_a_process_per_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from components.ingest import available_cores, local_processes

    monkeypatch.delenv("TRICKFLOW_INGEST_PROCESSES", raising=False)
    assert [local_processes(None, cores) for cores in (1, 2, 8, 16, 64)] == [1, 2, 8, 16, 64]
    # threads set: a process per that many cores, one process when they are more than the cores
    assert local_processes(None, 16, threads=4) == 4 and local_processes(None, 2, threads=4) == 1
    assert local_processes(3, 64) == 3
    monkeypatch.setenv("TRICKFLOW_INGEST_PROCESSES", "2")  # how the tests keep one process
    assert local_processes(None, 64) == 2 and local_processes(5, 64) == 5
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("proc", "files", "cores"),
    [
        ("0::/\n", {"cpu.max": "max 100000"}, None),  # v2 in a container: no limit
        ("0::/\n", {"cpu.max": "250000 100000"}, 3),  # 2.5 CPUs: 3 processes
        # v2 without a cgroup namespace: a limit on the service, one on a slice above it
        ("0::/system.slice/train.service\n",
         {"system.slice/train.service/cpu.max": "800000 100000",
          "system.slice/cpu.max": "400000 100000"}, 4),
        # a cgroup v1 host with a 4-CPU limit on the container's cgroup
        ("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n",
         {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "400000",
          "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"}, 4),
        ("12:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "-1",
                                "cpu,cpuacct/cpu.cfs_period_us": "100000"}, None),
        ("", {}, None),  # no cgroups at all
    ],
)  # fmt: skip
def test_a_cpu_limit_on_the_process_s_cgroup_caps_the_cores_on_cgroup_v2_and_v1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: str, files: dict, cores
) -> None:
    """The local job forks a process per core: in a container limited to 4 CPUs of a 64-core
    host (or a service with a CPU quota) it must fork 4, not 64, on either cgroup version."""
    from components.ingest import runners

    for name, text in files.items():
        (tmp_path / "cg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cg" / name).write_text(text + "\n")
    (tmp_path / "cgroup").write_text(proc)
    monkeypatch.setattr(runners, "CGROUP_ROOT", str(tmp_path / "cg"))
    monkeypatch.setattr(runners, "PROC_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(runners.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert runners.available_cores() == (cores or 64)
