"""The Beam job: TestPipeline on inline records, and whole runs on odd data (integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from bench.photos import write_photo_folders
from components.ingest import IngestConfig, run_ingest
from components.ingest.pipeline import convert_item, ordered_map, write_shard
from tests.conftest import check_events, folder_files, jpeg_bytes, pattern_image
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
    files_a, files_b = folder_files(tmp_path / "a"), folder_files(tmp_path / "b")
    assert sorted(files_a) == sorted(files_b)
    assert "train-00002-of-00003" in files_a and "validation-00000-of-00001" in files_a
    assert "record_index/train-00002-of-00003.json" in files_a
    for name in files_a:
        assert files_a[name] == files_b[name], name


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
        files = folder_files(output)
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


def test_running_out_of_memory_fails_the_shard_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    """Not quarantined (a verdict that a rerun on unchanged inputs would reuse): the shard fails."""
    from components.ingest import pipeline

    path = tmp_path / "fine.JPEG"
    path.write_bytes(jpeg_bytes(pattern_image(0, 0)))

    def no_memory(data, max_side=None, max_bytes=0):  # noqa: ANN001, ANN202
        raise MemoryError("Unable to allocate 2.98 GiB")

    monkeypatch.setattr(pipeline, "to_stored_image", no_memory)
    with pytest.raises(MemoryError, match=rf"{path}: out of memory while converting it"):
        convert_item(_item(path, 0), None)
    task = {"split": "train", "shard": 0, "num_shards": 1, "run": "r", "items": [_item(path, 0)]}
    with pytest.raises(MemoryError):
        write_shard(task, str(tmp_path / "out"), str(tmp_path / "staging"), None, threads=2)
    assert not list((tmp_path / "staging").rglob("*.json"))  # no summary: the driver fails


def test_links_out_of_the_source_and_bad_names_are_quarantined_unread(
    class_folders: Path, tmp_path: Path, monkeypatch
) -> None:
    """A file link, a folder link and a link to /etc/passwd leave the source: never opened.
    A name that is not UTF-8 is quarantined under its escaped name, and the job completes."""
    import os

    from apache_beam.io.filesystems import FileSystems

    private = tmp_path / "private"
    (private / "photos").mkdir(parents=True)
    (private / "secret.jpg").write_bytes(jpeg_bytes(pattern_image(1, 1)))
    (private / "photos" / "p.jpg").write_bytes(jpeg_bytes(pattern_image(1, 2)))
    train = class_folders / "train" / "n00000000"
    os.symlink(private / "secret.jpg", train / "leak.jpg")
    os.symlink(private / "photos", train / "elsewhere")
    os.symlink("/etc/passwd", train / "passwd.jpg")
    (train / os.fsdecode(b"caf\xe9.jpg")).write_bytes(jpeg_bytes(pattern_image(0, 9)))
    opened: list[str] = []
    real_open = FileSystems.open

    def watching(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        opened.append(path)
        return real_open(path, *args, **kwargs)

    real_os_open = os.open

    def watching_os(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        opened.append(os.fsdecode(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(FileSystems, "open", staticmethod(watching))
    monkeypatch.setattr(os, "open", watching_os)
    metadata = _ingest(class_folders, tmp_path / "out")
    reasons = {
        q["path"].rsplit("/", 1)[-1]: q["reason"]
        for q in map(json.loads, (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines())
    }
    assert reasons["leak.jpg"].startswith("link outside the source (points to ")
    assert reasons["elsewhere"].startswith("link outside the source")
    assert reasons["passwd.jpg"] == (
        "link outside the source (points to /etc/passwd); set follow_outside_links to read it"
    )
    assert reasons["caf\\xe9.jpg"] == "file name is not valid UTF-8"
    assert metadata["quarantined"]["train"] == 4 and metadata["records"]["train"] == 3 * 8
    assert [p for p in opened if p.endswith(".JPEG")]  # the images were watched being read
    assert not [p for p in opened if "private" in p or "passwd" in p or "caf" in p]

    # The documented setting reads a link farm: the two outside images become records.
    followed = _ingest(
        class_folders, tmp_path / "followed", follow_outside_links=True
    )  # /etc/passwd is then read, and quarantined as not an image
    assert followed["records"]["train"] == 3 * 8 + 2


def test_a_same_size_replacement_and_an_edited_box_are_seen_as_changes(
    class_folders: Path, tmp_path: Path
) -> None:
    """The fingerprint is size + modification time (ns); `content` hashes every byte."""
    import os

    from components.ingest.sources import discover

    box = class_folders / "bbox" / "train" / "n00000000" / "img_0.xml"
    box.parent.mkdir(parents=True)
    box.write_text("<annotation><object><bndbox><xmin>120</xmin><ymin>1</ymin><xmax>140</xmax>"
                   "<ymax>20</ymax></bndbox></object></annotation>")  # fmt: skip
    before = {mode: discover(str(class_folders)).fingerprint(mode) for mode in (False, True)}
    image = class_folders / "train" / "n00000001" / "img_3.JPEG"
    other = class_folders / "train" / "n00000002" / "img_5.JPEG"
    stat = image.stat()
    replacement = jpeg_bytes(pattern_image(2, 5))[: stat.st_size].ljust(stat.st_size, b"\0")
    image.write_bytes(replacement)  # another picture, the same size
    assert image.stat().st_size == stat.st_size
    after = {mode: discover(str(class_folders)).fingerprint(mode) for mode in (False, True)}
    assert after[False] != before[False] and after[True] != before[True]

    # A change that restores the old time (touch -d, some copy tools) only the content hash sees.
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    box_stat = box.stat()
    box.write_text(box.read_text().replace("120", "130"))
    os.utime(box, ns=(box_stat.st_atime_ns, box_stat.st_mtime_ns))
    image.write_bytes(other.read_bytes()[: stat.st_size].ljust(stat.st_size, b"\0"))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert discover(str(class_folders)).fingerprint(True) != after[True]

    # Through ingestion: an edit of the VOC box (same size, new time) is not "inputs unchanged".
    first = _ingest(class_folders, tmp_path / "out")
    box.write_text(box.read_text().replace("130", "140"))
    second = _ingest(class_folders, tmp_path / "out")
    assert not second["reused"] and second["fingerprint"] != first["fingerprint"]
    assert _ingest(class_folders, tmp_path / "out", fingerprint="content")["reused"] is False
    assert _ingest(class_folders, tmp_path / "out", fingerprint="content")["reused"] is True


def test_two_ingestions_of_one_dataset_take_turns_and_a_reader_holds_off_a_rewrite(
    class_folders: Path, tmp_path: Path
) -> None:
    """Once the second ingestion's clean-up deleted the first's staging under it."""
    import threading

    from components import dataset

    out = tmp_path / "out"
    results, errors = [], []

    def ingest() -> None:
        try:
            results.append(_ingest(class_folders, out))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=ingest) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(r["reused"] for r in results) == [False, True]

    # A training reading the dataset: a rewrite (changed inputs) waits until it is done.
    (class_folders / "train" / "n00000000" / "img_0.JPEG").unlink()
    waits: list[str] = []
    finished = threading.Event()

    def rewrite() -> None:
        _ingest(class_folders, out, on_event=lambda e: waits.append(e.get("message", "")))
        finished.set()

    with dataset.locked(str(out), exclusive=False):
        writer = threading.Thread(target=rewrite)
        writer.start()
        assert not finished.wait(3.0)  # still waiting: the shards are not touched under us
        assert dataset.read_metadata(str(out))["records"]["train"] == 24
    writer.join()
    assert finished.is_set() and dataset.read_metadata(str(out))["records"]["train"] == 23
    assert any("waiting for the lock" in w for w in waits)


def test_a_torn_metadata_file_does_not_block_later_runs(
    class_folders: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    _ingest(class_folders, out)
    (out / "metadata.json").write_text('{"fingerprint": "v1-')  # what a full disk once left
    again = _ingest(class_folders, out)
    assert again["reused"] is False and again["records"]["train"] == 24
    assert not list(out.glob(".*.tmp"))


def test_a_file_swapped_after_listing_is_refused_not_read(
    class_folders: Path, tmp_path: Path, monkeypatch
) -> None:
    """Conversion opens each file once and checks it is what the listing saw: a file swapped
    for a link to a private file, one replaced by another file, one rewritten in place, and a
    listed (inside) link pointed elsewhere are each quarantined by name; no outside byte lands
    in a record."""
    import os

    import components.ingest as ingest

    private = tmp_path / "private"
    private.mkdir()
    secret = jpeg_bytes(pattern_image(7, 999, (52, 60)))  # in no class folder
    (private / "secret.JPEG").write_bytes(secret)
    train = class_folders / "train" / "n00000000"
    names = sorted(p.name for p in train.iterdir())
    os.symlink(names[4], train / "inside_link.JPEG")  # a link within the source: readable
    real_discover = ingest.discover

    def swap_after_listing(source, follow):  # noqa: ANN001, ANN202
        found = real_discover(source, follow)
        os.remove(train / names[0])  # swapped for a link to a private file
        os.symlink(private / "secret.JPEG", train / names[0])
        replacement = train / "new.tmp"  # replaced by another file (rename over it)
        replacement.write_bytes((train / names[1]).read_bytes())
        os.replace(replacement, train / names[1])
        with open(train / names[2], "ab") as handle:  # rewritten in place
            handle.write(b"\0" * 10)
        os.remove(train / "inside_link.JPEG")  # the listed link now leads outside
        os.symlink(private / "secret.JPEG", train / "inside_link.JPEG")
        return found

    monkeypatch.setattr(ingest, "discover", swap_after_listing)
    metadata = _ingest(class_folders, tmp_path / "out")
    reasons = {
        q["path"].rsplit("/", 1)[-1]: q["reason"]
        for q in map(json.loads, (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines())
    }
    assert reasons[names[0]] == "changed after it was listed: now a symbolic link (not read)"
    for name in (names[1], names[2], "inside_link.JPEG"):
        assert reasons[name].startswith("changed after it was listed (inode, size, modified time")
    assert metadata["records"]["train"] == 3 * 8 + 1 - 4
    stored = [
        tf.train.Example.FromString(r.numpy()).features.feature["image"].bytes_list.value[0]
        for shard in sorted((tmp_path / "out").glob("train-*"))
        for r in tf.data.TFRecordDataset(str(shard))
    ]
    assert secret not in stored


def test_planted_copies_of_training_photos_in_validation_are_found_and_nothing_else(
    tmp_path: Path,
) -> None:
    """Real photos (distinct tiles of the bundled photos): 12 in training, 3 others in
    validation, and in validation 4 copies of training photos as they leak in practice: the same
    file, re-encoded at quality 50, resized to 70%, and cropped by 4% on every side. Every copy
    is found with its original, and no pair is reported among the distinct photos."""
    import io

    from bench.photos import real_photo_tiles

    tiles = real_photo_tiles()
    assert len(tiles) >= 15

    def jpeg(image, quality: int = 90) -> bytes:
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        return out.getvalue()

    source = tmp_path / "src"
    originals = {}
    for index, tile in enumerate(tiles[:12]):
        folder = source / "train" / f"n0000000{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"photo_{index}.JPEG").write_bytes(jpeg(tile))
        originals[index] = folder / f"photo_{index}.JPEG"
    for index, tile in enumerate(tiles[12:15]):
        folder = source / "val" / f"n0000000{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"other_{index}.JPEG").write_bytes(jpeg(tile))
    w, h = tiles[0].size
    planted = {
        "same_file.JPEG": (0, originals[0].read_bytes()),
        "reencoded.JPEG": (1, jpeg(tiles[1], 50)),
        "resized.JPEG": (2, jpeg(tiles[2].resize((int(w * 0.7), int(h * 0.7))))),
        "cropped.JPEG": (3, jpeg(tiles[3].crop((w // 25, h // 25, w - w // 25, h - h // 25)))),
    }
    for name, (index, data) in planted.items():
        (source / "val" / f"n0000000{index % 3}" / name).write_bytes(data)

    metadata = _ingest(source, tmp_path / "out")
    found = json.loads((tmp_path / "out" / "duplicates.json").read_text())
    leaked = {Path(p["validation"]).name: Path(p["train"]).name for p in found["pairs"]
              if p["scope"] == "validation-train"}  # fmt: skip
    assert leaked == {name: f"photo_{index}.JPEG" for name, (index, _) in planted.items()}
    kinds = {Path(p["validation"]).name: p["kind"] for p in found["pairs"]}
    assert kinds["same_file.JPEG"] == "exact" and kinds["cropped.JPEG"] == "near"
    assert found["counts"] == {"validation-train": 4, "train": 0, "validation": 0}
    assert metadata["duplicates"]["leaked_validation"] == 4
    # The banded search, which big datasets get, finds every pair within its guarantee.
    from components.ingest.images import to_stored_image
    from components.ingest.similarity import exact_digest, find_duplicates

    rows = []
    for path in sorted(source.rglob("*.JPEG")):
        stored = to_stored_image(path.read_bytes())
        rows.append({"split": "train" if "train" in path.parts else "validation",
                     "path": str(path), "digest": exact_digest(stored.jpeg),
                     "hashes": [f"{x:016x}" for x in stored.hashes or ()]})  # fmt: skip
    exhaustive, banded = find_duplicates(rows), find_duplicates(rows, budget=0)
    assert exhaustive["search"] == "exhaustive; block means within 8 bits"
    assert banded["search"] == (
        "banded: 8-bit bands, every pair within 7 bits found; block means within 8 bits"
    )
    assert [p for p in exhaustive["pairs"] if p["bits"] <= 7] == [
        p for p in banded["pairs"] if p["bits"] <= 7
    ]
    assert [p["bits"] for p in exhaustive["pairs"]] == sorted(p["bits"] for p in found["pairs"])


def test_a_set_of_near_identical_pictures_is_counted_whole_and_listed_in_part() -> None:
    """300 frames of one scene: 44,850 pairs within train, every one counted, the first 100
    listed; every validation frame is a leak."""
    from components.ingest.similarity import find_duplicates

    frame = ["0f0f0f0f0f0f0f0f", "00ff00ff00ff00ff"]
    rows = [{"split": "train", "path": f"t{i}", "digest": f"d{i}", "hashes": frame}
            for i in range(300)]  # fmt: skip
    rows += [{"split": "validation", "path": f"v{i}", "digest": f"e{i}", "hashes": frame}
             for i in range(3)]  # fmt: skip
    found = find_duplicates(rows, listed=100)
    assert found["counts"] == {"validation-train": 900, "train": 44_850, "validation": 3}
    assert len([p for p in found["pairs"] if p["scope"] == "train"]) == 100
    assert found["leaked"] == ["v0", "v1", "v2"]


def test_a_worker_on_another_machine_compares_size_and_time_not_the_inode(tmp_path: Path) -> None:
    """FUSE and some network mounts number files per machine: a Dask worker elsewhere sees
    another inode for the same file. There size and time decide; on the lister's machine the
    inode does too."""
    from components.ingest.pipeline import ChangedSinceListed, read_listed

    path = tmp_path / "a.JPEG"
    path.write_bytes(jpeg_bytes(pattern_image(0, 0)))
    seen = path.stat()
    item = {"path": str(path), "size": seen.st_size, "mtime_ns": seen.st_mtime_ns,
            "inode": seen.st_ino + 1}  # fmt: skip
    assert read_listed({**item, "host": "another-machine"}) == path.read_bytes()
    with pytest.raises(ChangedSinceListed):
        read_listed(item)  # listed here: the inode must match


def test_the_banded_search_of_a_pile_of_near_copies_matches_the_exhaustive_one(
    monkeypatch,
) -> None:
    """A pile of 400 near-identical pictures (each within 2 bits of one scene) among 3,000
    distinct ones: the banded search (rows with more candidates than images compared with
    every image, the rest made a bounded slice at a time) counts the same pairs as comparing
    every pair does, whatever the slice size."""
    import numpy as np

    from components.ingest import similarity

    rng = np.random.default_rng(0)
    scenes = [int(x) for x in rng.integers(0, 2**63, 2)]

    def near_scene(scene: int) -> int:  # within 2 bits: pairs within the bands' guarantee
        return scene ^ sum(1 << int(f) for f in rng.choice(64, size=2, replace=False))

    hashes = [
        [near_scene(s) for s in scenes] if i % 7 == 0 and i < 2800
        else [int(x) for x in rng.integers(0, 2**63, 2)]
        for i in range(3400)
    ]  # fmt: skip
    rows = [{"split": "validation" if i % 10 == 9 else "train", "path": f"p{i}",
             "digest": f"d{i}", "hashes": [f"{h:016x}" for h in pair]}
            for i, pair in enumerate(hashes)]  # fmt: skip
    exhaustive = similarity.find_duplicates(rows, budget=10**12)
    assert exhaustive["counts"]["train"] > 50_000 and len(exhaustive["leaked"]) == 40
    for expanded in (similarity.EXPANDED, 5_000):
        monkeypatch.setattr(similarity, "EXPANDED", expanded)
        banded = similarity.find_duplicates(rows, budget=0)
        assert banded["search"].startswith("banded")
        assert banded["counts"] == exhaustive["counts"]
        assert banded["leaked"] == exhaustive["leaked"]


def test_copies_between_spans_are_found_and_left_out_by_the_gate(tmp_path: Path) -> None:
    """Span 02's validation holds a re-encoded copy of a training photo of span 01, and a
    resized one of a training photo of its own: the view over both spans lists both, under the
    view's shard names, and the gate's leak mask marks exactly those two validation records."""
    import io

    from bench.photos import real_photo_tiles
    from components import spans
    from components.evaluate.evaluation import leaked_records

    tiles = real_photo_tiles()

    def jpeg(image, quality: int = 90) -> bytes:
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality)
        return out.getvalue()

    def put(span: str, split: str, name: str, data: bytes, label: int) -> None:
        folder = tmp_path / "src" / spans.SPANS / span / split / f"n0000000{label}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    for index in range(6):
        put("01", "train", f"a{index}.JPEG", jpeg(tiles[index]), index % 2)
        put("02", "train", f"b{index}.JPEG", jpeg(tiles[6 + index]), index % 2)
    for index in range(3):
        put("01", "val", f"c{index}.JPEG", jpeg(tiles[12 + index]), index % 2)
        put("02", "val", f"d{index}.JPEG", jpeg(tiles[15 + index]), index % 2)
    w, h = tiles[0].size
    put("02", "val", "copy_of_a3.JPEG", jpeg(tiles[3], 50), 1)  # a3 is span 01's
    put("02", "val", "copy_of_b2.JPEG", jpeg(tiles[8].resize((w * 7 // 10, h * 7 // 10))), 0)
    for span in ("01", "02"):
        (tmp_path / "src" / spans.SPANS / span / spans.MARKER).write_text("")

    out = tmp_path / "out"
    metadata = _ingest(tmp_path / "src", out)
    assert metadata["duplicates"]["leaked_validation"] == 2
    assert metadata["duplicates"]["pairs"]["validation-train"] == 2
    assert metadata["duplicates"]["search"].startswith("all spans together")
    found = json.loads((out / "duplicates.json").read_text())
    pairs = {Path(p["validation"]).name: Path(p["train"]).name for p in found["pairs"]}
    assert pairs == {"copy_of_a3.JPEG": "a3.JPEG", "copy_of_b2.JPEG": "b2.JPEG"}
    # the span's own search saw only its own copy
    own = json.loads((out / spans.SPANS / "02" / "duplicates.json").read_text())
    assert len(own["leaked_records"]) == 1
    # validation's table names both pairs
    from components.validate import leak_rows

    rows = leak_rows(str(out), metadata, spans.manifest(str(out)), 0.0)
    assert rows[0]["detail"].startswith("2 of 8 validation images")
    assert sorted(Path(r["detail"].split(" = ")[0]).name for r in rows[1:]) == [
        "copy_of_a3.JPEG",
        "copy_of_b2.JPEG",
    ]
    # the gate reads the view's validation shards in order: exactly the two copies marked
    sources, names = [], []
    for shard in sorted(out.glob("validation-*")):
        for record in _records(shard):
            sources.append(str(shard))
            names.append(record.features.feature["filename"].bytes_list.value[0].decode())
    marked = leaked_records(sources)
    assert sorted(n for n, m in zip(names, marked, strict=True) if m) == [
        "copy_of_a3.JPEG",
        "copy_of_b2.JPEG",
    ]


def test_a_near_pair_counts_only_when_its_block_means_agree_too() -> None:
    """Two images whose perceptual hashes agree but whose light-and-dark layout (block means)
    differs by more than CONFIRM bits are not a pair; within CONFIRM they are; fingerprints
    kept before the block means existed (two hashes) are judged by the perceptual hash alone."""
    from components.ingest.similarity import CONFIRM, find_duplicates

    phash, blocks = 0x0F0F_0F0F_0F0F_0F0F, 0x00FF_00FF_00FF_00FF
    far_blocks = blocks ^ ((1 << (CONFIRM + 1)) - 1)  # CONFIRM + 1 bits apart
    near_blocks = blocks ^ ((1 << CONFIRM) - 1)  # CONFIRM bits apart

    def rows(other_blocks: int, width: int = 4) -> list[dict]:
        first = [phash, phash, blocks, blocks][:width]
        second = [phash, phash, other_blocks, other_blocks][:width]
        return [
            {"split": "train", "path": "a", "digest": "1", "hashes": [f"{h:016x}" for h in first]},
            {"split": "validation", "path": "b", "digest": "2",
             "hashes": [f"{h:016x}" for h in second]},
        ]  # fmt: skip

    assert find_duplicates(rows(far_blocks))["counts"]["validation-train"] == 0
    assert find_duplicates(rows(near_blocks))["counts"]["validation-train"] == 1
    unconfirmed = find_duplicates(rows(far_blocks, width=2))
    assert unconfirmed["counts"]["validation-train"] == 1
    assert unconfirmed["search"].endswith("(2 images fingerprinted without them: unconfirmed)")
    # one image of the pair fingerprinted before: judged by the perceptual hash alone; the
    # others keep their confirmation
    mixed = rows(far_blocks)
    mixed[0]["hashes"] = mixed[0]["hashes"][:2]
    mixed.append(
        {
            "split": "validation",
            "path": "c",
            "digest": "3",
            "hashes": [f"{h:016x}" for h in (phash, phash, far_blocks, far_blocks)],
        }
    )
    mixed.append({"split": "train", "path": "d", "digest": "4",
                  "hashes": [f"{h:016x}" for h in (phash, phash, blocks, blocks)]})  # fmt: skip
    found = find_duplicates(mixed)
    assert {(p["validation"], p["train"]) for p in found["pairs"]
            if p["scope"] == "validation-train"} == {("b", "a"), ("c", "a")}  # fmt: skip
