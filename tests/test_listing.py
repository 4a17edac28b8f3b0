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
    target = (root / "a" / "x").stat()

    assert found["to_file"] == Entry(
        str(root / "to_file"), "to_file", 5, mtime_ns=target.st_mtime_ns, inode=target.st_ino,
        link=True,
    )  # fmt: skip
    assert found["to_dir/c/d"].size == 0 and not found["to_dir/c/d"].problem
    assert found["broken"].problem == "broken symbolic link (points to gone)"
    assert found["b/loop"].problem == f"symbolic link loop (back to {os.path.realpath(root)})"
    # `up` leads outside the walked folder: quarantined as such, unless outside links are
    # followed, where it is a loop all the same.
    assert found["up"].problem.startswith("link outside the source")
    followed = {e.rel: e for e in walk(str(root), follow_outside=True)}
    assert followed["up"].problem == f"symbolic link loop (back to {os.path.realpath(tmp_path)})"
    assert found["fifo"].problem == "not a regular file (socket, FIFO or device)"
    assert all(found[r].size == 0 for r in ("broken", "b/loop", "up", "fifo"))
    assert not any(rel.startswith(("up/", "b/loop/")) for rel in found)


def test_walk_follows_a_link_that_leaves_the_tree_without_looping(tmp_path: Path) -> None:
    outside = _tree(tmp_path / "elsewhere")
    root = tmp_path / "t"
    root.mkdir()
    os.symlink(outside, root / "shared")
    assert [e.rel for e in walk(str(root), follow_outside=True)] == [
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


def test_links_outside_the_root_are_quarantined_and_never_read(tmp_path: Path) -> None:
    """A file link and a folder link that leave the source: one entry each, nothing opened."""
    private = _tree(tmp_path / "private")
    root = _tree(tmp_path / "data")
    os.symlink(private / "a" / "x", root / "a" / "leak.jpg")
    os.symlink(private / "b", root / "a" / "outside_folder")
    os.symlink("x", root / "a" / "inside.jpg")  # a link within the root stays readable
    opened = []
    real_open = open

    def watching(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    with mock.patch("builtins.open", watching):
        found = {e.rel: e for e in walk(str(root))}
    leak, folder = found["a/leak.jpg"], found["a/outside_folder"]
    assert leak.problem == (
        f"link outside the source (points to {os.path.realpath(private / 'a' / 'x')}); "
        "set follow_outside_links to read it"
    )
    assert folder.problem.startswith("link outside the source") and leak.size == 0
    assert not any(rel.startswith("a/outside_folder/") for rel in found)  # not descended
    assert found["a/inside.jpg"].size == 5 and not found["a/inside.jpg"].problem
    assert not [p for p in opened if str(tmp_path / "private") in p]
    # `within` widens the root: a link out of a split folder into its source is inside
    split = root / "a"
    entries = {e.rel: e for e in walk(str(split), within=str(tmp_path))}
    assert not entries["leak.jpg"].problem


def test_names_that_are_not_utf8_are_quarantined_with_escaped_names(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    bad = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: what Python holds as a surrogate
    (root / "a" / bad).write_bytes(b"xx")
    (root / os.fsdecode(b"dir\xff")).mkdir()
    (root / os.fsdecode(b"dir\xff") / "inner.jpg").write_bytes(b"x")
    found = {e.rel: e for e in walk(str(root))}
    assert found["a/caf\\xe9.jpg"].problem == "file name is not valid UTF-8"
    assert found["dir\\xff/inner.jpg"].problem == "file name is not valid UTF-8"
    for entry in found.values():  # every name can be written as UTF-8 (JSON, logs, records)
        entry.path.encode("utf-8")
