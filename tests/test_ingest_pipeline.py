"""The Beam job: TestPipeline on inline records, and whole runs on odd data (integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from bench.photos import write_photo_folders
from components.ingest import IngestConfig, run_ingest
from components.ingest.pipeline import convert_item, ordered_map, write_shard
from tests.conftest import check_events, jpeg_bytes, pattern_image
from tests.odd_files import broken, make_odd_dataset, odd_but_decodable

pytestmark = pytest.mark.integration


def _item(path: Path, label: int | None, problem: str = "") -> dict:
    return {
        "path": str(path),
        "relpath": f"train/n0/{path.name}",
        "split": "train",
        "size": 0,
        "label": label,
        "wnid": "n0",
        "text": "zero",
        "boxes": [[0, 0, 20, 20]],
        "problem": problem,
    }


def test_write_shard_streams_records_in_order_and_quarantines_bad_files(tmp_path: Path) -> None:
    items = []
    for index in range(12):
        path = tmp_path / f"good{index:02d}.JPEG"
        path.write_bytes(jpeg_bytes(pattern_image(0, index)))
        items.append(_item(path, 0))
    (tmp_path / "bad.JPEG").write_bytes(b"")
    items.insert(5, _item(tmp_path / "bad.JPEG", 0))
    items.append(_item(tmp_path / "x.JPEG", None, "no label"))
    task = {"split": "train", "shard": 1, "num_shards": 2, "run": "r1", "items": items}
    summary = write_shard(task, str(tmp_path / "out"), str(tmp_path / "staging"), None, threads=3)
    assert summary["records"] == 12 and summary["with_boxes"] == 12
    assert [(Path(q["path"]).name, q["reason"]) for q in summary["quarantine"]] == [
        ("bad.JPEG", "empty file"),
        ("x.JPEG", "no label"),
    ]
    names = [
        tf.train.Example.FromString(r.numpy()).features.feature["filename"].bytes_list.value[0]
        for r in tf.data.TFRecordDataset(str(tmp_path / "out" / "train-00001-of-00002"))
    ]
    assert names == [f"good{i:02d}.JPEG".encode() for i in range(12)]  # the task's order
    staged = json.loads(
        (tmp_path / "staging" / "summaries" / "train-00001-of-00002.json").read_text()
    )
    assert staged == summary
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_ordered_map_keeps_order_whatever_finishes_first() -> None:
    import time

    def slow_for_small(n: int) -> int:
        time.sleep(0.002 * (10 - n % 10))
        return n * n

    assert list(ordered_map(slow_for_small, range(50), threads=4)) == [n * n for n in range(50)]
    assert list(ordered_map(slow_for_small, range(5), threads=1)) == [0, 1, 4, 9, 16]


def test_unreadable_box_file_keeps_the_image_and_reports_the_box_problem(tmp_path: Path) -> None:
    path = tmp_path / "a.JPEG"
    path.write_bytes(jpeg_bytes(pattern_image(0, 0)))
    (tmp_path / "a.xml").write_text("<annotation><object>")
    item = {**_item(path, 0), "box_file": str(tmp_path / "a.xml")}
    example, stats = convert_item(item, None)
    assert example is not None and "a.xml" in stats["box_problem"]


def _ingest(source: Path, output: Path, on_event=None, **settings) -> dict:
    return run_ingest(IngestConfig(source=str(source), output=str(output), **settings), on_event)


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
    reported = []
    first = _ingest(class_folders, tmp_path / "out", reported.append)
    assert not first["reused"] and first["records"] == {"train": 24, "validation": 9}
    assert check_events(reported, "ingest")[-1] == (
        "wrote 24 train / 9 validation records; quarantined 0 (quarantine.jsonl)"
    )
    reported.clear()
    assert _ingest(class_folders, tmp_path / "out", reported.append)["reused"]
    assert "reusing" in check_events(reported, "ingest")[0]
    (class_folders / "train" / "n00000000" / "new.JPEG").write_bytes(
        jpeg_bytes(pattern_image(0, 50))
    )
    changed = _ingest(class_folders, tmp_path / "out")
    assert not changed["reused"] and changed["records"]["train"] == 25


def test_real_photos_ingest_identically_run_after_run(tmp_path: Path) -> None:
    """Hundreds of real photo crops at ImageNet-like sizes, ingested several times: every run
    succeeds and writes the same bytes (the multi-threaded local runner lost a record in about
    half such runs)."""
    source = write_photo_folders(tmp_path / "photos", 300, size=(375, 500), odd_every=25)
    first = None
    for run, threads in enumerate([None, None, 16]):  # 16 threads: as on a 16-core machine
        output = tmp_path / f"out{run}"
        meta = _ingest(source, output, train_shards=3, threads=threads)
        assert meta["records"] == {"train": 270, "validation": 30}
        files = {p.name: p.read_bytes() for p in sorted(output.iterdir())}
        if first is None:
            first = files
        else:
            assert files == first


def test_command_line_reports_bad_sources(tmp_path: Path, capsys) -> None:
    from components.ingest.__main__ import main

    assert main(["--source", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_official_ilsvrc_layout_ingests_with_every_label_and_box_in_its_record(
    tmp_path: Path,
) -> None:
    """Devkit labels (ids not in alphabetical order) and VOC boxes, through the whole job."""
    from tests.test_layouts import (
        TRAIN_WNIDS,
        VAL_WNIDS,
        _add_devkit,
        _official_tree,
        _val_name,
        _voc_xml,
    )

    root = _add_devkit(_official_tree(tmp_path / "src"))  # 16x12 px images
    wnid = TRAIN_WNIDS[2]
    boxes = {
        f"{wnid}_1.JPEG": (root / "bbox" / "train" / wnid / f"{wnid}_1.xml", [(4, 3, 12, 9)]),
        f"{_val_name(3)}.JPEG": (root / "bbox" / "val" / f"{_val_name(3)}.xml", [(-2, 0, 8, 20)]),
    }
    for path, box in boxes.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_voc_xml(box, (16, 12)))
    meta = _ingest(root, tmp_path / "out")
    assert meta["layout"] == "ilsvrc2012" and meta["with_boxes"] == {"train": 1, "validation": 1}
    seen = {}
    for shard in sorted((tmp_path / "out").glob("*-of-*")):
        for example in _records(shard):
            f = example.features.feature
            name = f["filename"].bytes_list.value[0].decode()
            box = [
                f[k].float_list.value[:]
                for k in ("bbox_xmin", "bbox_ymin", "bbox_xmax", "bbox_ymax")
            ]
            seen[name] = (f["label"].int64_list.value[0], box)
    assert len(seen) == len(TRAIN_WNIDS) * 2 + len(VAL_WNIDS)
    for number, wnid_of_image in enumerate(VAL_WNIDS, 1):
        assert seen[f"{_val_name(number)}.JPEG"][0] == TRAIN_WNIDS.index(wnid_of_image)
    assert seen[f"{wnid}_1.JPEG"] == (2, [[0.25], [0.25], [0.75], [0.75]])
    assert seen[f"{_val_name(3)}.JPEG"][1] == [[0.0], [0.0], [0.5], [1.0]]  # clamped
    assert seen[f"{wnid}_0.JPEG"][1] == [[], [], [], []]  # no box file: no boxes


def test_a_stale_summary_of_an_earlier_run_is_not_counted(
    tmp_path: Path, class_folders: Path
) -> None:
    """Only this run's summaries count: a shard the job never wrote fails the run."""
    from components.ingest import _read_summaries

    staging = tmp_path / "staging"
    (staging / "summaries").mkdir(parents=True)
    (staging / "summaries" / "train-00000-of-00001.json").write_text('{"run": "earlier"}')
    with pytest.raises(RuntimeError, match="did not write 2 shard"):
        _read_summaries(str(staging), {"train": 1, "validation": 1}, "now", "FnApiRunner", "out")


def test_a_failing_job_is_a_runtime_error_naming_the_runner(
    tmp_path: Path, class_folders: Path
) -> None:
    from unittest import mock

    from components.ingest import pipeline

    def explode(*args, **kwargs):
        raise ValueError("worker bug")

    with mock.patch.object(pipeline, "write_shard", explode):
        with pytest.raises(RuntimeError, match="FnApiRunner ingestion job failed"):
            _ingest(class_folders, tmp_path / "out")
