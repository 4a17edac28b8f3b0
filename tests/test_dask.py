"""The ingestion job on a real Dask cluster (scheduler and two worker processes on loopback)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.photos import write_photo_folders
from components.ingest import IngestConfig, run_ingest
from components.ingest.local_cluster import dask_cluster
from tests.conftest import folder_files

pytestmark = pytest.mark.integration


def test_dask_runner_and_local_processes_write_the_same_bytes_as_the_local_runner(
    tmp_path: Path,
) -> None:
    source = write_photo_folders(tmp_path / "photos", 120, size=(375, 500), odd_every=10)
    (source / "train" / "n00000001" / "truncated.JPEG").write_bytes(
        (source / "train" / "n00000001" / "img_000001.JPEG").read_bytes()[:3000]
    )
    (source / "val" / "stray.txt").write_text("not an image")
    local = run_ingest(
        IngestConfig(source=str(source), output=str(tmp_path / "local"), train_shards=3)
    )
    with dask_cluster(workers=2) as address:
        distributed = run_ingest(
            IngestConfig(
                source=str(source),
                output=str(tmp_path / "dask"),
                train_shards=3,
                beam_args=["--runner=DaskRunner", f"--dask_client_address={address}"],
            )
        )
    stages = []
    before = set(Path(tempfile.gettempdir()).glob("dask-*"))
    processes = run_ingest(
        IngestConfig(
            source=str(source), output=str(tmp_path / "processes"), train_shards=3, processes=2
        ),
        on_event=lambda event: stages.append(event["message"]),
    )
    assert "starting a local Dask cluster of 2 worker processes" in stages
    assert set(Path(tempfile.gettempdir()).glob("dask-*")) == before  # its folder removed
    assert any("--runner=apache_beam.runners.dask.dask_runner.DaskRunner" in m for m in stages)
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


def test_a_local_cluster_that_cannot_start_leaves_the_job_to_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `dask` program beside the interpreter: the ingestion says why and converts in its own
    process, with the same records."""
    from components.ingest import local_cluster

    source = write_photo_folders(tmp_path / "photos", 30, classes=3, size=(120, 160))
    monkeypatch.setattr(local_cluster.sys, "executable", str(tmp_path / "nowhere" / "python"))
    stages = []
    meta = run_ingest(
        IngestConfig(source=str(source), output=str(tmp_path / "out"), processes=2),
        on_event=lambda event: stages.append(event["message"]),
    )
    assert meta["records"] == {"train": 27, "validation": 3}
    fallback = [m for m in stages if "converting in this process instead" in m]
    assert fallback and "the local Dask cluster did not start (FileNotFoundError" in fallback[0]
