"""Finding the images of a source dataset, their labels and boxes, for each supported layout.

`discover(source)` runs on the driver, recognises the layout by what is on disk, and returns one
`SourceItem` for every entry under the split folders: a labelled image, or an entry with the
`problem` it is quarantined for (hidden, a broken link, outside any class folder, unlabelled...).
Nothing under a split folder is skipped, so `written + quarantined == entries` checks the disk.

Layouts:
- class folders: `train/<class>/**`, `val/<class>/**` or `validation/<class>/**`; files in
  sub-folders of a class folder belong to that class;
- ILSVRC2012 as extracted from the official archives: `train/<wnid>/*.JPEG`, flat
  `val/ILSVRC2012_val_<8 digits>.JPEG` labelled by `imagenet_2012_validation_synset_labels.txt`
  or the devkit (`ILSVRC2012_devkit_t12/data/{meta.mat, ILSVRC2012_validation_ground_truth.txt}`),
  optional VOC XML boxes under `bbox/train/<wnid>/` and `bbox/val/`;
- the Kaggle release: `ILSVRC/Data/CLS-LOC/{train,val}`, `LOC_synset_mapping.txt`,
  `LOC_val_solution.csv`, optional `LOC_train_solution.csv` (train boxes).
Class labels are the positions of the class ids in sorted order, whatever order a label file
uses. Listing goes through Beam's FileSystems, so gs:// and s3:// sources work too.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from apache_beam.io.filesystems import FileSystems

from components.dataset import SPLITS, TRAIN, VALIDATION, ClassInfo, exists, join, read_bytes
from components.ingest import annotations, tfrecords
from components.ingest.listing import (
    Entry,
    children,
    escaped,
    is_dir,
    is_remote,
    is_valid_name,
    walk,
)

KAGGLE_ROOT = ("ILSVRC", "Data", "CLS-LOC")
HOST = socket.gethostname()
DEVKIT = "ILSVRC2012_devkit_t12"
SYNSET_LABELS = "imagenet_2012_validation_synset_labels.txt"
VAL_NAME = re.compile(r"ILSVRC2012_val_\d{8}")
NAME_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")

__all__ = ["SPLITS", "ClassInfo", "Discovery", "SourceItem", "discover", "is_remote"]


@dataclass
class SourceItem:
    path: str
    relpath: str  # relative to the source root; decides the shard and the order in it
    split: str
    size: int
    label: int | None  # None: the entry is quarantined with `problem`
    wnid: str = ""
    text: str = ""
    boxes: list[list[float]] = field(default_factory=list)  # pixel [xmin, ymin, xmax, ymax]
    box_size: list[int] | None = None  # (width, height) the boxes refer to; None: the image's
    box_file: str = ""  # a VOC XML file with the boxes, read by the worker
    problem: str = ""
    mtime_ns: int = 0
    inode: int = 0  # local files: what the listing saw, compared again when the file is opened
    link: bool = False
    host: str = ""  # the machine that listed it (an inode means something only there)
    # One record of a TFRecord source (components/ingest/tfrecords.py): its index in `path`,
    # where its bytes start and how many; its label (-1 until then) is read from the record.
    record: int = -1
    offset: int = 0
    record_length: int = 0
    record_format: str = ""

    def to_json(self) -> dict:
        # What dataclasses.asdict gives, without its deep copy of every field: staging
        # ImageNet's 1.33 million items took 44 s that way, most of it copying strings.
        item = dict(self.__dict__)
        item["boxes"] = [list(box) for box in self.boxes]
        if self.box_size is not None:
            item["box_size"] = list(self.box_size)
        return item


@dataclass
class Discovery:
    layout: str
    classes: list[ClassInfo]
    items: list[SourceItem]
    label_files: list[str]  # files whose content defines labels or boxes: their bytes count
    box_files: list[Entry] = field(default_factory=list)  # per-image XML: listed, not read here
    not_read: list[str] = field(default_factory=list)  # top-level entries the layout ignores

    def fingerprint(self, content: bool = False) -> str:
        """Identity of the inputs: every entry's split, path, size and modification time (or,
        with `content`, a hash of its bytes), and the label files' bytes.

        Size and time see a file replaced, edited or touched (a same-size replacement too, as
        its time changes) at no cost beyond the listing; they miss only a change that restores
        the old time (`touch -d`, some copy tools) and they see a copy without `-p` as a change.
        The content hash sees exactly the bytes, at the price of reading every file.
        """
        digest = hashlib.sha256(self.layout.encode())
        contents: dict[str, str] = {}  # a TFRecord file holds many entries: hashed once
        for item in sorted(self.items, key=lambda i: (i.split, i.relpath)):
            if content and not item.problem and item.path not in contents:
                contents[item.path] = _content(item.path)
            what = contents[item.path] if content and not item.problem else item.mtime_ns
            digest.update(f"{item.split}\0{item.relpath}\0{item.size}\0{what}\n".encode())
        for entry in self.box_files:
            what = _content(entry.path) if content else entry.mtime_ns
            digest.update(f"box\0{entry.rel}\0{entry.size}\0{what}\n".encode())
        for path in sorted(self.label_files):
            digest.update(read_bytes(path))  # meta.mat is binary
        return digest.hexdigest()


def _content(path: str) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    try:
        with FileSystems.open(path) as handle:
            while piece := handle.read(2**20):
                digest.update(piece)
    except OSError as err:  # quarantined later as unreadable; its identity is that it is
        return f"unreadable:{err}"
    return digest.hexdigest()


def _stem(name: str) -> str:
    return os.path.splitext(name.rsplit("/", 1)[-1])[0]


def _class_table(wnids: list[str], names: dict[str, str]) -> list[ClassInfo]:
    return [ClassInfo(i, w, names.get(w, w)) for i, w in enumerate(sorted(wnids))]


def _walk_split(
    split_dir: str, source: str, split: str, follow: bool
) -> Iterator[tuple[Entry, SourceItem]]:
    """Every entry under a split folder as an item; hidden and unreadable ones get a problem
    (links that leave the source among them, unless `follow`)."""
    for entry in walk(split_dir, follow, within=source):
        item = SourceItem(entry.path, f"{split_dir[len(source) + 1 :]}/{entry.rel}", split,
                          entry.size, None, problem=entry.problem,
                          mtime_ns=entry.mtime_ns, inode=entry.inode,
                          link=entry.link, host=HOST)  # fmt: skip
        if not item.problem and entry.hidden:
            item.problem = "hidden file or folder (name starts with '.')"
        yield entry, item


def _label(item: SourceItem, info: ClassInfo) -> None:
    item.label, item.wnid, item.text = info.label, info.wnid, info.text


BoxLookup = Callable[[SourceItem], None]


def _class_folder_items(
    split_dir: str,
    source: str,
    split: str,
    classes: dict[str, ClassInfo],
    boxes: BoxLookup,
    follow: bool,
) -> Iterator[SourceItem]:
    for entry, item in _walk_split(split_dir, source, split, follow):
        if not item.problem:
            if len(entry.parts) == 1:
                item.problem = "file outside any class folder"
            elif entry.parts[0] not in classes:
                item.wnid = entry.parts[0]
                item.problem = f"class folder '{entry.parts[0]}' is not a training class"
            else:
                _label(item, classes[entry.parts[0]])
                boxes(item)
        yield item


def _flat_items(
    split_dir: str,
    source: str,
    split: str,
    classes: dict[str, ClassInfo],
    wnid_of: dict[str, str],
    label_file: str,
    boxes: BoxLookup,
    follow: bool,
) -> Iterator[SourceItem]:
    """A flat folder labelled by file name (ILSVRC2012 / Kaggle validation)."""
    seen: dict[str, str] = {}  # name stem -> the file that took its label
    for entry, item in _walk_split(split_dir, source, split, follow):
        if not item.problem:
            stem = _stem(entry.rel)
            wnid = wnid_of.get(stem)
            if len(entry.parts) > 1:
                item.problem = "in a sub-folder of a flat validation folder (labels are by name)"
            elif stem in seen:
                item.problem = f"same name as {seen[stem]}, which has the label of '{stem}'"
            elif wnid is None:
                item.problem = f"no label in {label_file}"
            elif wnid not in classes:
                item.wnid = wnid
                item.problem = f"label '{wnid}' ({label_file}) is not a training class"
            else:
                _label(item, classes[wnid])
                boxes(item)
            seen.setdefault(stem, entry.rel)
        yield item


def _box_files(folder: str, source: str, follow: bool) -> tuple[dict[str, Entry], list[Entry]]:
    """VOC XML files anywhere under `folder`, by image stem (links out of the source are not
    box files unless `follow`)."""
    if not is_dir(folder):
        return {}, []
    found = [
        e
        for e in walk(folder, follow, within=source)
        if not e.problem and e.rel.lower().endswith(".xml")
    ]
    # fingerprinted by their place under the source, so that a moved source is still the same
    where = folder.rstrip("/").rsplit("/", 2)
    listed = [
        Entry(e.path, f"{where[-2]}/{where[-1]}/{e.rel}", e.size, mtime_ns=e.mtime_ns)
        for e in found
    ]
    return {_stem(e.rel): e for e in found}, listed


def _xml_boxes(index: dict[str, Entry]) -> BoxLookup:
    def lookup(item: SourceItem) -> None:
        entry = index.get(_stem(item.relpath))
        if entry is not None:
            item.box_file = entry.path

    return lookup


def _csv_boxes(rows: dict[str, tuple[str, list]]) -> BoxLookup:
    def lookup(item: SourceItem) -> None:
        row = rows.get(_stem(item.relpath))
        if row is not None:
            item.boxes = row[1]

    return lookup


def _not_read(folder: str, used: set[str]) -> list[str]:
    dirs, others = children(folder)
    names = [n for n in dirs + others if n not in used]
    return [f"{escaped(join(folder, n))}: not part of this layout" for n in names]


def _validation_dir(source: str) -> str:
    found = [join(source, n) for n in ("val", "validation") if is_dir(join(source, n))]
    if len(found) == 2:
        raise ValueError(
            f"{source}: both val/ and validation/ exist; keep the one that holds the validation "
            "images and move the other out of the source"
        )
    if not found:
        raise ValueError(f"{source}: found train/ but no val/ or validation/ folder")
    return found[0]


def _names(source: str) -> tuple[dict[str, str], list[str]]:
    for candidate in NAME_FILES:
        path = join(source, candidate)
        if exists(path):
            return annotations.read_synset_mapping(path), [path]
    return {}, []


def _flat_val_labels(
    source: str, images: list[str]
) -> tuple[dict[str, str], dict[str, str], list[str], str] | None:
    """(stem -> wnid, wnid -> words, label files, the file named in errors), or None.

    These files label images by line number, so one line too many or too few shifts every label
    after it: a count that differs from the `images` named like ILSVRC2012 validation images
    stops the run here, before any work.
    """
    synset_labels = join(source, SYNSET_LABELS)
    meta = join(source, DEVKIT, "data", "meta.mat")
    truth = join(source, DEVKIT, "data", "ILSVRC2012_validation_ground_truth.txt")
    if exists(meta) and exists(truth):
        synsets = annotations.read_devkit_synsets(meta)
        wnids = annotations.read_devkit_ground_truth(truth, synsets, meta)
        words = dict(synsets.values())
        files, named = [meta, truth], truth
    elif exists(synset_labels):
        wnids, words = annotations.read_wnid_lines(synset_labels), {}
        files, named = [synset_labels], synset_labels
    else:
        return None
    labelled = len({_stem(name) for name in images if VAL_NAME.fullmatch(_stem(name))})
    if labelled != len(wnids):
        raise ValueError(
            f"{named}: {len(wnids):,} labels for {labelled:,} validation images "
            f"(ILSVRC2012_val_<8 digits>.*) in the flat validation folder; the file labels "
            "images by line number, so any difference would shift labels. Use the label file "
            "that belongs to exactly these images"
        )
    by_stem = {f"ILSVRC2012_val_{i:08d}": wnid for i, wnid in enumerate(wnids, 1)}
    return by_stem, words, files, named


def _discover_folders(source: str, follow: bool) -> Discovery:
    train_dir, val_dir = join(source, "train"), _validation_dir(source)
    # A class id must be writable text; files under a folder with a non-UTF-8 name are
    # quarantined by the walk under their escaped names.
    wnids = [d for d in children(train_dir)[0] if not d.startswith(".") and is_valid_name(d)]
    if not wnids:
        raise ValueError(f"{train_dir}: no class folders")
    names, label_files = _names(source)
    val_dirs, val_files = children(val_dir)
    # Hidden names (.DS_Store, .ipynb_checkpoints/) decide nothing; they are still listed. A
    # val/ with any train class folder is sorted by class (stray files there are quarantined);
    # otherwise images directly in it make it flat, labelled by a label file (sub-folders of a
    # flat val are quarantined).
    class_dirs = [n for n in val_dirs if n in wnids]
    val_files = [n for n in val_files if not n.startswith(".")]
    flat = _flat_val_labels(source, val_files) if val_files and not class_dirs else None
    if val_files and not class_dirs and flat is None:
        raise ValueError(
            f"{val_dir}: validation images are flat, without class folders, and no label file "
            f"was found: add {SYNSET_LABELS} or the devkit ({DEVKIT}/data/meta.mat and "
            "ILSVRC2012_validation_ground_truth.txt) to the source, or sort them into class folders"
        )
    if flat is not None:
        names = {**flat[1], **names}
        label_files += flat[2]
    classes = _class_table(wnids, names)
    by_wnid = {c.wnid: c for c in classes}
    train_boxes, train_box_files = _box_files(join(source, "bbox", "train"), source, follow)
    val_boxes, val_box_files = _box_files(join(source, "bbox", "val"), source, follow)
    items = list(
        _class_folder_items(train_dir, source, TRAIN, by_wnid, _xml_boxes(train_boxes), follow)
    )
    if flat is not None:
        items += _flat_items(
            val_dir, source, VALIDATION, by_wnid, flat[0], flat[3], _xml_boxes(val_boxes), follow
        )
    else:
        items += _class_folder_items(
            val_dir, source, VALIDATION, by_wnid, _xml_boxes(val_boxes), follow
        )
    used = {"train", val_dir.rsplit("/", 1)[-1], "bbox", DEVKIT, SYNSET_LABELS, *NAME_FILES}
    return Discovery(
        "ilsvrc2012" if flat is not None else "class-folders",
        classes,
        items,
        label_files,
        train_box_files + val_box_files,
        _not_read(source, used),
    )


def _discover_kaggle(source: str, follow: bool) -> Discovery:
    base = join(source, *KAGGLE_ROOT)
    mapping_path = join(source, "LOC_synset_mapping.txt")
    solution_path = join(source, "LOC_val_solution.csv")
    train_solution = join(source, "LOC_train_solution.csv")
    for required in (join(base, "train"), join(base, "val")):
        if not is_dir(required):
            raise ValueError(f"Kaggle ImageNet layout under {source}: missing {required}")
    for required in (mapping_path, solution_path):
        if not exists(required):
            raise ValueError(f"Kaggle ImageNet layout under {source}: missing {required}")
    names = annotations.read_synset_mapping(mapping_path)
    classes = _class_table(list(names), names)
    by_wnid = {c.wnid: c for c in classes}
    label_files = [mapping_path, solution_path]
    train_rows = {}
    if exists(train_solution):
        train_rows = annotations.read_kaggle_solution(train_solution)
        label_files.append(train_solution)
    solution = annotations.read_kaggle_solution(solution_path)
    items = list(
        _class_folder_items(
            join(base, "train"), source, TRAIN, by_wnid, _csv_boxes(train_rows), follow
        )
    )
    wnid_of = {image_id: wnid for image_id, (wnid, _) in solution.items()}
    items += _flat_items(
        join(base, "val"), source, VALIDATION, by_wnid, wnid_of, solution_path,
        _csv_boxes(solution), follow,
    )  # fmt: skip
    not_read = _not_read(source, {"ILSVRC", *(p.rsplit("/", 1)[-1] for p in label_files)})
    not_read += _not_read(base, {"train", "val"})
    return Discovery("kaggle-imagenet", classes, items, label_files, [], not_read)


def _check_inside(source: str, found: Discovery) -> None:
    """The split folders and label files are read as a whole, not quarantined one by one: one
    that is a link leaving the source stops the run unless outside links are followed."""
    home = os.path.realpath(source)
    folders = [("train",), ("val",), ("validation",), ("bbox",), ("bbox", "train"), ("bbox", "val")]
    folders += [(*KAGGLE_ROOT[:i],) for i in (1, 2, 3)]
    folders += [(*KAGGLE_ROOT, split) for split in ("train", "val")]
    paths = [*found.label_files, *(p for f in folders if os.path.lexists(p := join(source, *f)))]
    paths += sorted({item.path for item in found.items if item.record >= 0})  # TFRecord files
    for path in paths:
        real = os.path.realpath(path)
        if real != home and not real.startswith(home.rstrip(os.sep) + os.sep):
            raise ValueError(
                f"{escaped(path)}: a link outside the source (points to {escaped(real)}); set "
                "follow_outside_links to read it"
            )


def discover(source: str, follow_outside_links: bool = False) -> Discovery:
    """Recognises the layout of `source` and lists every entry with its label or problem.

    Entries whose links lead outside `source` are quarantined unread unless
    `follow_outside_links`; a split folder or label file that does stops the run."""
    source = source.rstrip("/") if is_remote(source) else os.path.abspath(source)
    if not (is_dir(source) if is_remote(source) else exists(source)):
        raise ValueError(f"source {source} does not exist")
    if is_dir(join(source, *KAGGLE_ROOT)):
        found = _discover_kaggle(source, follow_outside_links)
    elif is_dir(join(source, "train")):
        found = _discover_folders(source, follow_outside_links)
    else:
        try:
            layout, items, classes, label_files, others = tfrecords.discover_tfrecords(source, HOST)
        except LookupError:
            raise ValueError(
                f"{source}: unrecognised layout; expected train/<class>/ with val/ (class "
                f"folders, or flat with {SYNSET_LABELS} or the {DEVKIT} devkit), the Kaggle "
                f"ImageNet release ({'/'.join(KAGGLE_ROOT)}/ with LOC_*.csv/txt), Inception "
                "TFRecords (train-00000-of-01024, validation-...), or a prepared TFDS folder "
                "(<name>-train.tfrecord-00000-of-01024, label.labels.txt)"
            ) from None
        found = Discovery(
            layout, classes, [SourceItem(**i) for s in SPLITS for i in items[s]], label_files,
            not_read=others,
        )  # fmt: skip
    if not found.items:
        raise ValueError(f"{source}: no files found")
    if not is_remote(source) and not follow_outside_links:
        _check_inside(source, found)
    return found
