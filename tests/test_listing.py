"""listing.walk and children on local trees: order, sizes, relative paths, and odd entries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from components.ingest import listing
from components.ingest.listing import Entry, children, walk


def _tree(root: Path) -> Path:
    for rel, data in {"a/x": b"12345", "a.b": b"1", "b/c/d": b"", "z": b"zz"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_walk_lists_files_depth_first_in_name_order(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    found = list(walk(str(root)))
    # Names are sorted within each folder, so `a/x` (inside `a`) comes before `a.b`.
    assert [(e.rel, e.size, e.problem) for e in found] == [
        ("a/x", 5, ""),
        ("a.b", 1, ""),
        ("b/c/d", 0, ""),
        ("z", 2, ""),
    ]
    assert [e.path for e in found] == [str(root / e.rel) for e in found]
    assert found[2].parts == ["b", "c", "d"]


def test_walk_of_an_empty_folder_yields_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert list(walk(str(tmp_path / "empty"))) == []


def test_walk_reports_links_and_special_files(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    os.symlink("a/x", root / "to_file")  # read through: the target's size, the link's path
    os.symlink("b", root / "to_dir")  # followed like a folder
    os.symlink("gone", root / "broken")
    os.symlink("..", root / "b" / "loop")  # back to the root
    os.symlink("..", root / "up")  # to the folder holding the root: would loop after a detour
    os.mkfifo(root / "fifo")
    found = {e.rel: e for e in walk(str(root))}

    assert found["to_file"] == Entry(str(root / "to_file"), "to_file", 5)
    assert found["to_dir/c/d"] == Entry(str(root / "to_dir" / "c" / "d"), "to_dir/c/d", 0)
    assert found["broken"].problem == "broken symbolic link (points to gone)"
    assert found["b/loop"].problem == f"symbolic link loop (back to {os.path.realpath(root)})"
    assert found["up"].problem == f"symbolic link loop (back to {os.path.realpath(tmp_path)})"
    assert found["fifo"].problem == "not a regular file (socket, FIFO or device)"
    assert all(found[r].size == 0 for r in ("broken", "b/loop", "up", "fifo"))
    assert not any(rel.startswith(("up/", "b/loop/")) for rel in found)


def test_walk_follows_a_link_that_leaves_the_tree_without_looping(tmp_path: Path) -> None:
    outside = _tree(tmp_path / "elsewhere")
    root = tmp_path / "t"
    root.mkdir()
    os.symlink(outside, root / "shared")
    assert [e.rel for e in walk(str(root))] == [
        "shared/a/x",
        "shared/a.b",
        "shared/b/c/d",
        "shared/z",
    ]


@pytest.mark.parametrize(
    ("rel", "hidden"),
    [
        ("n01/img.JPEG", False),
        ("n01/.DS_Store", True),
        ("n01/._img.JPEG", True),  # macOS AppleDouble companion
        (".ipynb_checkpoints/img.JPEG", True),
        ("n01/.cache/deep/img.JPEG", True),
        ("n01/img.v2.JPEG", False),
    ],
)
def test_entry_hidden(rel: str, hidden: bool) -> None:
    assert Entry(f"/src/{rel}", rel, 1).hidden is hidden


def test_children_splits_folders_from_other_entries(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    os.symlink("b", root / "to_dir")
    os.symlink("gone", root / "broken")
    os.symlink(".", root / "self")  # a loop is no folder: under train/ it would be a class
    os.symlink("..", root / "parent")
    assert children(str(root)) == (["a", "b", "to_dir"], ["a.b", "broken", "parent", "self", "z"])


def test_is_dir_and_is_remote(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    assert listing.is_dir(str(root / "a")) and not listing.is_dir(str(root / "z"))
    assert listing.is_remote("gs://bucket/x") and not listing.is_remote(str(root))


def test_unreadable_sub_folder_is_an_error_not_a_silent_gap(tmp_path: Path) -> None:
    """Tests run as root here, so permissions are simulated: the walk must not skip the folder."""
    root = _tree(tmp_path / "t")
    real_scandir = os.scandir

    def scandir(path: str) -> Any:  # what os.scandir returns
        if str(path).endswith("/b"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    with (
        mock.patch.object(listing.os, "scandir", scandir),
        pytest.raises(ValueError, match="cannot list this folder"),
    ):
        list(walk(str(root)))
