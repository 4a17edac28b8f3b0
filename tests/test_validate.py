"""TFDV validation: clean data passes; schema violations and count mismatches fail readably."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from components.ingest.images import to_stored_image
from components.ingest.records import make_example, tfrecord_frame
from components.validate import ValidateConfig, ValidationFailed, format_table, validate
from tests.conftest import check_events, jpeg_bytes, pattern_image

pytestmark = pytest.mark.integration


def test_clean_data_passes(ingested: Path, tmp_path: Path) -> None:
    reported = []
    report = validate(ValidateConfig(data_dir=str(ingested), output=str(tmp_path)), reported.append)
    messages = check_events(reported, "validate")
    assert messages[0] == "computing TFDV statistics for train (36 records)"
    assert messages[-1].startswith("no anomalies; statistics page: ")
    assert report["passed"] and report["splits"]["train"] == {"examples": 36, "expected": 36}
    assert (tmp_path / "schema.pbtxt").exists() and (tmp_path / "train.stats.tfrecord").exists()


def test_out_of_domain_label_and_count_mismatch_fail(ingested: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(ingested, data)
    stored = to_stored_image(jpeg_bytes(pattern_image(0, 0)))
    bad = make_example(stored, 7, "x", "x.JPEG", [])  # label 7 of 3 classes
    with (data / "train-00000-of-00002").open("ab") as handle:
        handle.write(tfrecord_frame(bad))
    with pytest.raises(ValidationFailed) as failure:
        validate(ValidateConfig(data_dir=str(data), output=str(tmp_path / "v")))
    rows = failure.value.anomalies
    assert {"train"} == {r["split"] for r in rows}
    assert any(r["feature"] == "label" for r in rows)
    assert any(r["problem"] == "record count" and "37" in r["detail"] for r in rows)
    assert "label" in str(failure.value) and "record count" in str(failure.value)
    saved = json.loads((tmp_path / "v" / "anomalies.json").read_text())
    assert not saved["passed"] and len(saved["anomalies"]) == len(rows)


def test_table_is_readable() -> None:
    table = format_table(
        [
            {
                "split": "train",
                "feature": "label",
                "problem": "Out-of-range values",
                "detail": "Unexpectedly large value: 7.",
            }
        ]
    )
    header, rule, row = table.splitlines()
    assert header.split() == ["split", "feature", "problem", "detail"]
    assert row.startswith("train  label")


def test_statistics_use_ingestion_runner_options_except_on_dask() -> None:
    from components.validate import statistics_beam_args

    said: list[dict] = []
    flink = ["--runner=FlinkRunner", "--flink_master=host:8081"]
    assert statistics_beam_args(flink, said.append) == flink
    local = statistics_beam_args([], said.append)
    assert local[0] == "--runner=FnApiRunner" and not said
    dask = ["--runner=DaskRunner", "--dask_client_address=tcp://127.0.0.1:8786"]
    assert statistics_beam_args(dask, said.append) == local
    assert said and "DaskRunner" in said[0]["message"]
