"""The Beam job: TestPipeline on inline records, and whole runs on odd data (integration)."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from components.ingest import IngestConfig, run_ingest
from components.ingest.pipeline import QUARANTINE, ConvertImages
from tests.conftest import IN_MEMORY_BEAM, jpeg_bytes, pattern_image
from tests.odd_files import broken, make_odd_dataset, odd_but_decodable

pytestmark = pytest.mark.integration


def _item(path: Path, label: int | None, problem: str = "") -> dict:
    return {
        "path": str(path),
        "relpath": path.name,
        "split": "train",
        "size": 0,
        "label": label,
        "wnid": "n0",
        "text": "zero",
        "boxes": [],
        "problem": problem,
    }


def test_convert_images_routes_bad_files_to_quarantine(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.JPEG", tmp_path / "bad.JPEG"
    good.write_bytes(jpeg_bytes(pattern_image(0, 0)))
    bad.write_bytes(b"")
    items = [_item(good, 0), _item(bad, 0), _item(tmp_path / "x.JPEG", None, "no label")]
    with TestPipeline(runner="DirectRunner") as p:
        out = p | beam.Create(items) | ConvertImages({"train": 2, "validation": 1}, None)
        keys = out.examples | beam.Map(lambda kv: (kv[0][0], kv[1][2]))
        assert_that(keys, equal_to([("train", 0)]), label="examples")
        reasons = out[QUARANTINE] | beam.Map(lambda q: (Path(q["path"]).name, q["reason"]))
        assert_that(
            reasons,
            equal_to([("bad.JPEG", "empty file"), ("x.JPEG", "no label")]),
            label="quarantine",
        )


def _ingest(source: Path, output: Path, **settings) -> dict:
    return run_ingest(
        IngestConfig(source=str(source), output=str(output), beam_args=IN_MEMORY_BEAM, **settings)
    )


def _records(path: Path) -> list[tf.train.Example]:
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


def test_odd_dataset_loses_nothing_and_every_record_decodes(tmp_path: Path) -> None:
    source = make_odd_dataset(tmp_path / "odd")
    meta = _ingest(source, tmp_path / "out", max_side=4096)
    odd, bad = len(odd_but_decodable()), len(broken())
    assert meta["inputs"] == {"train": 6 + odd + bad, "validation": 7}
    assert meta["records"] == {"train": 6 + odd, "validation": 6}
    assert meta["quarantined"] == {"train": bad, "validation": 1}
    quarantine = [
        json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()
    ]
    assert sorted(Path(q["path"]).name for q in quarantine) == sorted(
        [*broken(), "unknown_class.JPEG"]
    )
    assert all(q["reason"] for q in quarantine)
    names = set()
    for shard in sorted((tmp_path / "out").glob("*-of-*")):
        for example in _records(shard):
            f = example.features.feature
            image = tf.io.decode_jpeg(f["image"].bytes_list.value[0])
            assert image.shape[-1] == 3
            assert list(image.shape[:2]) == [
                f["height"].int64_list.value[0],
                f["width"].int64_list.value[0],
            ]
            names.add(f["filename"].bytes_list.value[0].decode())
    assert set(odd_but_decodable()) <= names  # unicode names included
    assert meta["source_formats"]["PNG"] >= 1 and meta["source_formats"]["JPEG/CMYK"] == 1
    assert (tmp_path / "out" / "labels.txt").read_text().splitlines()[
        0
    ] == "0\tn01000000\tn01000000"


def test_same_input_gives_byte_identical_output(tmp_path: Path, class_folders: Path) -> None:
    _ingest(class_folders, tmp_path / "a", train_shards=3)
    _ingest(class_folders, tmp_path / "b", train_shards=3)
    files_a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files_a == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "train-00002-of-00003" in files_a and "validation-00000-of-00001" in files_a
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_unchanged_inputs_are_reused_and_changes_are_not(
    tmp_path: Path, class_folders: Path
) -> None:
    first = _ingest(class_folders, tmp_path / "out")
    assert not first["reused"] and first["records"] == {"train": 24, "validation": 9}
    assert _ingest(class_folders, tmp_path / "out")["reused"]
    (class_folders / "train" / "n00000000" / "new.JPEG").write_bytes(
        jpeg_bytes(pattern_image(0, 50))
    )
    changed = _ingest(class_folders, tmp_path / "out")
    assert not changed["reused"] and changed["records"]["train"] == 25


def test_command_line_reports_bad_sources(tmp_path: Path, capsys) -> None:
    from components.ingest.__main__ import main

    assert main(["--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
