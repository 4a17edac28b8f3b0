"""Layout discovery: class folders, the Kaggle ImageNet release, and clear errors otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.demo_data import write_demo_dataset
from components.ingest.annotations import read_kaggle_solution
from components.ingest.sources import discover


def test_class_folders(class_folders: Path) -> None:
    found = discover(str(class_folders))
    assert found.layout == "class-folders"
    assert [c.wnid for c in found.classes] == ["n00000000", "n00000001", "n00000002"]
    assert [c.label for c in found.classes] == [0, 1, 2]
    splits = [i.split for i in found.items]
    assert splits.count("train") == 24 and splits.count("validation") == 9
    assert all(i.label is not None for i in found.items)


def test_validation_folder_may_be_named_validation(tmp_path: Path) -> None:
    from tests.conftest import make_class_folders

    root = make_class_folders(tmp_path / "s", classes=2, train=1, val=1)
    (root / "val").rename(root / "validation")
    assert discover(str(root)).layout == "class-folders"


def test_kaggle_layout_labels_val_from_the_solution_csv(tmp_path: Path) -> None:
    write_demo_dataset(tmp_path / "kaggle", size=32)
    found = discover(str(tmp_path / "kaggle"))
    assert found.layout == "kaggle-imagenet"
    assert len(found.classes) == 10 and found.classes[3].text == "three, digit 3"
    val = [i for i in found.items if i.split == "validation"]
    assert len(val) == 355 and all(i.label is not None and i.boxes for i in val)
    first = next(i for i in val if i.relpath.endswith("ILSVRC2012_val_00000001.JPEG"))
    assert first.wnid == "n00000005" and first.label == 5


def test_kaggle_solution_parses_several_boxes(tmp_path: Path) -> None:
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\nimg1,n01 1 2 3 4 n01 5 6 7 8 \n")
    assert read_kaggle_solution(str(csv)) == {"img1": ("n01", [[1, 2, 3, 4], [5, 6, 7, 8]])}


def test_kaggle_solution_with_bad_header_names_the_file(tmp_path: Path) -> None:
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("id,label\n")
    with pytest.raises(ValueError, match="LOC_val_solution.csv"):
        read_kaggle_solution(str(csv))


def test_unlabelled_files_are_items_with_a_problem(class_folders: Path) -> None:
    (class_folders / "train" / "stray.JPEG").write_bytes(b"x")
    (class_folders / "val" / "n09999999").mkdir()
    (class_folders / "val" / "n09999999" / "a.JPEG").write_bytes(b"x")
    problems = {i.relpath: i.problem for i in discover(str(class_folders)).items if i.problem}
    assert problems == {
        "train/stray.JPEG": "file outside any class folder",
        "val/n09999999/a.JPEG": "class folder 'n09999999' is not a training class",
    }


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: None, "does not exist"),
        (lambda r: r.mkdir(), "unrecognised layout"),
        (lambda r: (r / "train" / "a").mkdir(parents=True), "no val/ or validation/"),
    ],
)
def test_bad_sources_get_clear_errors(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "src"
    setup(root)
    with pytest.raises(ValueError, match=message):
        discover(str(root))


def test_flat_validation_without_labels_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    with pytest.raises(ValueError, match="flat"):
        discover(str(tmp_path))


def test_kaggle_val_image_without_a_solution_row_is_quarantined(tmp_path: Path) -> None:
    write_demo_dataset(tmp_path / "kaggle", size=8)
    extra = (
        tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC" / "val" / "ILSVRC2012_val_09999999.JPEG"
    )
    extra.write_bytes(b"x")
    found = discover(str(tmp_path / "kaggle"))
    item = next(i for i in found.items if i.relpath.endswith("ILSVRC2012_val_09999999.JPEG"))
    assert item.label is None
    assert item.problem == f"no label in {tmp_path / 'kaggle' / 'LOC_val_solution.csv'}"


def test_kaggle_layout_missing_its_solution_names_the_file(tmp_path: Path) -> None:
    write_demo_dataset(tmp_path / "kaggle", size=8)
    (tmp_path / "kaggle" / "LOC_val_solution.csv").unlink()
    with pytest.raises(ValueError, match="missing .*LOC_val_solution.csv"):
        discover(str(tmp_path / "kaggle"))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("img1,n01 1 2 3", "groups of"),
        ("img1,n01 1 2 x 4", "bad box coordinates"),
        ("img1,", "expected 'ImageId,<wnid>"),
    ],
)
def test_kaggle_solution_bad_rows_name_the_line(tmp_path: Path, row: str, message: str) -> None:
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text(f"ImageId,PredictionString\n{row}\n")
    with pytest.raises(ValueError, match=f"LOC_val_solution.csv:2: .*{re.escape(message)}"):
        read_kaggle_solution(str(csv))


def test_an_item_staged_is_what_asdict_gives_and_shares_no_list_with_the_item() -> None:
    from dataclasses import asdict

    from components.ingest.sources import SourceItem

    item = SourceItem("/d/train/a/x.JPEG", "train/a/x.JPEG", "train", 10, 3, "a", "A",
                      boxes=[[1.0, 2.0, 3.0, 4.0]], box_size=[5, 6], inode=7)  # fmt: skip
    staged = item.to_json()
    assert staged == asdict(item)
    staged["boxes"][0][0] = 99.0
    staged["box_size"][0] = 99
    assert item.boxes == [[1.0, 2.0, 3.0, 4.0]] and item.box_size == [5, 6]
