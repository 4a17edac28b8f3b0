"""Ingestion: a class-per-folder or ImageNet image set -> sharded TFRecords.

    python -m components.ingest --source SRC --output OUT [Beam pipeline options]

Writes `train-*-of-*` / `validation-*-of-*` shards, `labels.txt`, `metadata.json` and
`quarantine.jsonl` to OUT (components/dataset.py describes them). The driver lists every entry
under the source, stages one task per shard, runs the Beam job (pipeline.py), and checks that
every entry was written or quarantined. The same inputs and config give byte-identical outputs
on every runner, and a rerun on unchanged inputs reuses them (the fingerprint in metadata.json).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from typing import Literal

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from pydantic import BaseModel, ConfigDict, Field

from components import dataset, events, spans
from components.dataset import SPLITS, VALIDATION, join, shard_name
from components.ingest.images import MAX_DECODED_BYTES
from components.ingest.listing import is_dir
from components.ingest.pipeline import build_pipeline, summary_path
from components.ingest.records import auto_shards, order_key, shard_of
from components.ingest.runners import (
    LOCAL_BEAM_ARGS,
    available_cores,
    resolve_beam_args,
    runner_name,
)
from components.ingest.similarity import DUPLICATES, FINGERPRINTS, find_duplicates
from components.ingest.sources import Discovery, discover, is_remote
from components.masking import redacted

log = logging.getLogger(__name__)
COMPONENT = "ingest"

FORMAT_VERSION = 1
STATISTICS = "statistics"  # validation keeps each span's statistics here (components.validate)
__all__ = ["LOCAL_BEAM_ARGS", "IngestConfig", "IngestSettings", "run_ingest"]


class IngestSettings(BaseModel):
    """How to ingest, whatever the source: the part a pipeline preset chooses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_shards: int | None = Field(None, ge=1, description="None: ~1024 records a shard")
    validation_shards: int | None = Field(None, ge=1, description="None: ~1024 records a shard")
    max_side: int | None = Field(None, ge=16, description="downscale images with a longer side")
    max_image_bytes: int = Field(
        MAX_DECODED_BYTES,
        ge=2**20,
        description="memory an image may take at the peak of its conversion (width x height x "
        "bytes per pixel held, from the header: 8 for RGB, 7 for 16-bit gray, up to 21 with "
        "transparency); larger ones are quarantined without being decoded. Each conversion "
        "thread (one per core) may hold this much at once",
    )
    follow_outside_links: bool = Field(
        False,
        description="read files whose links lead outside the source (datasets assembled as "
        "link farms into another copy); off: such entries are quarantined unread",
    )
    fingerprint: Literal["stat", "content"] = Field(
        "stat",
        description="how a rerun sees changed inputs: 'stat' = every file's size and "
        "modification time (free), 'content' = a SHA-256 of every file's bytes (reads all)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="conversion threads per process that writes shards; None: its share of "
        "the cores (1 with a process per core)",
    )
    processes: int | None = Field(
        None,
        ge=1,
        description="the local run's processes writing shards, forked when the job starts; "
        "None: TRICKFLOW_INGEST_PROCESSES, else one per core (one per `threads` cores when "
        "threads is set; never more than shards): one process's threads share an interpreter "
        "lock, and half a photo's work is Python. Not used when beam_args are given or the "
        "source or output is in an object store",
    )
    beam_args: list[str] = Field(
        default_factory=list,
        description="Beam runner options, e.g. ['--runner=DaskRunner', "
        "'--dask_client_address=tcp://HOST:8786']; empty: the local in-process runner",
    )


class IngestConfig(IngestSettings):
    """What to ingest and how; saved into metadata.json.

    `IngestConfig(**settings.model_dump(), source=..., output=...)` completes a preset's settings.
    """

    source: str = Field(description="dataset root (local path or gs://, s3://)")
    output: str = Field(description="where the shards and reports are written")


def local_processes(asked: int | None, cores: int | None = None, threads: int | None = None) -> int:
    """How many processes write a local job's shards: as asked (the setting, else the
    environment's TRICKFLOW_INGEST_PROCESSES), else one per core, or per `threads` cores when
    the threads of each are set: forked, they cost milliseconds to start, and one process's
    threads run its Python one at a time (on 2 cores two processes wrote 8,000 photos 1.2-1.5x
    faster than one process's two threads)."""
    if not asked:
        value = os.environ.get("TRICKFLOW_INGEST_PROCESSES", "").strip()
        if value and not (value.isdigit() and int(value) >= 1):
            raise ValueError(f"TRICKFLOW_INGEST_PROCESSES={value!r}: a whole number of 1 or more")
        asked = int(value or 0)
    if asked:
        return asked
    return max(1, (cores or available_cores()) // (threads or 1))


def _shard_counts(config: IngestConfig, found: Discovery) -> dict[str, int]:
    inputs = Counter(item.split for item in found.items)
    asked = {"train": config.train_shards, "validation": config.validation_shards}
    # Never more shards than inputs (a shard may still be empty: records go by hash).
    return {s: max(1, min(asked[s] or auto_shards(inputs[s]), inputs[s] or 1)) for s in SPLITS}


def _fingerprint(config: IngestConfig, found: Discovery, labels: str = "") -> str:
    """Inputs and the settings that shape the output; runner options do not change the bytes.
    A span's `labels` (the label table over all spans) shape its records too."""
    settings = (
        json.dumps(
            config.model_dump(
                exclude={"source", "output", "beam_args", "threads", "processes", "fingerprint"}
            ),
            sort_keys=True,
        )
        + labels
    )
    settings_hash = hashlib.sha256(settings.encode()).hexdigest()[:12]
    inputs = found.fingerprint(content=config.fingerprint == "content")
    return f"v{FORMAT_VERSION}-{config.fingerprint}-{inputs[:32]}-{settings_hash}"


def _stage_tasks(found: Discovery, shards: dict[str, int], staging: str, run: str) -> list[str]:
    """One task file per shard: its items in record order (by order key). Returns their paths."""
    per_shard = defaultdict(list)
    for item in found.items:
        key = order_key(item.split, item.relpath)
        per_shard[(item.split, shard_of(key, shards[item.split]))].append((key, item.to_json()))
    paths = []
    for split in SPLITS:
        for shard in range(shards[split]):  # empty shards too, so that every -of-N file exists
            items = [item for _, item in sorted(per_shard[(split, shard)], key=lambda r: r[0])]
            task = {
                "split": split, "shard": shard, "num_shards": shards[split], "run": run,
                "items": items,
            }  # fmt: skip
            if found.classes and any(i.record >= 0 for i in found.items[:1]):
                task["classes"] = [c.text for c in found.classes]  # records name no class
            path = join(staging, "tasks", shard_name(split, shard, shards[split]) + ".json")
            dataset.write_text(path, json.dumps(task))
            paths.append(path)
    return paths


class _Progress(threading.Thread):
    """Reports finished shards while the job runs, by counting staged summaries (any runner)."""

    def __init__(self, staging: str, total: int, on_event: events.OnEvent):
        super().__init__(daemon=True, name="ingest-progress")
        self._pattern = join(staging, "summaries", "*.json")
        self._total, self._on_event = total, on_event
        self._done = threading.Event()

    def run(self) -> None:
        last = 0
        while not self._done.wait(10.0):
            try:
                finished = len(FileSystems.match([self._pattern])[0].metadata_list)
            except Exception:  # noqa: BLE001 - progress must never fail the job
                continue
            if finished != last:
                last = finished
                self._on_event(events.progress(COMPONENT, finished, self._total, "shards written"))

    def stop(self) -> None:
        self._done.set()


def run_ingest(config: IngestConfig, on_event: events.OnEvent | None = None) -> dict:
    """Runs (or reuses) the ingestion and returns the content of metadata.json. Progress goes
    to `on_event` (components/events.py; default: this module's logger)."""
    on_event = on_event or events.log_to(log)

    def on_stage(message: str) -> None:
        on_event(events.stage(COMPONENT, message))

    if not is_remote(config.output):  # workers of a distributed runner have other cwds
        config = config.model_copy(update={"output": os.path.abspath(config.output)})
    if spans.source_spans(config.source) is not None:
        return _ingest_spans(config, on_event)

    def listed() -> tuple[str, Discovery]:
        found = discover(config.source, config.follow_outside_links)
        return _fingerprint(config, found), found

    def rewrite(found: Discovery, fingerprint: str) -> dict:
        return _rewrite(config, found, _shard_counts(config, found), fingerprint, on_event)

    return _reuse_or_rewrite(config.output, listed, rewrite, on_stage)


def _reuse_or_rewrite(
    output: str,
    listed: Callable[[], tuple[str, object]],
    rewrite: Callable[[object, str], dict],
    on_stage: Callable[[str], None],
    reused_message: Callable[[dict], str] | None = None,
) -> dict:
    """The earlier output of the same inputs, or `rewrite(listing, fingerprint)`'s; `listed()`
    lists the source: (fingerprint, listing).

    Reuse needs only a reader's lock (trainings may be reading); a rewrite waits until no one
    reads, and lists again: perhaps for days, behind a training, and a concurrent ingestion of
    the same inputs may have just written them."""
    fingerprint, listing = listed()
    if not is_remote(output):
        os.makedirs(output, exist_ok=True)  # its lock file lives there
    quiet = reused_message is not None
    with dataset.locked(output, False, on_stage):
        reused = _reusable(output, fingerprint, (lambda _: None) if quiet else on_stage)
    if reused:
        if quiet:
            on_stage(reused_message(reused))
        return reused
    waited = []

    def on_wait(message: str) -> None:
        waited.append(message)
        on_stage(message)

    with dataset.locked(output, True, on_wait):
        if waited:  # the listing is stale by now
            fingerprint, listing = listed()
        reused = _reusable(output, fingerprint, on_stage)
        return reused or rewrite(listing, fingerprint)


def _reusable(output: str, fingerprint: str, on_stage: Callable[[str], None]) -> dict | None:
    """The metadata of an earlier ingestion of exactly these inputs and settings, or None."""
    previous = _previous_metadata(output, on_stage)
    if previous and previous.get("fingerprint") == fingerprint:
        on_stage(f"inputs unchanged (fingerprint {fingerprint}); reusing {output}")
        return {**previous, "reused": True}
    return None


def _rewrite(
    config: IngestConfig,
    found: Discovery,
    shards: dict[str, int],
    fingerprint: str,
    on_event: events.OnEvent,
) -> dict:
    """The ingestion proper, under the folder's exclusive lock."""

    def on_stage(message: str) -> None:
        on_event(events.stage(COMPONENT, message))

    what = f"{len(found.items)} files, {len(found.classes)} classes"
    if found.items and found.items[0].record >= 0:
        what = (
            f"{len(found.items):,} records in {len({i.path for i in found.items})} TFRecord "
            f"files, {f'{len(found.classes)} classes' if found.classes else 'classes as named'}"
        )
    on_stage(f"{found.layout}: {what}; shards {shards}")
    for line in found.not_read:
        on_stage(f"not read: {line}")

    _remove_outputs(config.output)
    run = uuid.uuid4().hex[:12]
    staging = join(config.output, "_staging", run)
    tasks = _stage_tasks(found, shards, staging, run)
    # Options for the local runner, or another runner, are the user's: processes only without.
    # Only on local files: a forked process must not inherit a storage client's connections.
    local = not (config.beam_args or is_remote(config.source) or is_remote(config.output))
    processes = 1
    if local:  # never more processes than shards
        asked = local_processes(config.processes, threads=config.threads)
        processes = max(1, min(asked, len(tasks)))
    beam_args = resolve_beam_args(config.beam_args, len(tasks))
    how = f"; {processes} shard processes" if processes > 1 else ""
    on_stage(f"converting images with Beam ({' '.join(redacted(beam_args))}{how})")
    progress = _Progress(staging, len(tasks), on_event)
    progress.start()
    try:
        _run_job(beam_args, tasks, config, staging, processes)
    finally:
        progress.stop()
        progress.join()  # no progress line after the result's

    metadata = _finalize(config, found, shards, fingerprint, staging, run, runner_name(beam_args))
    _delete_folder(join(config.output, "_staging"))
    records, quarantined = metadata["records"], metadata["quarantined"]
    on_stage(described_duplicates(metadata["duplicates"]))
    on_stage(
        f"wrote {records['train']:,} train / {records['validation']:,} validation records; "
        f"quarantined {sum(quarantined.values()):,} (quarantine.jsonl)"
    )
    return {**metadata, "reused": False}


def described_duplicates(found: dict) -> str:
    """'duplicates: 3 validation images also in training; 2 pairs within train, 0 within
    validation (duplicates.json)'."""
    pairs = found["pairs"]
    return (
        f"duplicates: {found['leaked_validation']:,} validation images also in training "
        f"({pairs['validation-train']:,} pairs); {pairs['train']:,} pairs within train, "
        f"{pairs['validation']:,} within validation (exact or within {found['near_bits']} bits "
        f"of 64; {found['file']})"
    )


def _previous_metadata(output: str, on_stage) -> dict | None:
    """The last ingestion's metadata; one that cannot be read (torn by a full disk or a kill in
    an older version, edited by hand) only means that nothing can be reused."""
    try:
        return dataset.read_metadata(output, required=False)
    except ValueError as err:
        on_stage(f"ignoring the previous ingestion's metadata, which cannot be read: {err}")
        return None


def _run_job(
    beam_args: list[str], tasks: list[str], config: IngestConfig, staging: str, processes: int = 1
) -> None:
    pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
    build_pipeline(
        pipeline, tasks, config.output, staging, config.max_side, config.threads,
        config.max_image_bytes, processes,
    )  # fmt: skip
    runner, result = runner_name(beam_args), None
    try:
        result = pipeline.run()
        state = result.wait_until_finish()
    except Exception as err:  # whatever the runner raises: the job failed, not the input
        raise RuntimeError(f"the {runner} ingestion job failed: {err}") from err
    finally:
        client = getattr(result, "client", None)  # the DaskRunner leaves its client connected
        if client is not None:
            client.close()
    if state != PipelineState.DONE:
        raise RuntimeError(f"the {runner} ingestion job ended in state {state}")


def _delete_folder(path: str) -> None:
    if is_dir(path):  # object stores: the whole prefix
        FileSystems.delete([path.rstrip("/") + "/" if is_remote(path) else path])


def _remove_outputs(output: str) -> None:
    """Clears shards and reports of an earlier, different run so that none is mixed in."""
    _delete_folder(join(output, "_staging"))  # also what a killed run left half-written
    _delete_folder(join(output, STATISTICS))  # validation's statistics of the old records
    _delete_folder(join(output, dataset.RECORD_INDEX))  # the old shards' record lengths
    names = [dataset.METADATA, dataset.LABELS, dataset.QUARANTINE, DUPLICATES, FINGERPRINTS]
    stale = [
        m.path
        for s in SPLITS
        for m in FileSystems.match([dataset.shard_pattern(output, s)])[0].metadata_list
    ]
    stale += [join(output, n) for n in names if dataset.exists(join(output, n))]
    if stale:
        FileSystems.delete(stale)


def _read_summaries(
    staging: str, shards: dict[str, int], run: str, runner: str, output: str
) -> list[dict]:
    summaries, missing = [], []
    for split in SPLITS:
        for shard in range(shards[split]):
            name = shard_name(split, shard, shards[split])
            path = summary_path(staging, name)
            summary = json.loads(dataset.read_text(path)) if dataset.exists(path) else {}
            if summary.get("run") == run:
                summaries.append(summary)
            else:
                missing.append(name)
    if missing:
        raise RuntimeError(
            f"the {runner} job reported success but did not write {len(missing)} shard(s): "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; outputs in {output} "
            "are incomplete"
        )
    return summaries


def _finalize(
    config: IngestConfig,
    found: Discovery,
    shards: dict[str, int],
    fingerprint: str,
    staging: str,
    run: str,
    runner: str,
) -> dict:
    """Writes labels.txt, quarantine.jsonl and metadata.json; checks that nothing was lost."""
    summaries = _read_summaries(staging, shards, run, runner, config.output)
    quarantine = sorted(
        (q for s in summaries for q in s["quarantine"]), key=lambda q: (q["split"], q["path"])
    )
    inputs = Counter(item.split for item in found.items)
    records, reencoded, with_boxes = Counter(), Counter(), Counter()
    per_class = {s: Counter() for s in SPLITS}
    formats, resized, box_problems = Counter(), 0, []
    for s in summaries:
        records[s["split"]] += s["records"]
        per_class[s["split"]].update({int(k): v for k, v in s["per_label"].items()})
        formats.update(s["formats"])
        reencoded[s["split"]] += s["reencoded"]
        with_boxes[s["split"]] += s["with_boxes"]
        resized += s["resized"]
        box_problems += s["box_problems"]
    quarantined = Counter(q["split"] for q in quarantine)
    for split in SPLITS:
        if records[split] + quarantined[split] != inputs[split]:
            raise RuntimeError(
                f"ingestion lost files in {split}: {inputs[split]} entries on disk but "
                f"{records[split]} written + {quarantined[split]} quarantined ({runner}); "
                f"outputs in {config.output} are incomplete"
            )

    classes = found.classes or _classes_of_records(summaries, found.layout, config.output)
    dataset.write_text(join(config.output, dataset.LABELS), dataset.format_labels(classes))
    dataset.write_text(
        join(config.output, dataset.QUARANTINE),
        "".join(json.dumps(q, sort_keys=True, ensure_ascii=False) + "\n" for q in quarantine),
    )
    metadata = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "layout": found.layout,
        "source": config.source,
        # same bytes whatever the runner, its options and the output folder
        "config": config.model_dump(exclude={"beam_args", "output", "threads", "processes"}),
        "num_classes": len(classes),
        "inputs": {s: inputs[s] for s in SPLITS},
        "records": {s: records[s] for s in SPLITS},
        "quarantined": {s: quarantined[s] for s in SPLITS},
        "reencoded": {s: reencoded[s] for s in SPLITS},
        "with_boxes": {s: with_boxes[s] for s in SPLITS},
        "resized": resized,
        "box_problems": sorted(box_problems),
        "not_read": found.not_read,
        "source_formats": dict(sorted(formats.items())),
        "shards": shards,
        "per_class": {s: {str(k): per_class[s][k] for k in sorted(per_class[s])} for s in SPLITS},
        "duplicates": _duplicates(config.output, summaries, shards),
    }
    dataset.write_text(
        join(config.output, dataset.METADATA),
        json.dumps(metadata, indent=2, sort_keys=True) + "\n",
    )
    return metadata


def _classes_of_records(summaries: list[dict], layout: str, output: str) -> list:
    """The class table of a source whose records name their classes (Inception TFRecords):
    each label's class id and name as its records give them. A label given two class ids, or
    labels that leave a gap, stop the run: the table would be a guess."""
    table, conflicts = {}, [c for s in summaries for c in s.get("class_conflicts", [])]
    for summary in summaries:
        for label, (wnid, text, first) in summary.get("classes", {}).items():
            seen = table.setdefault(int(label), (wnid, text, first))
            if seen[0] != wnid:
                conflicts.append([int(label), *seen, wnid, first])
    if conflicts:
        label, wnid, _, first, other, second = conflicts[0]
        raise RuntimeError(
            f"{layout}: label {label + 1} is class {wnid} in {first} but {other} in {second} "
            f"({len(conflicts)} such disagreement(s)); outputs in {output} are incomplete"
        )
    top = max(table, default=-1)
    if not table or top + 1 > len(table):
        missing, expected = [], 0  # the first few holes, without listing a range of them
        for label in sorted(table) + [top + 1]:
            while expected < label and len(missing) < 10:
                missing.append(expected)
                expected += 1
            expected = label + 1
        holes = top + 1 - len(table)
        shown = ", ".join(str(m + 1) for m in missing) + (" ..." if holes > 10 else "")
        raise RuntimeError(
            f"{layout}: {holes} label(s) of 1..{top + 1} have no record ({shown}): the class "
            f"table would have holes; outputs in {output} are incomplete"
        )
    return [dataset.ClassInfo(label, table[label][0], table[label][1]) for label in sorted(table)]


FINGERPRINT_COLUMNS = ["split", "record", "path", "digest", "hashes"]


def _duplicates(output: str, summaries: list[dict], shards: dict[str, int]) -> dict:
    """Finds exact and near duplicates among the records (components/ingest/similarity.py),
    writes every pair to duplicates.json, with the records of the validation images that copy a
    training image (`SHARD#INDEX`, for the gate to leave out), keeps each record's fingerprints
    (fingerprints.json: a view over spans searches them together), and returns the counts for
    metadata.json."""
    rows, record_of, kept = [], {}, []
    for s in summaries:
        shard = shard_name(s["split"], s["shard"], shards[s["split"]])
        for index, (path, digest, *hashes) in enumerate(s.get("fingerprints", [])):
            rows.append({"split": s["split"], "path": path, "digest": digest, "hashes": hashes})
            record_of[(s["split"], path)] = f"{shard}#{index}"
            kept.append([s["split"], f"{shard}#{index}", path, digest, hashes])
    dataset.write_text(
        join(output, FINGERPRINTS),
        json.dumps({"columns": FINGERPRINT_COLUMNS, "records": kept}, ensure_ascii=False) + "\n",
    )
    found = find_duplicates(rows)
    found["leaked_records"] = sorted(record_of[(VALIDATION, p)] for p in found["leaked"])
    dataset.write_text(
        join(output, DUPLICATES), json.dumps(found, indent=1, ensure_ascii=False) + "\n"
    )
    return {
        "file": DUPLICATES,
        "pairs": found["counts"],
        "leaked_validation": len(found["leaked"]),
        "search": found["search"],
        "near_bits": found["near_bits"],
    }


def _ingest_spans(config: IngestConfig, on_event: events.OnEvent) -> dict:
    """A source of spans (components/spans.py): each complete span converted into its own
    folder once, unchanged ones reused as they are, then the view of all of them."""

    def on_stage(message: str) -> None:
        on_event(events.stage(COMPONENT, message))

    def listed() -> tuple[str, tuple[dict, list[str]]]:
        plan, not_read, fingerprint = _plan_spans(config)
        return fingerprint, (plan, not_read)

    def reused(metadata: dict) -> str:
        return f"spans unchanged ({spans.described(metadata['spans'])}); reusing {config.output}"

    return _reuse_or_rewrite(config.output, listed, partial(_rewrite_spans, config, on_event),
                             on_stage, reused)  # fmt: skip


def _rewrite_spans(
    config: IngestConfig, on_event: events.OnEvent, listing: tuple[dict, list[str]], _: str
) -> dict:
    """Converts the new or changed spans and writes the view, under the exclusive lock."""
    plan, not_read = listing

    def on_stage(message: str) -> None:
        on_event(events.stage(COMPONENT, message))

    # The view is stale from here until it is written again: without its metadata nothing
    # reuses it, whatever a kill in between leaves of the spans.
    stale = join(config.output, dataset.METADATA)
    if dataset.exists(stale):
        FileSystems.delete([stale])
    entries, converted = [], []
    for name, (span_config, found, fingerprint_of_span) in plan.items():
        folder = join(spans.SPANS, name)
        span_stage = f"span {name}: "
        metadata = _reusable(span_config.output, fingerprint_of_span, lambda _: None)
        if metadata:
            on_stage(span_stage + "unchanged; its shards are reused as they are")
        else:
            on_stage(span_stage + "new or changed; converting it")
            shards = _shard_counts(span_config, found)
            metadata = _rewrite(span_config, found, shards, fingerprint_of_span, on_event)
            converted.append(name)
        entries.append(spans.span_entry(name, folder, metadata))
    _remove_stale_spans(config.output, spans.present_spans(config.source), on_stage)
    metadata = spans.write_view(config.output, entries, config.output, not_read, config.source)
    metadata["converted_spans"] = converted
    return {**metadata, "reused": False}


def _plan_spans(config: IngestConfig) -> tuple[dict, list[str], str]:
    """Lists every complete span and gives each its config, listing and fingerprint (with the
    label set over all spans), the lines of what is not read, and the whole dataset's
    fingerprint."""
    complete, not_read = spans.source_spans(
        config.source, follow_outside=config.follow_outside_links
    )
    found = {}
    for name, path in complete:
        try:
            found[name] = discover(path, config.follow_outside_links)
        except ValueError as err:  # never left out quietly: its data would vanish from training
            raise ValueError(
                f"span {name} is complete but cannot be read: {err}. Fix it, or remove its "
                f"{spans.MARKER} (or the span) to go on without it"
            ) from err
        if any(item.record >= 0 for item in found[name].items[:1]):
            raise ValueError(
                f"span {name}: {found[name].layout} cannot be a span (its labels are known only "
                "once its records are read); ingest it as a dataset of its own"
            )
        marker = join(path, spans.MARKER)
        found[name].not_read = [n for n in found[name].not_read if not n.startswith(marker + ":")]
    classes = _classes_over(found)
    labels = dataset.format_labels(classes)
    plan, entries = {}, []
    for name, listing in found.items():
        _relabel(listing, classes)
        span_config = config.model_copy(
            update={
                "source": dict(complete)[name],
                "output": join(config.output, spans.SPANS, name),
                # shard counts follow each span's size; a preset's count is for a whole dataset
                "train_shards": None,
                "validation_shards": None,
            }
        )
        fingerprint = _fingerprint(span_config, listing, labels)
        plan[name] = (span_config, listing, fingerprint)
        entries.append({"name": name, "fingerprint": fingerprint})
    return plan, not_read, f"spans-{spans.identity(entries)}"


def _classes_over(found: dict[str, Discovery]) -> list[dataset.ClassInfo]:
    """The label table over all spans: class ids sorted, each with the first real name given."""
    names: dict[str, str] = {}
    for listing in found.values():
        for info in listing.classes:
            if names.get(info.wnid, info.wnid) == info.wnid:
                names[info.wnid] = info.text
    return [dataset.ClassInfo(i, w, names[w]) for i, w in enumerate(sorted(names))]


def _relabel(found: Discovery, classes: list[dataset.ClassInfo]) -> None:
    """A span's items labelled by their place among all spans' classes."""
    by_wnid = {c.wnid: c for c in classes}
    for item in found.items:
        if item.label is not None:
            info = by_wnid[item.wnid]
            item.label, item.text = info.label, info.text
    found.classes = classes


def _remove_stale_spans(output: str, current: set[str], on_stage: Callable[[str], None]) -> None:
    """Span folders whose span left the source are removed locally (their shards are derived
    data; on object stores they stay, unlisted). A span still in the source but not complete
    right now (its marker missing or older than a file) keeps its converted shards, unlisted
    in the view until it is complete again. Windows (components/spans.py) are named by their
    spans' contents and left alone."""
    root = join(output, spans.SPANS)
    if is_remote(root) or not os.path.isdir(root):
        return
    for name in sorted(set(os.listdir(root)) - current):
        on_stage(f"span {name} is no longer in the source: removing its shards")
        _delete_folder(join(root, name))
