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
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from components import atomic

TRAIN, VALIDATION = "train", "validation"
SPLITS = (TRAIN, VALIDATION)
LABELS, METADATA, QUARANTINE = "labels.txt", "metadata.json", "quarantine.jsonl"
# Each shard's record lengths, in a folder of their own (`record_index/<shard>.json`), out of
# the shards' glob: what lets a resumed run open a shard at any record without reading it.
RECORD_INDEX = "record_index"
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


def record_index_file(shard: str) -> str:
    """Where ingestion keeps the record lengths of `shard`."""
    folder, _, name = shard.rpartition("/")
    return join(folder or ".", RECORD_INDEX, name + ".json")


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


# The queue in front of LOCK: a writer holds it while it waits for the readers to finish, so
# that new readers queue behind it instead of starving it (flock grants a shared lock to every
# reader that asks, however long a writer has waited).
TURNSTILE = ".lock.queue"
# One small file per holder, `.lock.<pid>-<id>.holder` beside LOCK: who holds it, how, since when.
HOLDER = re.compile(r"^\.lock\.\d+-[0-9a-f]+\.holder$")
# The datasets this process holds shared, inherited by the processes it starts: a stage that
# reads a dataset its run already holds does not queue behind a writer waiting for that run.
READING_ENV = "TRICKFLOW_READING"
_reading: dict[str, int] = {}
_reading_guard = threading.Lock()


@contextlib.contextmanager
def locked(
    data_dir: str, exclusive: bool, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Holds the dataset folder's lock (shared for readers, exclusive for a rewrite) while the
    block runs; `on_wait` hears once that another holder is being waited for, and who it is.

    The lock is the operating system's (flock), so a killed holder releases it. Holders take
    turns in arrival order at a queue lock first: a waiting writer holds the queue, so readers
    that come after it wait behind it and a stream of readers cannot starve it; a reader that
    its own run (this process or its parent) already holds shared goes straight through. A
    no-op for object stores."""
    if "://" in data_dir:
        yield
        return
    key = os.path.realpath(data_dir)
    nested = not exclusive and key in _held_shared()
    kind = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    handle, queue, unlocked, holder = None, None, None, None
    try:
        if exclusive:
            os.makedirs(data_dir, exist_ok=True)
        handle = _open_lock(os.path.join(data_dir, LOCK), exclusive)
        if not nested:
            queue = _open_queue(os.path.join(data_dir, TURNSTILE), exclusive)
        told = False

        def wait(lock, how: int) -> None:
            nonlocal told
            try:
                fcntl.flock(lock, how | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not told:
                    told = True
                    on_wait(f"waiting for the lock of {data_dir}: {_holders_text(data_dir)}")
                fcntl.flock(lock, how)

        if exclusive:  # readers that find the queue taken learn who waits in it
            holder = _write_holder(data_dir, "waiting to rewrite")
        try:
            if queue is not None:
                wait(queue, fcntl.LOCK_EX)  # one at a time through the queue
            wait(handle, kind)
        finally:
            if queue is not None:
                queue.close()  # closing releases it
    except BaseException as err:
        if handle is not None:
            handle.close()
            handle = None
        _remove(holder)
        if exclusive or not isinstance(err, OSError) or not _unlockable(err):
            raise
        # A reader of a dataset it may not write (read-only, another owner's), or a filesystem
        # without flock (some NFS and FUSE mounts): nothing this pipeline runs rewrites it.
        unlocked = err.strerror or str(err)
    if handle is None:
        if on_wait is not None:
            on_wait(f"reading {data_dir} without its lock ({unlocked})")
        yield
        return
    holder = _write_holder(data_dir, "rewriting" if exclusive else "reading", holder)
    if not exclusive:
        _enter_shared(key)
    with handle:
        try:
            yield
        finally:
            if not exclusive:
                _leave_shared(key)
            _remove(holder)
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def held_by_caller(data_dir: str) -> Iterator[None]:
    """Marks `data_dir` as held shared by this process's caller (a pipeline run that holds the
    dataset and waits for this process, as it waits for its training run on another pool): this
    process's readers then go straight to the lock, not into the queue behind a writer that
    waits for that same caller."""
    if "://" in data_dir:
        yield
        return
    key = os.path.realpath(data_dir)
    _enter_shared(key)
    try:
        yield
    finally:
        _leave_shared(key)


def _held_shared() -> set[str]:
    inherited = os.environ.get(READING_ENV, "")
    with _reading_guard:
        return set(_reading) | {p for p in inherited.split(os.pathsep) if p}


def _enter_shared(key: str) -> None:
    with _reading_guard:
        _reading[key] = _reading.get(key, 0) + 1
        _publish_shared()


def _leave_shared(key: str) -> None:
    with _reading_guard:
        _reading[key] -= 1
        if not _reading[key]:
            del _reading[key]
        _publish_shared()


_inherited_reading = os.environ.get(READING_ENV, "")


def _publish_shared() -> None:
    held = [p for p in _inherited_reading.split(os.pathsep) if p] + sorted(_reading)
    if held:
        os.environ[READING_ENV] = os.pathsep.join(dict.fromkeys(held))
    else:
        os.environ.pop(READING_ENV, None)


def _open_queue(path: str, exclusive: bool):
    """The queue lock file, or None for a reader that can neither make nor open it (a dataset
    it may not write: no writer of this pipeline is there to queue behind)."""
    try:
        return _open_lock(path, exclusive)
    except OSError as err:
        if exclusive or not _unlockable(err):
            raise
        return None


def _write_holder(data_dir: str, mode: str, path: str | None = None) -> str | None:
    """Records this holder (pid, host, what it does, since when, the Prefect flow run if any)
    at `path` (a new one by default) for the message of whoever waits; None where the folder
    cannot be written."""
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "mode": mode,
        "since": time.time(),
        "flow_run": os.environ.get("PREFECT__FLOW_RUN_ID", ""),
    }
    name = f".lock.{record['pid']}-{uuid.uuid4().hex[:8]}.holder"
    path = path or os.path.join(data_dir, name)
    try:
        atomic.write_text(path, json.dumps(record))
    except OSError:
        return None
    return path


def _remove(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.remove(path)


def _holders_text(data_dir: str) -> str:
    """Who holds (or queues for) the lock, for a waiting stage: live holders with how long."""
    folder = data_dir
    found, host, now = [], socket.gethostname(), time.time()
    try:
        names = sorted(n for n in os.listdir(folder) if HOLDER.match(n))
    except OSError:
        names = []
    for name in names:
        try:
            with open(os.path.join(folder, name)) as handle:
                holder = json.load(handle)
            pid, since = int(holder["pid"]), float(holder["since"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if holder.get("host") == host and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):  # left by a killed holder, whose lock is gone
                os.remove(os.path.join(folder, name))
            continue
        run = f", flow run {holder['flow_run']}" if holder.get("flow_run") else ""
        found.append(
            f"{holder.get('mode', 'holding')} by pid {pid} on {holder.get('host')}{run} for "
            f"{_duration(now - since)}"
        )
    return "; ".join(found) if found else "held by a stage that left no record"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


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
