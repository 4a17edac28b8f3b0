"""Ingestion: a class-per-folder or ImageNet image set -> sharded TFRecords (SPEC §3-4).

    python -m components.ingest --source SRC --output OUT [Beam pipeline options]

Writes `train-*-of-*` / `validation-*-of-*` shards, `labels.txt`, `metadata.json` and
`quarantine.jsonl` to OUT. The same inputs and config give byte-identical outputs, and a rerun
on unchanged inputs reuses them (the fingerprint in metadata.json).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from pydantic import BaseModel, ConfigDict, Field

from components.ingest.pipeline import build_pipeline
from components.ingest.records import auto_shards, shard_name
from components.ingest.sources import SPLITS, Discovery, discover, is_remote

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Local default: Beam's direct runner with one worker thread per core. Decoding and encoding in
# Pillow release the GIL, so threads scale; multi-processing mode measured 4x slower here (each
# worker process imports TensorFlow, and every image crosses a gRPC channel) - BENCHMARKS.md.
LOCAL_BEAM_ARGS = [
    "--runner=DirectRunner",
    "--direct_running_mode=multi_threading",
    f"--direct_num_workers={os.cpu_count() or 1}",
]


class IngestConfig(BaseModel):
    """What to ingest and how; saved into metadata.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="dataset root (local path or gs://, s3://)")
    output: str = Field(description="where the shards and reports are written")
    train_shards: int | None = Field(None, ge=1, description="None: ~1024 records a shard")
    validation_shards: int | None = Field(None, ge=1, description="None: ~1024 records a shard")
    max_side: int | None = Field(None, ge=16, description="downscale images with a longer side")
    beam_args: list[str] = Field(default_factory=lambda: list(LOCAL_BEAM_ARGS))


def _shard_counts(config: IngestConfig, found: Discovery) -> dict[str, int]:
    inputs = Counter(item.split for item in found.items)
    asked = {"train": config.train_shards, "validation": config.validation_shards}
    # Never more shards than inputs, so that no shard is empty when every file is good.
    return {s: max(1, min(asked[s] or auto_shards(inputs[s]), inputs[s] or 1)) for s in SPLITS}


def _fingerprint(config: IngestConfig, found: Discovery) -> str:
    """Inputs and the settings that shape the output; runner options do not change the bytes."""
    settings = json.dumps(
        config.model_dump(exclude={"source", "output", "beam_args"}), sort_keys=True
    )
    settings_hash = hashlib.sha256(settings.encode()).hexdigest()[:12]
    return f"v{FORMAT_VERSION}-{found.fingerprint()[:32]}-{settings_hash}"


def _read_lines(pattern: str) -> list[str]:
    lines = []
    for meta in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(meta.path) as handle:
            lines += [ln for ln in handle.read().decode("utf-8").splitlines() if ln.strip()]
    return lines


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path, mime_type="text/plain") as handle:
        handle.write(text.encode("utf-8"))


def read_metadata(output: str) -> dict | None:
    path = FileSystems.join(output, "metadata.json")
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def run_ingest(config: IngestConfig, on_stage: Callable[[str], None] = log.info) -> dict:
    """Runs (or reuses) the ingestion and returns the content of metadata.json."""
    found = discover(config.source)
    shards = _shard_counts(config, found)
    fingerprint = _fingerprint(config, found)
    previous = read_metadata(config.output)
    if previous and previous.get("fingerprint") == fingerprint:
        on_stage(f"inputs unchanged (fingerprint {fingerprint}); reusing {config.output}")
        return {**previous, "reused": True}
    on_stage(
        f"{found.layout}: {len(found.items)} files, {len(found.classes)} classes; shards {shards}"
    )

    if not is_remote(config.output):
        os.makedirs(config.output, exist_ok=True)
    staging = FileSystems.join(config.output, "_staging")
    _remove_outputs(config.output)
    manifest = FileSystems.join(staging, "manifest.jsonl")
    _write_text(manifest, "".join(json.dumps(i.to_json()) + "\n" for i in found.items))

    on_stage(f"converting images with Beam ({' '.join(config.beam_args)})")
    with beam.Pipeline(options=PipelineOptions(config.beam_args)) as pipeline:
        build_pipeline(pipeline, manifest, staging, config.output, shards, config.max_side)

    metadata = _finalize(config, found, shards, fingerprint, staging)
    FileSystems.delete([staging])
    on_stage(f"wrote {metadata['records']} records, quarantined {metadata['quarantined']}")
    return {**metadata, "reused": False}


def _remove_outputs(output: str) -> None:
    """Clears shards and reports of an earlier, different run so that none is mixed in."""
    names = ["metadata.json", "labels.txt", "quarantine.jsonl", "_staging"]
    stale = [
        m.path
        for s in SPLITS
        for m in FileSystems.match([FileSystems.join(output, f"{s}-*-of-*")])[0].metadata_list
    ]
    stale += [
        FileSystems.join(output, n)
        for n in names
        if FileSystems.exists(FileSystems.join(output, n))
    ]
    if stale:
        FileSystems.delete(stale)


def _finalize(
    config: IngestConfig, found: Discovery, shards: dict[str, int], fingerprint: str, staging: str
) -> dict:
    """Writes labels.txt, quarantine.jsonl and metadata.json; checks that nothing was lost."""
    summaries = [json.loads(line) for line in _read_lines(FileSystems.join(staging, "summaries*"))]
    quarantine = sorted(
        (json.loads(line) for line in _read_lines(FileSystems.join(staging, "quarantine*"))),
        key=lambda q: (q["split"], q["path"]),
    )
    written_shards = {(s["split"], s["shard"]) for s in summaries}
    for split in SPLITS:  # shards that got no record still exist, so the -of-N names hold
        for shard in range(shards[split]):
            if (split, shard) not in written_shards:
                _write_text(
                    FileSystems.join(config.output, shard_name(split, shard, shards[split])), ""
                )

    inputs = Counter(item.split for item in found.items)
    records = Counter()
    per_class = {s: Counter() for s in SPLITS}
    formats, reencoded, resized = Counter(), Counter(), 0
    for s in summaries:
        records[s["split"]] += s["records"]
        per_class[s["split"]].update({int(k): v for k, v in s["per_label"].items()})
        formats.update(s["formats"])
        reencoded[s["split"]] += s["reencoded"]
        resized += s["resized"]
    quarantined = Counter(q["split"] for q in quarantine)
    for split in SPLITS:
        if records[split] + quarantined[split] != inputs[split]:
            raise RuntimeError(
                f"ingestion lost files in {split}: {inputs[split]} inputs but {records[split]} "
                f"written + {quarantined[split]} quarantined; outputs in {config.output} are "
                "incomplete"
            )

    _write_text(
        FileSystems.join(config.output, "labels.txt"),
        "".join(f"{c.label}\t{c.wnid}\t{c.text}\n" for c in found.classes),
    )
    _write_text(
        FileSystems.join(config.output, "quarantine.jsonl"),
        "".join(json.dumps(q, sort_keys=True, ensure_ascii=False) + "\n" for q in quarantine),
    )
    metadata = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "layout": found.layout,
        "source": config.source,
        "config": config.model_dump(exclude={"beam_args", "output"}),  # same bytes anywhere
        "num_classes": len(found.classes),
        "inputs": {s: inputs[s] for s in SPLITS},
        "records": {s: records[s] for s in SPLITS},
        "quarantined": {s: quarantined[s] for s in SPLITS},
        "reencoded": {s: reencoded[s] for s in SPLITS},
        "resized": resized,
        "source_formats": dict(sorted(formats.items())),
        "shards": shards,
        "per_class": {s: {str(k): per_class[s][k] for k in sorted(per_class[s])} for s in SPLITS},
    }
    _write_text(
        FileSystems.join(config.output, "metadata.json"),
        json.dumps(metadata, indent=2, sort_keys=True) + "\n",
    )
    return metadata
