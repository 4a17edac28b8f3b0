"""ILSVRC2012 layouts recognised by what is on disk, their labels and boxes; every entry counted.

Each test builds a small tree of tiny real JPEGs under tmp_path, laid out like one of the ways
ImageNet is distributed: the official archives with the devkit or with the synset-labels file,
VOC XML boxes beside them, and the Kaggle release with its train boxes. Discovery only: no Beam job.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from components.demo_data import write_demo_dataset
from components.ingest import annotations, sources
from components.ingest.records import relative_boxes
from components.ingest.sources import discover
from tests.conftest import jpeg_bytes, make_class_folders, pattern_image

# Train classes in alphabetical order, so label i is TRAIN_WNIDS[i].
TRAIN_WNIDS = ["n01000001", "n01000002", "n01000003"]
# ILSVRC2012_ID -> (wnid, words) of the leaf synsets, numbered NOT in alphabetical wnid order,
# like the real devkit: a reader that took `id - 1` as the label would be wrong for every image.
LEAVES = {
    1: ("n01000003", "tench, Tinca tinca"),
    2: ("n01000001", "goldfish"),
    3: ("n01000002", "shark"),
}
# Internal WordNet nodes: listed in meta.mat, numbered after the leaves, never classes.
INTERNAL = {4: ("n00000010", "fish", 3), 5: ("n00000020", "animal", 1)}
# ILSVRC2012_ID of validation image 1, 2, ...
GROUND_TRUTH = [2, 1, 3, 1, 2, 3]
VAL_WNIDS = [LEAVES[i][0] for i in GROUND_TRUTH]
META_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children")


def _image(path: Path, label: int = 0, index: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(pattern_image(label, index, (12, 16))))


def _val_name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}"


def _write_meta_mat(path: Path, rows: list[tuple], fields: tuple[str, ...] = META_FIELDS) -> None:
    """meta.mat as the devkit stores it: a struct array `synsets`, one element per synset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    synsets = np.array(rows, dtype=[(name, "O") for name in fields])
    savemat(str(path), {"synsets": synsets}, do_compression=True)  # binary, as the devkit's


def _devkit_rows() -> list[tuple]:
    leaves = [(i, wnid, words, f"gloss of {wnid}", 0) for i, (wnid, words) in LEAVES.items()]
    internal = [(i, w, words, "", n) for i, (w, words, n) in INTERNAL.items()]
    return leaves + internal


def _official_tree(root: Path, train_per_class: int = 2) -> Path:
    """SRC/train/<wnid>/<wnid>_<n>.JPEG and a flat SRC/val/ILSVRC2012_val_<8 digits>.JPEG."""
    for label, wnid in enumerate(TRAIN_WNIDS):
        for n in range(train_per_class):
            _image(root / "train" / wnid / f"{wnid}_{n}.JPEG", label, n)
    for number, wnid in enumerate(VAL_WNIDS, 1):
        _image(root / "val" / f"{_val_name(number)}.JPEG", TRAIN_WNIDS.index(wnid), 100 + number)
    return root


def _add_devkit(root: Path, truth: list[int] = GROUND_TRUTH) -> Path:
    data = root / sources.DEVKIT / "data"
    _write_meta_mat(data / "meta.mat", _devkit_rows())
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in truth))
    return root


def _add_synset_labels(root: Path, wnids: list[str] = VAL_WNIDS) -> Path:
    (root / sources.SYNSET_LABELS).write_text("".join(f"{w}\n" for w in wnids))
    return root


def _val_items(found: sources.Discovery) -> dict[str, sources.SourceItem]:
    return {_stem(i.relpath): i for i in found.items if i.split == "validation"}


def _stem(relpath: str) -> str:
    return relpath.rsplit("/", 1)[-1].split(".", 1)[0]


def test_official_devkit_layout_labels_val_through_meta_mat(tmp_path: Path) -> None:
    root = _add_devkit(_official_tree(tmp_path / "src"))
    found = discover(str(root))

    assert found.layout == "ilsvrc2012"
    assert [(c.label, c.wnid) for c in found.classes] == list(enumerate(TRAIN_WNIDS))
    words = dict(LEAVES.values())
    assert [c.text for c in found.classes] == [words[w] for w in TRAIN_WNIDS]
    assert not {w for w, _, _ in INTERNAL.values()} & {c.wnid for c in found.classes}
    assert all(not i.problem for i in found.items)
    for item in found.items:
        if item.split == "train":
            assert item.wnid == item.relpath.split("/")[1]
    val = _val_items(found)
    assert len(val) == len(GROUND_TRUTH)
    for number, wnid in enumerate(VAL_WNIDS, 1):
        item = val[_val_name(number)]
        assert (item.wnid, item.label, item.text) == (wnid, TRAIN_WNIDS.index(wnid), words[wnid])
    # The trap the devkit sets: its ids are not the labels.
    assert [val[_val_name(n)].label for n in (1, 2, 3)] != [i - 1 for i in GROUND_TRUTH[:3]]
    data = root / sources.DEVKIT / "data"
    assert set(found.label_files) == {
        str(data / "meta.mat"),
        str(data / "ILSVRC2012_validation_ground_truth.txt"),
    }
    assert found.not_read == []


def test_synset_labels_variant_labels_val_by_line(tmp_path: Path) -> None:
    root = _add_synset_labels(_official_tree(tmp_path / "src"))
    (root / "synset_words.txt").write_text("".join(f"{w} {t}\n" for w, t in LEAVES.values()))
    found = discover(str(root))

    assert found.layout == "ilsvrc2012"
    assert [c.wnid for c in found.classes] == TRAIN_WNIDS
    assert found.classes[0].text == "goldfish"
    val = _val_items(found)
    assert [val[_val_name(n)].wnid for n in range(1, 7)] == VAL_WNIDS
    assert [val[_val_name(n)].label for n in range(1, 7)] == [
        TRAIN_WNIDS.index(w) for w in VAL_WNIDS
    ]
    assert str(root / sources.SYNSET_LABELS) in found.label_files


def test_flat_val_problems_name_the_label_file(tmp_path: Path) -> None:
    """Unlabelled, foreign-class and misplaced validation entries are items with a reason."""
    root = _add_synset_labels(_official_tree(tmp_path / "src"), [*VAL_WNIDS[:-1], "n09999999"])
    _image(root / "val" / "ILSVRC2012_val_7.JPEG")  # not named like a labelled image
    _image(root / "val" / "extra" / f"{_val_name(1)}.JPEG")  # in a sub-folder
    (root / "val" / ".DS_Store").write_bytes(b"\0")
    found = discover(str(root))
    problems = {i.relpath: i.problem for i in found.items if i.problem}
    labels = root / sources.SYNSET_LABELS
    assert problems == {
        f"val/{_val_name(6)}.JPEG": f"label 'n09999999' ({labels}) is not a training class",
        "val/ILSVRC2012_val_7.JPEG": f"no label in {labels}",
        f"val/extra/{_val_name(1)}.JPEG": (
            "in a sub-folder of a flat validation folder (labels are by name)"
        ),
        "val/.DS_Store": "hidden file or folder (name starts with '.')",
    }
    assert all(i.label is None for i in found.items if i.problem)


@pytest.mark.parametrize("change", ["one line more", "one line less", "one image more"])
def test_a_label_file_that_does_not_count_the_images_stops_the_run(
    tmp_path: Path, change: str
) -> None:
    """Line i labels image i: one line too many would shift every label after it, silently."""
    wnids = {"one line more": [VAL_WNIDS[0], *VAL_WNIDS], "one line less": VAL_WNIDS[:-1]}
    root = _add_synset_labels(_official_tree(tmp_path / "src"), wnids.get(change, VAL_WNIDS))
    if change == "one image more":
        _image(root / "val" / f"{_val_name(len(VAL_WNIDS) + 1)}.JPEG")
    lines = len(wnids.get(change, VAL_WNIDS))
    images = len(VAL_WNIDS) + (change == "one image more")
    labels = root / sources.SYNSET_LABELS
    with pytest.raises(ValueError, match=rf"{labels}: {lines} labels for {images} validation"):
        discover(str(root))


def test_the_devkit_ground_truth_is_counted_too_and_meta_mat_errors_name_it(
    tmp_path: Path,
) -> None:
    root = _add_devkit(_official_tree(tmp_path / "src"))
    truth = root / sources.DEVKIT / "data" / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text(truth.read_text() + truth.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match=rf"{truth}: {len(VAL_WNIDS) + 1} labels for"):
        discover(str(root))
    truth.write_text("999\n" * len(VAL_WNIDS))  # an id that meta.mat does not have
    meta = root / sources.DEVKIT / "data" / "meta.mat"
    with pytest.raises(ValueError, match=rf"not an ILSVRC2012_ID of a class in {meta}"):
        discover(str(root))
    _write_meta_mat(meta, [("one", "n01000003", "tench", "", 0), *_devkit_rows()[1:]])
    with pytest.raises(ValueError, match=rf"{meta}: synset 1 has a bad ILSVRC2012_ID"):
        discover(str(root))


def _voc_xml(boxes: list[tuple[float, float, float, float]], size: tuple[int, int] | None) -> str:
    objects = "".join(
        f"<object><name>n0</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for a, b, c, d in boxes
    )
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    return f"<annotation><filename>x</filename>{size_xml}{objects}</annotation>"


def test_voc_xml_boxes_are_attached_by_image_name(tmp_path: Path) -> None:
    root = _add_devkit(_official_tree(tmp_path / "src"))
    wnid = TRAIN_WNIDS[1]
    train_xml = root / "bbox" / "train" / wnid / f"{wnid}_0.xml"
    val_xml = root / "bbox" / "val" / f"{_val_name(2)}.xml"
    for path in (train_xml, val_xml):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_voc_xml([(1, 2, 10, 11)], (16, 12)))
    (root / "bbox" / "val" / "README").write_text("not a box file")
    found = discover(str(root))

    with_boxes = {i.relpath: i.box_file for i in found.items if i.box_file}
    assert with_boxes == {
        f"train/{wnid}/{wnid}_0.JPEG": str(train_xml),
        f"val/{_val_name(2)}.JPEG": str(val_xml),
    }
    assert sorted(e.path for e in found.box_files) == sorted([str(train_xml), str(val_xml)])
    assert all(i.boxes == [] for i in found.items)  # the worker reads the XML
    assert found.not_read == []


def test_read_voc_boxes_keeps_floats_several_objects_and_size(tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    xml.write_text(_voc_xml([(1.5, 2.25, 10, 11), (0, 0, 16, 12)], (16, 12)))
    assert annotations.read_voc_boxes(str(xml)) == ([[1.5, 2.25, 10, 11], [0, 0, 16, 12]], (16, 12))
    xml.write_text(_voc_xml([(1, 2, 3, 4)], None))
    assert annotations.read_voc_boxes(str(xml)) == ([[1, 2, 3, 4]], None)


def test_noisy_voc_boxes_are_returned_as_is_and_clamped_later(tmp_path: Path) -> None:
    """Outside the image and swapped corners come back untouched; relative_boxes repairs them."""
    xml = tmp_path / "noisy.xml"
    noisy = [(-5, 2, 30, 10), (12, 10, 4, 2), (20, 20, 30, 30)]
    xml.write_text(_voc_xml(noisy, (16, 12)))
    boxes, size = annotations.read_voc_boxes(str(xml))
    assert boxes == [list(map(float, b)) for b in noisy] and size == (16, 12)
    assert relative_boxes(boxes, *size) == [
        [0.0, 2 / 12, 1.0, 10 / 12],  # clamped to the image
        [4 / 16, 2 / 12, 12 / 16, 10 / 12],  # corners put in order
    ]  # the third lies wholly outside: nothing left after clamping


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<annotation><object><bndbox><xmin>a</xmin></bndbox>", "unreadable box file"),
        (_voc_xml([(1, 2, "x", 4)], None), "bad box coordinates"),
        ("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>", "bad box"),
    ],
)
def test_bad_voc_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    xml = tmp_path / "bad.xml"
    xml.write_text(text)
    with pytest.raises(ValueError, match=f"bad.xml: {message}"):
        annotations.read_voc_boxes(str(xml))


def test_kaggle_train_solution_gives_train_items_their_boxes(tmp_path: Path) -> None:
    root = tmp_path / "kaggle"
    write_demo_dataset(root, size=16)
    before = discover(str(root))
    train = sorted((i for i in before.items if i.split == "train"), key=lambda i: i.relpath)
    chosen = {
        _stem(train[0].relpath): [[1.0, 2.0, 9.5, 10.0]],
        _stem(train[-1].relpath): [
            [0.0, 0.0, 4.0, 4.0],
            [3.0, 3.0, 15.0, 15.0],
        ],
    }
    rows = []
    for stem, boxes in chosen.items():
        wnid = stem.split("_")[0]
        rows.append(f"{stem}," + " ".join(f"{wnid} {' '.join(map(str, b))}" for b in boxes))
    (root / "LOC_train_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows))
    found = discover(str(root))

    assert found.layout == "kaggle-imagenet"
    assert str(root / "LOC_train_solution.csv") in found.label_files
    assert found.fingerprint() != before.fingerprint()
    boxed = {_stem(i.relpath): i.boxes for i in found.items if i.split == "train" and i.boxes}
    assert boxed == chosen
    val = [i for i in found.items if i.split == "validation"]
    assert len(val) == 355 and all(i.label is not None and i.boxes for i in val)
    assert [i.label for i in val] == [i.label for i in before.items if i.split == "validation"]


def test_flat_val_without_a_label_file_names_the_folder_and_the_files(tmp_path: Path) -> None:
    root = _official_tree(tmp_path / "src")
    with pytest.raises(ValueError) as raised:
        discover(str(root))
    message = str(raised.value)
    for expected in (
        str(root / "val"),
        sources.SYNSET_LABELS,
        "meta.mat",
        "ILSVRC2012_validation_ground_truth.txt",
    ):
        assert expected in message


def test_meta_mat_without_ground_truth_is_no_label_file(tmp_path: Path) -> None:
    root = _add_devkit(_official_tree(tmp_path / "src"))
    (root / sources.DEVKIT / "data" / "ILSVRC2012_validation_ground_truth.txt").unlink()
    with pytest.raises(ValueError, match="no label file was found"):
        discover(str(root))


def test_val_and_validation_together_are_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _add_devkit(_official_tree(tmp_path / "src"))
    (root / "validation").mkdir()

    def no_work(*args: object) -> None:
        raise AssertionError("listed or read before the layout was checked")

    monkeypatch.setattr(sources, "walk", no_work)
    monkeypatch.setattr(annotations, "read_devkit_synsets", no_work)
    with pytest.raises(ValueError, match="both val/ and validation/"):
        discover(str(root))


def test_meta_mat_without_synsets_names_the_file(tmp_path: Path) -> None:
    root = _add_devkit(_official_tree(tmp_path / "src"))
    meta = root / sources.DEVKIT / "data" / "meta.mat"
    savemat(str(meta), {"other": np.zeros(3)})
    with pytest.raises(ValueError, match=f"{meta}: not an ILSVRC2012 devkit meta.mat"):
        discover(str(root))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an ILSVRC2012 devkit meta.mat"),  # scipy raises MatReadError, not ValueError
        (b"not a mat file" * 20, "not an ILSVRC2012 devkit meta.mat"),
        (None, "synsets lack the fields"),  # `synsets` saved as a plain number
    ],
)
def test_unreadable_meta_mat_names_the_file(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    meta = tmp_path / "meta.mat"
    if content is None:
        savemat(str(meta), {"synsets": 5.0})
    else:
        meta.write_bytes(content)
    with pytest.raises(ValueError, match=f"{meta}: {message}"):
        annotations.read_devkit_synsets(str(meta))


def test_meta_mat_missing_a_field_names_it(tmp_path: Path) -> None:
    meta = tmp_path / "meta.mat"
    _write_meta_mat(meta, [(1, "n01", "a", "g")], META_FIELDS[:4])
    with pytest.raises(ValueError, match=r"synsets lack the fields \['num_children'\]"):
        annotations.read_devkit_synsets(str(meta))


def test_meta_mat_with_one_synset_reads(tmp_path: Path) -> None:
    """loadmat squeezes a one-element struct array to a scalar record."""
    meta = tmp_path / "meta.mat"
    _write_meta_mat(meta, [(7, "n01", "one", "g", 0)])
    assert annotations.read_devkit_synsets(str(meta)) == {7: ("n01", "one")}


@pytest.mark.parametrize("bad_id", ["4", "99", "two"])  # internal synset, unknown, not a number
def test_ground_truth_id_not_a_class_in_meta_mat_names_the_file(
    tmp_path: Path, bad_id: str
) -> None:
    root = _add_devkit(_official_tree(tmp_path / "src"))
    truth = root / sources.DEVKIT / "data" / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text(f"2\n1\n{bad_id}\n")
    with pytest.raises(ValueError, match=f"{truth}:3: '{bad_id}' is not an ILSVRC2012_ID"):
        discover(str(root))


@pytest.mark.parametrize("line", ["n01000001 n01000002", "n01000001\tn01000002", ""])
def test_malformed_synset_labels_line_names_the_file(tmp_path: Path, line: str) -> None:
    root = _official_tree(tmp_path / "src")
    labels = root / sources.SYNSET_LABELS
    labels.write_text(f"n01000001\n{line}\nn01000003\n")
    with pytest.raises(ValueError, match=f"{labels}:2: expected one wnid"):
        discover(str(root))


def test_hidden_file_beside_val_class_folders_does_not_make_val_flat(tmp_path: Path) -> None:
    """A .DS_Store in val/ with a leftover label file once sent every val image to quarantine."""
    root = make_class_folders(tmp_path / "src", classes=2, train=1, val=2)
    (root / "val" / ".DS_Store").write_bytes(b"\0")
    _add_synset_labels(root, ["n00000001"])
    found = discover(str(root))
    assert found.layout == "class-folders"
    problems = {i.relpath: i.problem for i in found.items if i.problem}
    assert problems == {"val/.DS_Store": "hidden file or folder (name starts with '.')"}


# Every entry accounted for ---------------------------------------------------------------------


def _entries_on_disk(root: Path, splits: tuple[str, ...]) -> list[str]:
    """An independent count: every non-folder entry, links included and not followed."""
    found = []
    for split in splits:
        for folder, dirs, files in os.walk(root / split, followlinks=False):
            links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
            found += [os.path.relpath(os.path.join(folder, n), root) for n in files + links]
    return found


def _odd_class_folders(root: Path) -> Path:
    train, val = root / "train", root / "val"
    for label, wnid in enumerate(["n01", "n02"]):
        for n in range(2):
            _image(train / wnid / f"{wnid}_{n}.JPEG", label, n)
        _image(val / wnid / f"{wnid}_val.JPEG", label, 50)
    _image(train / "n01" / "nested" / "deeper" / "n01_9.JPEG")  # stored under n01
    os.symlink("../n01/n01_0.JPEG", train / "n02" / "link.JPEG")  # stored, as n02
    os.symlink("missing.JPEG", train / "n02" / "broken.JPEG")
    (train / "n02" / "sub").mkdir()
    os.symlink("../..", train / "n02" / "sub" / "loop")  # back to train/
    os.symlink("../..", train / "n01" / "up")  # the source, above train/: a loop as well
    os.symlink(".", train / "loop")  # a link loop beside the class folders: no class
    _image(train / "stray.JPEG")
    (train / "n01" / ".DS_Store").write_bytes(b"\0")
    _image(train / "n02" / ".thumbs" / "t.JPEG")
    _image(train / ".hidden_class" / "h.JPEG")
    _image(val / "n09" / "n09_val.JPEG")
    _image(val / "stray.JPEG")
    _image(root / "test" / "t.JPEG")
    (root / "README.txt").write_text("notes")
    return root


def test_every_entry_of_a_class_folder_source_is_an_item(tmp_path: Path) -> None:
    root = _odd_class_folders(tmp_path / "src")
    found = discover(str(root))

    assert [(c.label, c.wnid) for c in found.classes] == [(0, "n01"), (1, "n02")]
    on_disk = _entries_on_disk(root, ("train", "val"))
    assert len(found.items) == len(on_disk)
    assert sorted(i.relpath for i in found.items) == sorted(on_disk)

    stored = {i.relpath: i.wnid for i in found.items if not i.problem}
    assert stored == {
        "train/n01/n01_0.JPEG": "n01",
        "train/n01/n01_1.JPEG": "n01",
        "train/n01/nested/deeper/n01_9.JPEG": "n01",
        "train/n02/n02_0.JPEG": "n02",
        "train/n02/n02_1.JPEG": "n02",
        "train/n02/link.JPEG": "n02",
        "val/n01/n01_val.JPEG": "n01",
        "val/n02/n02_val.JPEG": "n02",
    }
    problems = {i.relpath: i.problem for i in found.items if i.problem}
    hidden = "hidden file or folder (name starts with '.')"
    assert problems == {
        "train/loop": f"symbolic link loop (back to {os.path.realpath(root / 'train')})",
        "train/n01/up": f"symbolic link loop (back to {os.path.realpath(root)})",
        "train/n02/sub/loop": f"symbolic link loop (back to {os.path.realpath(root / 'train')})",
        "train/n02/broken.JPEG": "broken symbolic link (points to missing.JPEG)",
        "train/stray.JPEG": "file outside any class folder",
        "train/n01/.DS_Store": hidden,
        "train/n02/.thumbs/t.JPEG": hidden,
        "train/.hidden_class/h.JPEG": hidden,
        "val/n09/n09_val.JPEG": "class folder 'n09' is not a training class",
        "val/stray.JPEG": "file outside any class folder",
    }
    assert all(i.label is None for i in found.items if i.problem)
    assert found.not_read == [  # folders first, then files
        f"{root / 'test'}: not part of this layout",
        f"{root / 'README.txt'}: not part of this layout",
    ]


def test_every_entry_of_a_flat_ilsvrc_source_is_an_item(tmp_path: Path) -> None:
    root = _add_devkit(_official_tree(tmp_path / "src"))
    _image(root / "val" / "extra" / f"{_val_name(1)}.JPEG")
    os.symlink(f"{_val_name(1)}.JPEG", root / "val" / "link.JPEG")  # readable, but no label
    os.symlink("nowhere", root / "val" / "dangling")
    (root / "val" / ".DS_Store").write_bytes(b"\0")
    _image(root / "train" / TRAIN_WNIDS[0] / "more" / "x.JPEG")
    found = discover(str(root))

    on_disk = _entries_on_disk(root, ("train", "val"))
    assert sorted(i.relpath for i in found.items) == sorted(on_disk)
    problems = {i.relpath for i in found.items if i.problem}
    assert problems == {
        f"val/extra/{_val_name(1)}.JPEG",
        "val/link.JPEG",
        "val/dangling",
        "val/.DS_Store",
    }


def test_two_files_with_one_name_in_a_flat_val_are_not_both_labelled(tmp_path: Path) -> None:
    root = _add_synset_labels(_official_tree(tmp_path / "src"))
    _image(root / "val" / f"{_val_name(2)}.png", 0, 7)
    found = discover(str(root))
    twins = [i for i in found.items if _stem(i.relpath) == _val_name(2)]
    assert len(twins) == 2
    assert [bool(i.problem) for i in twins] == [False, True]  # the .JPEG sorts first
    assert "same name as" in twins[1].problem


def test_fingerprint_does_not_change_when_the_source_moves(tmp_path: Path) -> None:
    root = _add_synset_labels(_official_tree(tmp_path / "a"))
    (root / "bbox" / "val").mkdir(parents=True)
    (root / "bbox" / "val" / f"{_val_name(1)}.xml").write_text(_voc_xml([(1, 2, 3, 4)], (40, 48)))
    before = discover(str(root)).fingerprint()
    moved = root.rename(tmp_path / "b")
    assert discover(str(moved)).fingerprint() == before


def test_val_with_class_folders_stays_sorted_by_class_despite_a_stray_file(tmp_path: Path) -> None:
    """A leftover script beside class folders, plus a label file, must not make val/ flat."""
    root = _add_synset_labels(make_class_folders(tmp_path / "src", classes=2, train=1, val=2))
    (root / "val" / "valprep.sh").write_text("#!/bin/sh\n")
    found = discover(str(root))
    assert found.layout == "class-folders"
    val = {i.relpath: i.problem for i in found.items if i.split == "validation"}
    assert val.pop("val/valprep.sh") == "file outside any class folder"
    assert val and not any(val.values())


def test_flat_val_with_only_a_hidden_folder_still_needs_a_label_file(tmp_path: Path) -> None:
    root = _official_tree(tmp_path / "src")
    _image(root / "val" / ".ipynb_checkpoints" / "x.JPEG")
    with pytest.raises(ValueError, match="no label file"):
        discover(str(root))


def test_a_split_folder_or_label_file_linked_from_outside_stops_the_run(tmp_path: Path) -> None:
    """Entries are quarantined one by one; a whole split folder or a label file that leads out
    of the source is refused before anything is read, unless outside links are followed."""
    elsewhere = _add_synset_labels(_official_tree(tmp_path / "full"))
    root = tmp_path / "src"
    root.mkdir()
    os.symlink(elsewhere / "train", root / "train")
    (root / "val").symlink_to(elsewhere / "val")
    os.symlink(elsewhere / sources.SYNSET_LABELS, root / sources.SYNSET_LABELS)
    with pytest.raises(ValueError, match="a link outside the source .*follow_outside_links"):
        discover(str(root))
    found = discover(str(root), follow_outside_links=True)  # a link farm, read on purpose
    assert not [i for i in found.items if i.problem]


def test_a_span_folder_linked_from_outside_spans_is_not_read(tmp_path: Path) -> None:
    """`spans/01 -> /elsewhere` would make ingestion read a folder outside the source: it is
    listed as not read, by name, unless outside links are followed; a span folder linked from
    inside `spans/` (a rename kept as a link) reads as usual."""
    from components import spans

    elsewhere = make_class_folders(tmp_path / "elsewhere")
    (elsewhere / spans.MARKER).write_text("")
    root = tmp_path / "src" / spans.SPANS
    root.mkdir(parents=True)
    own = make_class_folders(root / "02")
    (own / spans.MARKER).write_text("")
    os.symlink(elsewhere, root / "01")
    os.symlink("02", root / "03")
    complete, not_read = spans.source_spans(str(tmp_path / "src"))
    assert [name for name, _ in complete] == ["02", "03"]
    assert not_read == [
        f"{root / '01'}: a link out of spans/ (points to {elsewhere}); not read (set "
        "follow_outside_links to read it)"
    ]
    followed, _ = spans.source_spans(str(tmp_path / "src"), follow_outside=True)
    assert [name for name, _ in followed] == ["01", "02", "03"]
