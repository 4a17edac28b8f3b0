"""The ingested dataset's contract: what ingestion writes and every later stage reads.

A dataset folder (local, or any filesystem Beam understands such as gs://) holds:

- `train-00000-of-00008` ... and `validation-00000-of-00001` ...: TFRecord shards of
  `tf.train.Example`s with the features of schemas/image_examples.pbtxt;
- `labels.txt`: one line per class, `label<TAB>class id<TAB>text`, labels 0..K-1 in order;
- `metadata.json`: counts per split and class, the source fingerprint and the ingest config;
- `quarantine.jsonl`: one JSON object per source file that did not become a record
  (`path`, `split`, `reason`).

Every stage reads these through this module, so the names live in one place and a missing or
malformed file is reported with its path.

A local dataset folder also holds `.lock`: an ingestion that rewrites the folder holds it
exclusively, and every stage that reads the folder (an ingestion reusing it, validation,
training, evaluation) holds it shared, so a dataset is never rewritten under a reader and two
ingestions of one folder take turns (the second then finds the first's output and reuses it).
Object stores have no such lock: give each ingestion there its own output prefix. Where flock is
emulated with per-process POSIX locks (some NFS mounts), a stage's own unlock releases the run's
hold too: the run then reads unlocked, as on a filesystem without locks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from components import atomic

TRAIN, VALIDATION = "train", "validation"
SPLITS = (TRAIN, VALIDATION)
LABELS, METADATA, QUARANTINE = "labels.txt", "metadata.json", "quarantine.jsonl"
LOCK = ".lock"


@dataclass(frozen=True)
class ClassInfo:
    label: int  # 0-based position of `wnid` among the sorted class ids
    wnid: str
    text: str


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def shard_name(split: str, shard: int, num_shards: int) -> str:
    """`train-00003-of-01024`, the reference converters' naming."""
    return f"{split}-{shard:05d}-of-{num_shards:05d}"


def shard_pattern(data_dir: str, split: str) -> str:
    """A glob of one split's shards, for tf.data, TFDV and FileSystems.match."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return join(data_dir, f"{split}-*-of-*")


def shard_files(data_dir: str, split: str) -> list[str]:
    """The shards of one split, sorted; an error names the folder when there are none."""
    matched = FileSystems.match([shard_pattern(data_dir, split)])[0].metadata_list
    if not matched:
        raise ValueError(f"{data_dir}: no {split} shards ({split}-*-of-*); run ingestion first")
    return sorted(m.path for m in matched)


def read_bytes(path: str) -> bytes:
    try:
        with FileSystems.open(path) as handle:
            return handle.read()
    except OSError as err:  # Beam raises IOError subclasses for every filesystem
        raise ValueError(f"cannot read {path}: {err}") from err


def read_text(path: str) -> str:
    """A UTF-8 text file (a byte-order mark, as Windows tools write, is dropped)."""
    try:
        return read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"cannot read {path}: not UTF-8 text ({err})") from err


def write_bytes(path: str, data: bytes) -> None:
    """Local files are replaced atomically (a reader never sees half of one); object stores
    publish an object only when its upload completes, which is atomic already."""
    if "://" not in path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        atomic.write_bytes(path, data)
        return
    with FileSystems.create(path, mime_type="application/octet-stream") as handle:
        handle.write(data)


def write_text(path: str, text: str) -> None:
    """`write_bytes` of UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def format_labels(classes: list[ClassInfo]) -> str:
    return "".join(f"{c.label}\t{c.wnid}\t{c.text}\n" for c in classes)


def read_classes(data_dir: str) -> list[ClassInfo]:
    """labels.txt -> the classes in label order; labels must be 0..K-1."""
    path = join(data_dir, LABELS)
    classes = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{number}: expected 'label<TAB>class id<TAB>text'")
        text = parts[2] if len(parts) > 2 and parts[2] else parts[1]
        classes.append(ClassInfo(int(parts[0]), parts[1], text))
    if [c.label for c in classes] != list(range(len(classes))):
        raise ValueError(f"{path}: labels must be 0..K-1 in order")
    if not classes:
        raise ValueError(f"{path}: no classes")
    return classes


def read_labels(data_dir: str) -> list[str]:
    """The class texts in label order (what reports and confusion tables show)."""
    return [c.text for c in read_classes(data_dir)]


def read_metadata(data_dir: str, required: bool = True) -> dict | None:
    """metadata.json as a dict; None when it is absent and not `required`."""
    path = join(data_dir, METADATA)
    if not exists(path):
        if required:
            raise ValueError(f"{path} does not exist: {data_dir} is not an ingested dataset")
        return None
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def read_quarantine(data_dir: str) -> list[dict]:
    """quarantine.jsonl as a list of {path, split, reason}."""
    path = join(data_dir, QUARANTINE)
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err})") from err
    return rows


@contextlib.contextmanager
def locked(
    data_dir: str, exclusive: bool, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Holds the dataset folder's lock (shared for readers, exclusive for a rewrite) while the
    block runs; `on_wait` hears once that another holder is being waited for. The lock is the
    operating system's (flock), so a killed holder releases it. A no-op for object stores."""
    if "://" in data_dir:
        yield
        return
    kind = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    handle, unlocked = None, None
    try:
        if exclusive:
            os.makedirs(data_dir, exist_ok=True)
        handle = _open_lock(os.path.join(data_dir, LOCK), exclusive)
        try:
            fcntl.flock(handle, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                holder = "a stage reads it" if exclusive else "an ingestion rewrites it"
                on_wait(f"waiting for the lock of {data_dir}: {holder}")
            fcntl.flock(handle, kind)
    except OSError as err:
        if handle is not None:
            handle.close()
            handle = None
        if exclusive or not _unlockable(err):
            raise
        # A reader of a dataset it may not write (read-only, another owner's), or a filesystem
        # without flock (some NFS and FUSE mounts): nothing this pipeline runs rewrites it.
        unlocked = err.strerror or str(err)
    if handle is None:
        if on_wait is not None:
            on_wait(f"reading {data_dir} without its lock ({unlocked})")
        yield
        return
    with handle:
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock(path: str, exclusive: bool):
    """The lock file, made if missing; a reader that may not write opens it read-only (flock
    works on a descriptor opened either way)."""
    try:
        return open(path, "a+")  # noqa: SIM115 - held by the caller's `with`
    except OSError as err:
        if exclusive or err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        return open(path)  # noqa: SIM115


def _unlockable(err: OSError) -> bool:
    return err.errno in (
        errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOLCK, errno.EOPNOTSUPP,
        errno.EINVAL,
    )  # fmt: skip
