"""ImageNet as people already hold it: TFRecords in the Inception layout, or a prepared TFDS
folder, read as a source without going back to the JPEG files.

- Inception / Model Garden (what `build_imagenet_data.py` writes): `train-00000-of-01024`,
  `validation-00000-of-00128` with `image/encoded`, `image/class/label` (1-based: 0 was left for
  a background class), `image/class/synset`, `image/class/text`, `image/filename` and relative
  boxes `image/object/bbox/{xmin,ymin,xmax,ymax}`. Labels become label - 1; the class table
  (synset and name of each label) is assembled from the records themselves, and two records
  giving one label two synsets stop the run.
- TFDS `imagenet2012` as `tfds` prepares it: `<name>-train.tfrecord-00000-of-01024`,
  `<name>-validation.tfrecord-...`, features `image` (the JPEG), `label` (0-based), `file_name`,
  and `label.labels.txt` (one synset a line, in label order) beside them; the source may be that
  folder or a data folder holding `<name>/<version>/`.

Every record is an entry of its own (file and record index), listed from the records' headers
alone (their bytes are read once, when converted), and checked as an image file is: a record
that is no Example, lacks its image or label, or holds a bad image is quarantined by file and
record; a file whose frames break at some byte contributes one quarantined entry for the rest
of it, so nothing is lost without a line saying so. Valid JPEGs are kept byte for byte.
"""

from __future__ import annotations

import os
import re

from apache_beam.io.filesystems import FileSystems

from components.dataset import SPLITS, TRAIN, VALIDATION, ClassInfo, join, read_text
from components.ingest.listing import children, escaped, is_remote
from components.ingest.records import (
    DamagedRecords,
    example_messages,
    frame_lengths,
    masked_crc,
    opened_at,
    payload_offsets,
    record_at,
)

INCEPTION, TFDS = "inception-tfrecords", "tfds-tfrecords"
INCEPTION_NAME = re.compile(r"^(train|validation)-(\d{5})-of-(\d{5})$")
TFDS_NAME = re.compile(r"^.+-(train|validation)\.tfrecord-(\d{5})-of-(\d{5})$")
TFDS_VERSION = re.compile(r"^\d+\.\d+\.\d+$")  # not `5.1.0.incomplete...`: a build in progress
TFDS_LABELS = "label.labels.txt"
TFDS_FILES = (TFDS_LABELS, "dataset_info.json", "features.json")


def _split_files(folder: str, pattern: re.Pattern) -> dict[str, list[str]]:
    _, files = children(folder)
    found = {split: [] for split in SPLITS}
    for name in sorted(files):
        if match := pattern.match(name):
            found[match.group(1)].append(join(folder, name))
    return found


def _complete(files: dict[str, list[str]], pattern: re.Pattern) -> None:
    """Every split's files are shards 0..N-1 of one N: a copy that stopped halfway, or files
    of two conversions mixed, stop the run instead of training on part of the data."""
    for split, paths in files.items():
        numbers = [pattern.match(p.rsplit("/", 1)[-1]).groups()[1:] for p in paths]
        totals = {int(total) for _, total in numbers}
        if not paths:
            continue
        if len(totals) > 1:
            raise ValueError(
                f"{paths[0].rsplit('/', 1)[0]}: {split} files of {len(totals)} different shard "
                f"counts ({', '.join(str(t) for t in sorted(totals))}); keep one conversion's"
            )
        total = totals.pop()
        shards = [int(n) for n, _ in numbers]
        if len(set(shards)) != len(shards) or max(shards) >= total:
            raise ValueError(
                f"{paths[0].rsplit('/', 1)[0]}: {split} files with repeated shard numbers or "
                f"numbers past {total - 1:05d} (two conversions mixed?); keep one conversion's"
            )
        missing = sorted(set(range(total)) - set(shards))
        if missing:
            shown = ", ".join(f"{m:05d}" for m in missing[:10])
            raise ValueError(
                f"{paths[0].rsplit('/', 1)[0]}: {len(missing)} of {total} {split} files are "
                f"missing ({shown}{' ...' if len(missing) > 10 else ''}); copy them, or the "
                "dataset would be short without a word"
            )


def _others(folder: str, pattern: re.Pattern) -> list[str]:
    """Files beside the records that no split takes: named in what was not read."""
    _, files = children(folder)
    return [
        f"{escaped(join(folder, name))}: not a {'TFDS' if pattern is TFDS_NAME else 'shard'} "
        "file of the train or validation split"
        for name in sorted(files)
        if not pattern.match(name) and name not in TFDS_FILES
    ]


def tfds_folder(source: str) -> str | None:
    """The folder of a prepared TFDS dataset: `source` itself, `source/<version>` when `source`
    is the dataset's folder (`.../imagenet2012`), or `source/<name>/<version>` when it is a TFDS
    data folder holding one dataset; the highest version."""
    if any(_split_files(source, TFDS_NAME).values()):
        return source
    candidates = []
    below = [(source.rstrip("/").rsplit("/", 1)[-1], source)]  # the dataset's folder itself
    below += [(name, join(source, name)) for name in children(source)[0]]
    for name, parent in below:
        for version in children(parent)[0]:
            if not TFDS_VERSION.match(version):
                continue
            folder = join(parent, version)
            if any(_split_files(folder, TFDS_NAME).values()):
                number = tuple(int(p) for p in re.findall(r"\d+", version))
                candidates.append((name, number, folder))
    names = {c[0] for c in candidates}
    if len(names) > 1:
        raise ValueError(
            f"{source}: several TFDS datasets ({', '.join(sorted(names))}); point the source at "
            "one of their version folders"
        )
    return max(candidates)[2] if candidates else None


def inception_files(source: str) -> dict[str, list[str]] | None:
    found = _split_files(source, INCEPTION_NAME)
    return found if any(found.values()) else None


def first_features(paths: list[str]) -> tuple[str, set[str]]:
    """The first of `paths` with a readable first record, and that record's feature names
    ("", set() if none has one)."""
    from google.protobuf.message import DecodeError

    for path in paths:
        with opened_at(path) as read_at:
            header = read_at(0, 12)
            if len(header) < 12 or header[8:] != masked_crc(header[:8]):
                continue  # empty or damaged: the next file says what this set is
            try:
                record = record_at(read_at, 12, int.from_bytes(header[:8], "little"), path)
                example = example_messages().Example.FromString(record)
            except (ValueError, DecodeError, OSError):
                continue
            return path, set(example.features.feature)
    return "", set()


def record_items(path: str, split: str, layout: str, source: str, host: str) -> list[dict]:
    """One entry per record of a TFRecord file (fields of SourceItem), from its headers alone;
    the part of a file past a broken frame is one entry with its problem."""
    try:
        seen = os.stat(path)  # local: object stores are refused before (discover_tfrecords)
    except OSError as err:
        raise ValueError(f"{escaped(path)}: cannot be read ({err.strerror})") from err
    size, mtime_ns, inode = seen.st_size, seen.st_mtime_ns, seen.st_ino
    rel = path[len(source) + 1 :] if path.startswith(source + "/") else path.rsplit("/", 1)[-1]
    common = {"path": path, "split": split, "size": size, "mtime_ns": mtime_ns, "inode": inode,
              "host": host, "record_format": layout, "link": os.path.islink(path)}  # fmt: skip
    problem = ""
    with opened_at(path) as read_at:
        try:
            lengths = frame_lengths(read_at, size, path)
        except DamagedRecords as err:
            lengths = err.lengths
            problem = (
                f"{err.where}: the records from there to the end of the file "
                "cannot be read (one entry for all of them)"
            )
    items = [
        {
            **common,
            "relpath": f"{rel}#{i}",
            "label": -1,
            "record": i,
            "offset": offset,
            "record_length": length,
        }  # fmt: skip
        for i, (offset, length) in enumerate(zip(payload_offsets(lengths), lengths, strict=True))
    ]
    if problem:
        i = len(lengths)
        items.append({**common, "relpath": f"{rel}#{i}", "label": None, "record": i,
                      "problem": problem})  # fmt: skip
    return items


def tfds_classes(folder: str) -> tuple[list[ClassInfo], str]:
    """The class table of a TFDS folder from its label file (label i is the i-th line)."""
    path = join(folder, TFDS_LABELS)
    if not FileSystems.exists(path):
        raise ValueError(
            f"{folder}: a TFDS folder without {TFDS_LABELS}; the labels' class ids are unknown"
        )
    wnids = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    return [ClassInfo(i, w, w) for i, w in enumerate(wnids)], path


def parsed(record: bytes, layout: str, num_classes: int = 0) -> dict:
    """An image record of either layout -> {jpeg, label (0-based), wnid, text, filename, boxes
    (relative [xmin, ymin, xmax, ymax])}; ValueError says what is wrong with it."""
    from google.protobuf.message import DecodeError

    try:
        features = example_messages().Example.FromString(record).features.feature
    except DecodeError as err:
        raise ValueError(f"not a tf.train.Example ({err})") from err

    def one(name: str, kind: str, required: bool = True):
        values = getattr(features[name], kind).value if name in features else []
        if len(values) != 1:
            if required:
                raise ValueError(f"feature {name!r}: {len(values)} values where one is needed")
            return None
        return values[0]

    def text(name: str) -> str:
        value = one(name, "bytes_list", required=False)
        return value.decode("utf-8", "replace") if value is not None else ""

    if layout == INCEPTION:
        label = one("image/class/label", "int64_list")
        if label < 1:
            raise ValueError(f"label {label}: Inception labels start at 1 (0 is background)")
        corners = [
            list(features[f"image/object/bbox/{c}"].float_list.value)
            if f"image/object/bbox/{c}" in features
            else []
            for c in ("xmin", "ymin", "xmax", "ymax")
        ]
        if len({len(c) for c in corners}) != 1:
            raise ValueError("box corners of different counts")
        return {
            "jpeg": one("image/encoded", "bytes_list"),
            "label": label - 1,
            "wnid": text("image/class/synset"),
            "text": text("image/class/text"),
            "filename": text("image/filename"),
            "boxes": [list(b) for b in zip(*corners, strict=True)],
        }
    label = one("label", "int64_list")
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} is not one of the {num_classes} classes")
    return {
        "jpeg": one("image", "bytes_list"),
        "label": label,
        "wnid": "",
        "text": "",
        "filename": text("file_name"),
        "boxes": [],
    }


def discover_tfrecords(
    source: str, host: str
) -> tuple[str, dict, list[ClassInfo], list[str], list[str]]:
    """(layout, {split: items}, classes, label files, what is not read) of a TFRecord source,
    or a ValueError that says what was found. Inception's classes are [] here: they come from
    the records."""
    folder = source
    files = inception_files(source)
    layout, pattern = INCEPTION, INCEPTION_NAME
    if files is None:
        folder = tfds_folder(source)
        if folder is None:
            raise LookupError(source)
        files, layout, pattern = _split_files(folder, TFDS_NAME), TFDS, TFDS_NAME
    if not files[TRAIN]:
        raise ValueError(f"{folder}: {layout} without train files")
    _complete(files, pattern)
    first, features = first_features(files[TRAIN])
    if not first:
        raise ValueError(f"{folder}: no {layout} train file holds a readable record")
    if layout == INCEPTION and "image/encoded" not in features:
        if {"image", "label", "img_format"} <= features:
            raise ValueError(
                f"{source}: already a TrickFlow dataset (its shards hold our features); train "
                "on it directly (data_dir) instead of ingesting it again"
            )
        raise ValueError(
            f"{first}: named like an Inception TFRecord but its first record has no "
            f"image/encoded (features: {', '.join(sorted(features)) or 'none'})"
        )
    if layout == TFDS and not {"image", "label"} <= features:
        raise ValueError(
            f"{first}: a TFDS file whose first record lacks image and label "
            f"(features: {', '.join(sorted(features)) or 'none'})"
        )
    if is_remote(folder):
        raise ValueError(
            f"{folder}: {layout} on an object store cannot be read record by record at a "
            "sensible cost (each read of a ~110 KB record fetches a 16 MiB chunk through Beam's "
            "reader); copy the files to a local or network filesystem and ingest from there"
        )
    classes, label_files = [], []
    if layout == TFDS:
        classes, labels_path = tfds_classes(folder)
        label_files = [labels_path]
    items = {split: [] for split in SPLITS}
    for split in SPLITS:
        for path in files[split]:
            items[split] += record_items(path, split, layout, folder, host)
    if not items[VALIDATION]:
        raise ValueError(f"{folder}: {layout} without validation files")
    return layout, items, classes, label_files, _others(folder, pattern)
