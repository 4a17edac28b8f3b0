"""The Beam job: one element per output shard, each converting its images and writing its shard.

The driver lists every file and knows its shard (a hash of its path), so it stages one small task
file per shard holding that shard's items in record order. The job is a single step over those
task files: read each file, convert its images (a thread pool, results taken in order), and
stream the records to the shard. There is no GroupByKey of image bytes, so memory stays at one
shard's look-ahead window whatever the data size, and the shape is one linear ParDo that every
runner executes the same way (Beam's DaskRunner computes only the last transform of a job, and
can lose tagged outputs; a job with one step and no outputs to lose is safe there). The local
job hands each shard to one of the processes it forked (`ShardProcesses`), so it uses every core.

Each shard is written under a temporary name and renamed when complete; its summary (counts and
quarantined files) is then written beside the staging files, and the driver counts summaries:
a shard whose summary is missing fails the run instead of losing records silently.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import multiprocessing
import os
import signal
import socket
import stat
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components.dataset import join, record_index_file, shard_name
from components.ingest.annotations import read_voc_boxes
from components.ingest.images import MAX_DECODED_BYTES, BadImage, to_stored_image
from components.ingest.listing import is_remote
from components.ingest.records import (
    FRAMING,
    example_messages,
    make_example,
    opened_at,
    record_at,
    tfrecord_frame,
)
from components.ingest.runners import available_cores
from components.ingest.similarity import exact_digest
from components.ingest.tfrecords import parsed

log = logging.getLogger(__name__)


def summary_path(staging: str, name: str) -> str:
    return join(staging, "summaries", f"{name}.json")


def convert_item(
    item: dict,
    max_side: int | None,
    max_bytes: int = MAX_DECODED_BYTES,
    classes: list[str] | None = None,
) -> tuple[bytes | None, dict]:
    """One staged item -> (serialized example, stats), or (None, {"reason": ...}) to quarantine.
    An item that is a record of a TFRecord source is parsed first (its image, label, names and
    boxes); `classes`: the names of a source's labels when the records do not carry them.

    Running out of memory fails the shard (the runner retries it) and names the file: it says
    nothing about the file, so it must not become a quarantine verdict that later runs reuse.
    """
    reason = item.get("problem")
    fields = None  # a TFRecord source's record, parsed
    if not reason:
        try:
            data = read_listed(item)
            if item.get("record", -1) >= 0:
                fields = parsed(data, item["record_format"], len(classes or ()))
                data = fields["jpeg"]
            stored = to_stored_image(data, max_side, max_bytes)
        except BadImage as err:
            reason = str(err)
        except MemoryError as err:
            raise MemoryError(
                f"{item['path']}: out of memory while converting it ({err}); lower "
                "max_image_bytes or the conversion threads"
            ) from err
        except OSError as err:
            if is_remote(item["path"]):  # a storage hiccup: fail the shard, the runner retries
                raise
            reason = f"unreadable file: {err}"
        except ValueError as err:  # a record: damaged, not an Example, or without its image
            if item.get("record", -1) < 0:
                raise
            reason = str(err).removeprefix(f"{item['path']}: ")
    if reason:
        return None, {"reason": reason}
    boxes, box_size, box_problem = item["boxes"], item.get("box_size"), ""
    if item.get("box_file"):
        try:
            boxes, box_size = read_voc_boxes(item["box_file"])
        except ValueError as err:  # the image is fine; only its boxes are unknown
            box_problem = str(err)
    filename = item["relpath"].rsplit("/", 1)[-1]
    label, text = item["label"], item["text"]
    if fields is not None:
        label, boxes, box_size = fields["label"], fields["boxes"], (1, 1)  # boxes are relative
        text = fields["text"] or (classes[label] if classes else fields["wnid"])
        filename = fields["filename"] or filename
    example = make_example(stored, label, text, filename, boxes, box_size)
    stats = {
        "digest": exact_digest(stored.jpeg),
        "hashes": [f"{h:016x}" for h in stored.hashes or ()],
        "format": stored.source_format,
        "reencoded": stored.reencoded,
        "resized": stored.resized,
        "boxes": bool(boxes),
        "box_problem": box_problem,
    }
    if fields is not None:
        stats.update(label=label, wnid=fields["wnid"], text=text)
    return example, stats


def entry_name(item: dict) -> str:
    """How an entry is named in the quarantine and the fingerprints: its path, and for a record
    of a TFRecord source its index too (`train-00003-of-01024#17`)."""
    return f"{item['path']}#{item['record']}" if item.get("record", -1) >= 0 else item["path"]


class ChangedSinceListed(BadImage):
    """The file opened is not the one listed: replaced, linked elsewhere, or rewritten."""


def read_listed(item: dict) -> bytes:
    """The bytes of a listed file (or of a listed record of a TFRecord file: only its bytes,
    at its offset, their checksum checked), read from one open of it that is checked against
    the listing.

    Local files are opened once, without following a link unless the listing found a link
    (to a file inside the source), and the open file's inode, size and modification time must
    be what the listing saw: a file swapped for a link to something outside the source, or
    replaced or rewritten after the listing, is refused by name instead of read. The device
    number is not compared (a network mount has another one on each machine of a cluster), nor
    the inode on another machine than the lister (FUSE and some network mounts number files per
    machine): there size and time must match.
    """
    path = item["path"]
    record = item.get("record", -1) >= 0
    if is_remote(path) or not item.get("inode"):
        if record:
            with opened_at(path) as read_at:
                return record_at(read_at, item["offset"], item["record_length"], path)
        with FileSystems.open(path) as handle:
            return handle.read()
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if not item.get("link"):
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ChangedSinceListed(
                "changed after it was listed: now a symbolic link (not read)"
            ) from err
        raise
    with os.fdopen(fd, "rb") as handle:
        seen = os.fstat(handle.fileno())
        same_host = item.get("host", "") in ("", socket.gethostname())
        listed = (item["inode"] if same_host else 0, item["size"], item.get("mtime_ns", 0))
        now = (seen.st_ino if same_host else 0, seen.st_size, seen.st_mtime_ns)
        if not stat.S_ISREG(seen.st_mode) or now != listed:
            raise ChangedSinceListed(
                "changed after it was listed (inode, size, modified time "
                f"{listed[0]}, {listed[1]}, {listed[2]} then; {now[0]}, {now[1]}, {now[2]} now);"
                " not read: run the ingestion again once it is settled"
            )
        if record:
            read_at = lambda offset, count: os.pread(handle.fileno(), count, offset)  # noqa: E731
            return record_at(read_at, item["offset"], item["record_length"], path)
        return handle.read()


def ordered_map(fn: Callable, items: Iterable, threads: int) -> Iterator:
    """fn over items on `threads` threads, results in input order, a bounded window in flight.

    Pillow releases the GIL while it decodes and encodes, so threads use every core; the window
    (4 per thread) bounds memory to a few dozen images.
    """
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="convert") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _write_atomically(path: str, chunks: Iterable[bytes], temp_dir: str) -> None:
    """Writes to a temporary file in `temp_dir` (on the same filesystem, and removed with the
    staging folder if the write dies), then renames it over `path`: no reader, nor the shard
    glob, ever sees half a shard, and a retried or duplicate run of a shard replaces it whole."""
    temp = join(temp_dir, f".{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:8]}.tmp")
    with FileSystems.create(temp, mime_type="application/octet-stream") as handle:
        for chunk in chunks:
            handle.write(chunk)
    if not is_remote(path):  # a local rename needs its folder; object stores have none
        os.makedirs(os.path.dirname(path), exist_ok=True)
    FileSystems.rename([temp], [path])  # replaces an existing file (os.rename, object copy)


def write_shard(
    task: dict,
    output: str,
    staging: str,
    max_side: int | None,
    threads: int,
    max_bytes: int = MAX_DECODED_BYTES,
) -> dict:
    """Converts one shard's items and writes the shard and its summary; returns the summary."""
    name = shard_name(task["split"], task["shard"], task["num_shards"])
    per_label, formats, quarantine, box_problems = Counter(), Counter(), [], []
    totals = Counter()
    fingerprints = []  # [path, digest, hash, hash] of each record, for finding duplicates
    lengths = []  # each record's length, the shard's index
    classes, conflicts = {}, []  # label -> [class id, name, first record]; disagreements

    def convert(item: dict) -> tuple[bytes | None, dict]:
        # framed here too: off the writer thread
        example, stats = convert_item(item, max_side, max_bytes, task.get("classes"))
        return (tfrecord_frame(example) if example is not None else None), stats

    def records() -> Iterator[bytes]:
        for item, (record, stats) in zip(
            task["items"], ordered_map(convert, task["items"], threads), strict=True
        ):
            if record is None:
                row = {"path": item["path"], "split": item["split"], "reason": stats["reason"]}
                if item.get("record", -1) >= 0:
                    row["record"] = item["record"]
                quarantine.append(row)
                continue
            label = stats.get("label", item["label"])
            per_label[label] += 1
            if "wnid" in stats:  # a TFRecord source's record names its class
                classes.setdefault(str(label), [stats["wnid"], stats["text"], entry_name(item)])
                if classes[str(label)][0] != stats["wnid"]:
                    conflicts.append([label, *classes[str(label)], stats["wnid"], entry_name(item)])
            formats[stats["format"]] += 1
            fingerprints.append([entry_name(item), stats["digest"], *stats["hashes"]])
            totals.update(
                records=1, reencoded=stats["reencoded"], resized=stats["resized"],
                with_boxes=stats["boxes"],
            )  # fmt: skip
            if stats["box_problem"]:
                box_problems.append(stats["box_problem"])
            lengths.append(len(record) - FRAMING)
            yield record

    _write_atomically(join(output, name), records(), join(staging, "tmp"))
    index = json.dumps({"lengths": lengths}).encode()
    _write_atomically(record_index_file(join(output, name)), [index], join(staging, "tmp"))
    summary = {
        "split": task["split"],
        "shard": task["shard"],
        "records": totals["records"],
        "per_label": {str(k): v for k, v in sorted(per_label.items())},
        "formats": dict(sorted(formats.items())),
        "reencoded": totals["reencoded"],
        "resized": totals["resized"],
        "with_boxes": totals["with_boxes"],
        "box_problems": box_problems,
        "classes": classes,
        "class_conflicts": conflicts[:100],
        "quarantine": quarantine,
        "fingerprints": fingerprints,
        "run": task["run"],  # the driver counts only this run's summaries
    }
    text = json.dumps(summary, sort_keys=True, ensure_ascii=False).encode("utf-8")
    _write_atomically(summary_path(staging, name), [text], join(staging, "summaries"))
    return summary


def write_task(
    task_path: str,
    output: str,
    staging: str,
    max_side: int | None,
    threads: int,
    max_bytes: int = MAX_DECODED_BYTES,
) -> dict:
    """The shard of one task file written; its name, split, number, records, quarantined."""
    with FileSystems.open(task_path) as handle:
        task = json.loads(handle.read())
    summary = write_shard(task, output, staging, max_side, threads, max_bytes)
    return {
        "name": shard_name(task["split"], task["shard"], task["num_shards"]),
        "split": task["split"],
        "shard": task["shard"],
        "records": summary["records"],
        "quarantined": len(summary["quarantine"]),
    }


def _shard_process_started(parent: int) -> None:
    """First thing in a shard process. Signals are its own, not its parent's framework's (a
    flow run's SIGTERM handler raises an exception: a process told to stop would go on to the
    next shard); Ctrl-C is for the parent, which then ends the processes (`close`). And it ends
    within a second of its parent: an orphan would go on writing shards nobody counts, and hold
    the dataset's lock, whose open file it inherited, so that the next run would wait for it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class ShardProcesses:
    """Processes that each write whole shards, forked from this one when the job starts.

    A photo's conversion is about half Python (header parsing, the Example, hashing, framing,
    bookkeeping), and Python runs one thread at a time in a process, so one process's threads
    stop adding much after two or three cores; processes that each convert and write their own
    shards share nothing but the task files they are given. Forked, they start in milliseconds
    with everything imported (no cluster to start, nothing to import again), so they pay even
    on two cores. The objects this process holds (the driver's item list) are frozen out of the
    garbage collector before the fork, so the children's collections do not copy them page by
    page. A process that dies (a decoder crash on a hostile file, the kernel's OOM killer) fails
    the job naming the shards not finished, as a crash of the whole process would; one whose
    parent dies ends within a second (`_shard_process_started`).
    """

    def __init__(self, processes: int):
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, *args) -> Future:
        """The shard's write handed to a process; OSError when the processes cannot be
        started (no memory to fork, the container's process limit): none is left running."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_shard_process_started,
                initargs=(os.getpid(),),
            )
            gc.freeze()  # a fork context starts every process at the first submit, below
            try:
                return self._pool.submit(write_task, *args)
            except OSError:
                # those started before the fork that failed wait for work that never comes
                self._end_processes()
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                raise
            finally:
                gc.unfreeze()
        return self._pool.submit(write_task, *args)

    def _end_processes(self) -> None:
        """Kills the pool's processes and reaps them (a zombie still counts against a
        container's process limit)."""
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        for process in processes:
            process.kill()
        for process in processes:
            process.join(5)

    def close(self, now: bool = False) -> None:
        """Ends the processes once their shards are written, or `now` (the job failed or was
        stopped: the shards they are writing, and the ones queued, are not wanted)."""
        if self._pool is not None:
            if now:
                self._end_processes()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class WriteShardFn(beam.DoFn):
    """Task file of one shard -> the shard written, its summary staged (and emitted: when the
    shards are written by `ShardProcesses`, nothing is emitted; the summaries are the result)."""

    def __init__(
        self,
        output: str,
        staging: str,
        max_side: int | None,
        threads: int | None,
        max_bytes: int = MAX_DECODED_BYTES,
        processes: int = 1,
    ):
        self._output, self._staging = output, staging
        self._max_side, self._threads, self._max_bytes = max_side, threads, max_bytes
        self._processes = processes
        self._written = Metrics.counter("ingest", "examples_written")
        self._quarantined = Metrics.counter("ingest", "files_quarantined")

    def setup(self):
        # Built once here rather than by the first conversion threads all at once (and so
        # inherited by the shard processes).
        example_messages()

        self._shard_processes = ShardProcesses(self._processes) if self._processes > 1 else None
        self._pending: list[tuple[str, Future]] = []
        # each shard process converts on its share of the cores
        self._pool_size = self._threads or max(1, available_cores() // self._processes)

    def _counted(self, written: dict) -> None:
        self._written.inc(written["records"])
        self._quarantined.inc(written["quarantined"])
        log.info(
            "%s: %d records, %d quarantined",
            written["name"], written["records"], written["quarantined"],
        )  # fmt: skip

    def _task(self, task_path: str) -> tuple:
        """write_task's arguments for the shard of `task_path`."""
        return (task_path, self._output, self._staging, self._max_side, self._pool_size,
                self._max_bytes)  # fmt: skip

    def process(self, task_path: str):
        if self._shard_processes is not None:
            try:
                future = self._shard_processes.submit(*self._task(task_path))
                self._pending.append((task_path, future))
                return
            except OSError as err:  # not a word about the data: written here instead
                if self._pending:  # some shards are already with the processes
                    raise
                log.warning(
                    "could not start %d shard processes (%s); writing the shards in this process",
                    self._shard_processes.processes, err,
                )  # fmt: skip
                self._shard_processes = None
                self._pool_size = self._threads or available_cores()
        written = write_task(*self._task(task_path))
        self._counted(written)
        yield written["split"], written["shard"], written["records"]

    def finish_bundle(self):
        pending, self._pending = self._pending, []
        lost, cause = [], None
        try:
            for task_path, future in pending:
                try:
                    self._counted(future.result())
                except BrokenProcessPool as err:  # every shard unfinished when one died
                    lost.append(task_path.rsplit("/", 1)[-1].removesuffix(".json"))
                    cause = err
        except BaseException:  # a shard's error, Ctrl-C, a flow run told to stop: no waiting
            self._shard_processes.close(now=True)
            raise
        if lost:
            self._shard_processes.close(now=True)
            raise RuntimeError(
                f"a shard process died (a decoder crash on one of its files, or out of memory) "
                f"while {len(lost)} shards were not finished: {', '.join(lost)}; they are not "
                "written"
            ) from cause

    def teardown(self):
        if getattr(self, "_shard_processes", None) is not None:  # pending: the bundle failed
            self._shard_processes.close(now=bool(self._pending))


def build_pipeline(
    pipeline: beam.Pipeline,
    task_paths: list[str],
    output: str,
    staging: str,
    max_side: int | None,
    threads: int | None,
    max_bytes: int = MAX_DECODED_BYTES,
    processes: int = 1,
) -> None:
    """Wires the job: shard task files -> shards and summaries (one step, no grouping);
    `processes` > 1: the shards are written by that many processes (`ShardProcesses`)."""
    (
        pipeline
        # Create spreads its elements over the workers (it reshuffles on every runner).
        | "ShardTasks" >> beam.Create(task_paths)
        | "WriteShards"
        >> beam.ParDo(WriteShardFn(output, staging, max_side, threads, max_bytes, processes))
    )
