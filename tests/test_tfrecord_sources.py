"""ImageNet as TFRecords people already have: the Inception layout (made here by our port of
TensorFlow's build_imagenet_data.py on real photos) and a prepared TFDS folder, ingested
without re-encoding, with damaged records quarantined by file and record, then trained and
registered by the flow like any other source."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tensorflow as tf

from bench import reference_converter
from bench.photos import write_photo_folders
from components.ingest import IngestConfig, run_ingest
from components.ingest.records import tfrecord_frame
from components.train.data import parse

pytestmark = pytest.mark.integration


def _records(path: Path) -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def _ours(data: Path) -> dict[str, dict]:
    """Every record of an ingested dataset by file name: its image bytes, label, text, boxes."""
    out = {}
    for shard in sorted(data.glob("*-of-*")):
        for record in tf.data.TFRecordDataset(str(shard)):
            f = parse(record)
            out[f["filename"].numpy().decode()] = {
                "image": f["image"].numpy(),
                "label": int(f["label"]),
                "text": f["text"].numpy().decode(),
                "xmin": tf.sparse.to_dense(f["bbox_xmin"]).numpy().tolist(),
            }
    return out


def inception_set(root: Path, damaged: bool = True) -> tuple[Path, Path, list[str]]:
    """Real photos (4 classes) converted by the reference converter; with `damaged`, three
    records planted: an undecodable image, a record whose bytes fail their checksum, and a
    file cut in the middle of its last record."""
    photos = write_photo_folders(root / "photos", 80, classes=4, size=(150, 200), distinct=True)
    synsets = sorted(os.listdir(photos / "train"))
    humans = {s: f"thing {i}, a class" for i, s in enumerate(synsets)}
    boxed = sorted((photos / "train" / synsets[1]).iterdir())[0].name
    boxes = {boxed: [[0.1, 0.2, 0.6, 0.9]]}
    out = root / "inception"
    out.mkdir()
    for folder, name, shards in (("val", "validation", 2), ("train", "train", 4)):
        reference_converter.convert(
            str(photos / folder), name, str(out), shards, 2, synsets, humans, boxes, log=False
        )
    if damaged:
        bad = reference_converter.inception_example(
            "broken.JPEG", b"\xff\xd8\xff\xe0 not really a JPEG", 2, synsets[1], "x", [], 10, 10
        )
        with (out / "train-00001-of-00004").open("ab") as handle:
            handle.write(tfrecord_frame(bad))
        flipped = bytearray((out / "train-00002-of-00004").read_bytes())
        first = int.from_bytes(flipped[:8], "little") + 16  # record 1 starts here
        flipped[first + 12 + 40] ^= 0xFF  # a byte of record 1's bytes, not of its header
        (out / "train-00002-of-00004").write_bytes(bytes(flipped))
        cut = out / "train-00003-of-00004"
        cut.write_bytes(cut.read_bytes()[:-500])
    return out, photos, synsets


def test_inception_tfrecords_are_ingested_as_they_are_with_damage_quarantined_by_record(
    tmp_path: Path,
) -> None:
    source, photos, synsets = inception_set(tmp_path)
    planted = len(_records(source / "train-00001-of-00004")) - 1  # its last record
    meta = run_ingest(IngestConfig(source=str(source), output=str(tmp_path / "data")))
    assert meta["layout"] == "inception-tfrecords" and meta["num_classes"] == 4
    # 72 train photos + the planted record; the cut file's last record is one entry
    assert meta["inputs"] == {"train": 73, "validation": 8}
    assert meta["records"] == {"train": 70, "validation": 8}
    assert meta["reencoded"] == {"train": 0, "validation": 0}
    rows = [json.loads(line) for line in (tmp_path / "data" / "quarantine.jsonl").open()]
    by_file = {Path(r["path"]).name: r for r in rows}
    assert by_file["train-00001-of-00004"]["record"] == planted
    assert by_file["train-00002-of-00004"]["record"] == 1
    assert "checksum" in by_file["train-00002-of-00004"]["reason"]
    assert "runs past the end" in by_file["train-00003-of-00004"]["reason"]
    assert len(rows) == 3

    labels = (tmp_path / "data" / "labels.txt").read_text().splitlines()
    assert labels == [f"{i}\t{s}\tthing {i}, a class" for i, s in enumerate(synsets)]
    ours = _ours(tmp_path / "data")
    assert len(ours) == 78
    for split in ("train", "val"):
        for i, synset in enumerate(synsets):
            for photo in (photos / split / synset).iterdir():
                if photo.name in ours:  # the two damaged ones are not
                    record = ours[photo.name]
                    assert record["image"] == photo.read_bytes(), photo  # byte for byte
                    assert record["label"] == i and record["text"] == f"thing {i}, a class"
    boxed = sorted((photos / "train" / synsets[1]).iterdir())[0].name
    assert ours[boxed]["xmin"] == [pytest.approx(0.1)]
    assert sum(bool(r["xmin"]) for r in ours.values()) == 1


def tfds_set(root: Path, synsets: list[str], photos: Path) -> Path:
    """A prepared TFDS folder (`imagenet2012/5.1.0/`) of the same photos, 0-based labels, and
    two bad records: a label outside the class list and a record without its image."""
    folder = root / "tfds" / "imagenet2012" / "5.1.0"
    folder.mkdir(parents=True)
    (folder / "label.labels.txt").write_text("".join(s + "\n" for s in synsets))
    (folder / "dataset_info.json").write_text('{"name": "imagenet2012"}')

    def example(image: bytes | None, label: int, name: str) -> bytes:
        feature = {
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            "file_name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
        }
        if image is not None:
            feature["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    for split, folder_name, shards in (("train", "train", 2), ("validation", "val", 1)):
        files = sorted((photos / folder_name).rglob("*.JPEG"))
        for shard in range(shards):
            name = f"imagenet2012-{split}.tfrecord-{shard:05d}-of-{shards:05d}"
            with tf.io.TFRecordWriter(str(folder / name)) as writer:
                for path in files[shard::shards]:
                    writer.write(
                        example(path.read_bytes(), synsets.index(path.parent.name), path.name)
                    )
                if split == "train" and shard == 1:
                    writer.write(example(files[0].read_bytes(), 7, "label_seven.JPEG"))
                    writer.write(example(None, 0, "no_image.JPEG"))
    return root / "tfds"


def test_a_tfds_folder_is_ingested_with_its_label_list(tmp_path: Path) -> None:
    photos = write_photo_folders(tmp_path / "photos", 40, classes=4, size=(120, 160), distinct=True)
    synsets = sorted(os.listdir(photos / "train"))
    source = tfds_set(tmp_path, synsets, photos)
    meta = run_ingest(IngestConfig(source=str(source), output=str(tmp_path / "data")))
    assert meta["layout"] == "tfds-tfrecords" and meta["num_classes"] == 4
    assert meta["inputs"] == {"train": 38, "validation": 4}
    assert meta["records"] == {"train": 36, "validation": 4}
    rows = [json.loads(line) for line in (tmp_path / "data" / "quarantine.jsonl").open()]
    reasons = sorted(r["reason"] for r in rows)
    assert "label 7 is not one of the 4 classes" in reasons[1]
    assert "'image'" in reasons[0]
    assert {(Path(r["path"]).name, r["record"]) for r in rows} == {
        ("imagenet2012-train.tfrecord-00001-of-00002", 18),
        ("imagenet2012-train.tfrecord-00001-of-00002", 19),
    }
    ours = _ours(tmp_path / "data")
    for path in (photos / "train").rglob("*.JPEG"):
        assert ours[path.name]["image"] == path.read_bytes()
        assert ours[path.name]["label"] == synsets.index(path.parent.name)


def test_linked_files_are_read_and_missing_or_stray_files_are_named(tmp_path: Path) -> None:
    """A TFRecord file that is a link (inside the source) is read like the others; a missing
    shard stops the run naming it; a file no split takes is listed as not read; a TFDS build
    left incomplete beside the finished version is not taken for the newest."""
    from components.ingest.sources import discover

    source, _, synsets = inception_set(tmp_path, damaged=False)
    (source / "kept").mkdir()
    moved = source / "kept" / "train-00001-of-00004"
    (source / "train-00001-of-00004").rename(moved)
    (source / "train-00001-of-00004").symlink_to(Path("kept") / "train-00001-of-00004")
    (source / "README.txt").write_text("how these were made")
    meta = run_ingest(IngestConfig(source=str(source), output=str(tmp_path / "data")))
    assert meta["records"] == {"train": 72, "validation": 8} and not any(
        meta["quarantined"].values()
    )
    assert any("README.txt" in line for line in meta["not_read"])

    (source / "train-00002-of-00004").unlink()
    with pytest.raises(ValueError, match=r"1 of 4 train files are missing \(00002\)"):
        discover(str(source))

    photos = write_photo_folders(tmp_path / "few", 40, classes=4, size=(120, 160), distinct=True)
    tfds = tfds_set(tmp_path / "t", synsets, photos)
    done = tfds / "imagenet2012" / "5.1.0"
    partial = tfds / "imagenet2012" / "5.1.0.incomplete7QX2"
    partial.mkdir()
    first = next(done.glob("*-train.tfrecord-00000-of-00002"))
    (partial / first.name).write_bytes(first.read_bytes()[:100])
    assert {Path(i.path).parent for i in discover(str(tfds)).items} == {done}
    # the dataset's own folder, as a user points at ~/tensorflow_datasets/imagenet2012
    assert {Path(i.path).parent for i in discover(str(tfds / "imagenet2012")).items} == {done}


def test_an_ingested_trickflow_dataset_is_not_taken_for_inception_records(
    ingested: Path,
) -> None:
    from components.ingest.sources import discover

    with pytest.raises(ValueError, match="already a TrickFlow dataset"):
        discover(str(ingested))


def test_both_formats_train_and_register_through_the_flow(prefect_server, tmp_path: Path) -> None:
    """The flow on each source as a user points `make run DATA=...` at it: ingested, validated,
    trained, evaluated and registered (smoke preset), the quarantine in the report."""
    from flows.train_imagenet import train_imagenet

    source, photos, synsets = inception_set(tmp_path / "a")
    report = train_imagenet(data_dir=str(source), work_dir=str(tmp_path / "work"), preset="smoke")
    assert report["ingest"]["records"] == {"train": 70, "validation": 8}
    assert report["ingest"]["quarantined"] == 3
    assert report["validate"]["passed"] and report["registry"]["version"] == "1"

    tfds = tfds_set(tmp_path / "b", synsets, photos)
    report = train_imagenet(data_dir=str(tfds), work_dir=str(tmp_path / "work"), preset="smoke")
    assert report["ingest"]["records"] == {"train": 72, "validation": 8}
    assert report["validate"]["passed"] and report["registry"]["version"]
