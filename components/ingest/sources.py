"""Finding the images of a source dataset and their labels, for each supported layout (SPEC §4).

`discover(source)` runs on the driver: it recognises the layout, lists every file, and returns one
`SourceItem` per input file (split, class, boxes). Listing goes through Beam's FileSystems so that
`gs://` and `s3://` sources work the same as local folders.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import asdict, dataclass, field

from apache_beam.io.filesystems import FileSystems

TRAIN, VALIDATION = "train", "validation"
SPLITS = (TRAIN, VALIDATION)
KAGGLE_ROOT = ("ILSVRC", "Data", "CLS-LOC")


@dataclass(frozen=True)
class ClassInfo:
    label: int  # 0-based position of `wnid` in sorted order
    wnid: str
    text: str


@dataclass
class SourceItem:
    path: str
    relpath: str
    split: str
    size: int
    label: int | None  # None: the file could not be labelled; it is quarantined with `problem`
    wnid: str = ""
    text: str = ""
    boxes: list[list[float]] = field(default_factory=list)  # pixel [xmin, ymin, xmax, ymax]
    problem: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Discovery:
    layout: str
    classes: list[ClassInfo]
    items: list[SourceItem]
    label_files: list[str]  # files whose content defines labels; part of the fingerprint

    def fingerprint(self) -> str:
        """Identity of the inputs: every file's split, path and size, and the label files' bytes."""
        digest = hashlib.sha256(self.layout.encode())
        for item in sorted(self.items, key=lambda i: (i.split, i.relpath)):
            digest.update(f"{item.split}\0{item.relpath}\0{item.size}\n".encode())
        for path in sorted(self.label_files):
            with FileSystems.open(path) as handle:
                digest.update(handle.read())
        return digest.hexdigest()


def _join(*parts: str) -> str:
    return FileSystems.join(*parts)


def _exists(path: str) -> bool:
    return FileSystems.exists(path)


def is_remote(path: str) -> bool:
    return "://" in path


def _list_dir(path: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(sub-directory names, [(file path, size)]) directly under `path`, sorted."""
    if not is_remote(path):
        dirs, files = [], []
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir():
                    dirs.append(entry.name)
                elif entry.is_file():
                    files.append((entry.path, entry.stat().st_size))
        return sorted(dirs), sorted(files)
    prefix = path.rstrip("/") + "/"
    dirs, files = set(), []
    for meta in FileSystems.match([prefix + "**"])[0].metadata_list:
        rest = meta.path[len(prefix) :]
        if "/" in rest:
            dirs.add(rest.split("/", 1)[0])
        else:
            files.append((meta.path, meta.size_in_bytes))
    return sorted(dirs), sorted(files)


def _read_text(path: str) -> str:
    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8-sig")


def _relpath(path: str, root: str) -> str:
    return path[len(root.rstrip("/")) + 1 :]


def read_synset_mapping(path: str) -> dict[str, str]:
    """`<wnid> <names>` per line (LOC_synset_mapping.txt, synset_words.txt) -> {wnid: names}."""
    mapping = {}
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, text = line.strip().partition(" ")
        if not wnid:
            raise ValueError(f"{path}:{number}: expected '<wnid> <names>', got {line!r}")
        mapping[wnid] = text.strip() or wnid
    return mapping


def read_kaggle_val_solution(path: str) -> dict[str, tuple[str, list[list[float]]]]:
    """LOC_val_solution.csv -> {ImageId: (wnid, pixel boxes)}; the class is the first token."""
    rows = {}
    reader = csv.reader(io.StringIO(_read_text(path)))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
        raise ValueError(f"{path}: expected the header 'ImageId,PredictionString', got {header}")
    for number, row in enumerate(reader, 2):
        if not row:
            continue
        if len(row) != 2 or not row[1].split():
            raise ValueError(f"{path}:{number}: expected 'ImageId,<wnid> xmin ymin xmax ymax ...'")
        tokens = row[1].split()
        boxes = []
        for start in range(0, len(tokens) - 4, 5):
            try:
                boxes.append([float(v) for v in tokens[start + 1 : start + 5]])
            except ValueError as err:
                raise ValueError(f"{path}:{number}: bad box coordinates: {err}") from err
        rows[row[0].strip()] = (tokens[0], boxes)
    return rows


def _class_table(wnids: list[str], names: dict[str, str]) -> list[ClassInfo]:
    return [ClassInfo(i, w, names.get(w, w)) for i, w in enumerate(sorted(wnids))]


def _folder_items(split_dir: str, split: str, root: str, classes: dict[str, ClassInfo]):
    dirs, stray = _list_dir(split_dir)
    for path, size in stray:
        yield SourceItem(
            path, _relpath(path, root), split, size, None, problem="file outside any class folder"
        )
    for name in dirs:
        info = classes.get(name)
        for path, size in _list_dir(_join(split_dir, name))[1]:
            if info is None:
                yield SourceItem(
                    path,
                    _relpath(path, root),
                    split,
                    size,
                    None,
                    wnid=name,
                    problem=f"class folder '{name}' is not a training class",
                )
            else:
                yield SourceItem(
                    path, _relpath(path, root), split, size, info.label, info.wnid, info.text
                )


def _discover_kaggle(source: str) -> Discovery:
    base = _join(source, *KAGGLE_ROOT)
    mapping_path = _join(source, "LOC_synset_mapping.txt")
    solution_path = _join(source, "LOC_val_solution.csv")
    for required in (mapping_path, solution_path, _join(base, "train"), _join(base, "val")):
        if not _exists(required):
            raise ValueError(f"Kaggle ImageNet layout under {source}: missing {required}")
    names = read_synset_mapping(mapping_path)
    classes = _class_table(list(names), names)
    by_wnid = {c.wnid: c for c in classes}
    items = list(_folder_items(_join(base, "train"), TRAIN, source, by_wnid))
    solution = read_kaggle_val_solution(solution_path)
    for path, size in _list_dir(_join(base, "val"))[1]:
        image_id = os.path.splitext(path.rsplit("/", 1)[-1])[0]
        rel = _relpath(path, source)
        if image_id not in solution:
            items.append(
                SourceItem(
                    path, rel, VALIDATION, size, None, problem="no label in LOC_val_solution.csv"
                )
            )
            continue
        wnid, boxes = solution[image_id]
        info = by_wnid.get(wnid)
        if info is None:
            items.append(
                SourceItem(
                    path,
                    rel,
                    VALIDATION,
                    size,
                    None,
                    wnid=wnid,
                    problem=f"label '{wnid}' is not in LOC_synset_mapping.txt",
                )
            )
            continue
        items.append(SourceItem(path, rel, VALIDATION, size, info.label, wnid, info.text, boxes))
    return Discovery("kaggle-imagenet", classes, items, [mapping_path, solution_path])


def _discover_class_folders(source: str) -> Discovery:
    train_dir = _join(source, "train")
    val_dirs = [_join(source, name) for name in ("val", "validation")]
    val_dir = next((d for d in val_dirs if _exists(d)), None)
    if val_dir is None:
        raise ValueError(f"{source}: found train/ but no val/ or validation/ folder")
    wnids, _ = _list_dir(train_dir)
    if not wnids:
        raise ValueError(f"{train_dir}: no class folders")
    val_classes, val_files = _list_dir(val_dir)
    if val_files and not val_classes:
        raise ValueError(
            f"{val_dir}: validation images are flat, without class folders; this layout needs a "
            "label file (ILSVRC2012 label files are not read yet: sort them into class folders)"
        )
    label_files, names = [], {}
    for candidate in ("LOC_synset_mapping.txt", "synset_words.txt"):
        path = _join(source, candidate)
        if _exists(path):
            names = read_synset_mapping(path)
            label_files.append(path)
            break
    classes = _class_table(wnids, names)
    by_wnid = {c.wnid: c for c in classes}
    items = list(_folder_items(train_dir, TRAIN, source, by_wnid))
    items += _folder_items(val_dir, VALIDATION, source, by_wnid)
    return Discovery("class-folders", classes, items, label_files)


def discover(source: str) -> Discovery:
    """Recognises the layout of `source` and lists every input file with its label."""
    source = source.rstrip("/") if is_remote(source) else os.path.abspath(source)
    if not _exists(source):
        raise ValueError(f"source {source} does not exist")
    if _exists(_join(source, *KAGGLE_ROOT)):
        found = _discover_kaggle(source)
    elif _exists(_join(source, "train")):
        found = _discover_class_folders(source)
    else:
        raise ValueError(
            f"{source}: unrecognised layout; expected train/<class>/ with val/<class>/, or the "
            f"Kaggle ImageNet release ({'/'.join(KAGGLE_ROOT)}/ with LOC_*.csv/txt)"
        )
    if not found.items:
        raise ValueError(f"{source}: no files found")
    return found
