"""The Beam job: manifest of source files -> converted examples -> deterministic TFRecord shards.

Each step is a named composite transform around a plain function from `images`/`records`. Files
that cannot become examples leave through a counted dead-letter output (the quarantine), never
silently.
"""

from __future__ import annotations

import functools
import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from components.ingest.images import BadImage, to_stored_image
from components.ingest.records import (
    make_example,
    order_key,
    shard_name,
    shard_of,
    tfrecord_frame,
)

QUARANTINE = "quarantine"


class ConvertImageFn(beam.DoFn):
    """Manifest item -> ((split, shard), (order, example, label, stats)); bad ones: QUARANTINE."""

    def __init__(self, shards: dict[str, int], max_side: int | None):
        self._shards = shards
        self._max_side = max_side
        self._written = Metrics.counter("ingest", "examples_written")
        self._quarantined = Metrics.counter("ingest", "files_quarantined")
        self._reencoded = Metrics.counter("ingest", "images_reencoded")

    def process(self, item: dict):
        reason = item.get("problem")
        stored = None
        if not reason:
            try:
                with FileSystems.open(item["path"]) as handle:
                    data = handle.read()
                stored = to_stored_image(data, self._max_side)
            except BadImage as err:
                reason = str(err)
            except OSError as err:
                reason = f"unreadable file: {err}"
        if reason:
            self._quarantined.inc()
            yield beam.pvalue.TaggedOutput(
                QUARANTINE, {"path": item["path"], "split": item["split"], "reason": reason}
            )
            return
        filename = item["relpath"].rsplit("/", 1)[-1]
        example = make_example(stored, item["label"], item["text"], filename, item["boxes"])
        self._written.inc()
        self._reencoded.inc(int(stored.reencoded))
        split = item["split"]
        key = order_key(split, item["relpath"])
        stats = {
            "format": stored.source_format,
            "reencoded": stored.reencoded,
            "resized": stored.resized,
        }
        yield (split, shard_of(key, self._shards[split])), (key, example, item["label"], stats)


def write_shard(output: str, num_shards: dict[str, int], element) -> dict:
    """Writes one shard, records in key order, and returns its summary for metadata.json."""
    (split, shard), records = element
    records = sorted(records, key=lambda r: r[0])
    path = FileSystems.join(output, shard_name(split, shard, num_shards[split]))
    per_label: dict[int, int] = {}
    formats: dict[str, int] = {}
    reencoded = resized = 0
    with FileSystems.create(path, mime_type="application/octet-stream") as handle:
        for _, example, label, stats in records:
            handle.write(tfrecord_frame(example))
            per_label[label] = per_label.get(label, 0) + 1
            formats[stats["format"]] = formats.get(stats["format"], 0) + 1
            reencoded += stats["reencoded"]
            resized += stats["resized"]
    return {
        "split": split,
        "shard": shard,
        "records": len(records),
        "per_label": per_label,
        "formats": formats,
        "reencoded": reencoded,
        "resized": resized,
    }


class ConvertImages(beam.PTransform):
    """Manifest items -> keyed examples (main output) and quarantine records (QUARANTINE)."""

    def __init__(self, shards: dict[str, int], max_side: int | None):
        super().__init__()
        self._fn = ConvertImageFn(shards, max_side)

    def expand(self, items):
        return items | beam.ParDo(self._fn).with_outputs(QUARANTINE, main="examples")


class WriteShards(beam.PTransform):
    """Groups keyed examples by shard and writes each shard file; emits one summary per shard."""

    def __init__(self, output: str, shards: dict[str, int]):
        super().__init__()
        self._output = output
        self._shards = shards

    def expand(self, examples):
        return (
            examples
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(functools.partial(write_shard, self._output, self._shards))
        )


def build_pipeline(
    pipeline: beam.Pipeline,
    manifest: str,
    staging: str,
    output: str,
    shards: dict[str, int],
    max_side: int | None,
) -> None:
    """Wires the job: the driver reads the staged summaries and quarantine afterwards."""
    items = (
        pipeline
        | "ReadManifest" >> beam.io.ReadFromText(manifest)
        | "ParseManifest" >> beam.Map(json.loads)
        # The manifest is one small file, read as one bundle: spread the images over workers.
        | "SpreadOverWorkers" >> beam.Reshuffle()
    )
    converted = items | "ConvertImages" >> ConvertImages(shards, max_side)
    (
        converted.examples
        | "WriteShards" >> WriteShards(output, shards)
        | "SummaryJson" >> beam.Map(lambda s: json.dumps(s, sort_keys=True))
        | "WriteSummaries" >> beam.io.WriteToText(FileSystems.join(staging, "summaries"))
    )
    (
        converted[QUARANTINE]
        | "QuarantineJson" >> beam.Map(lambda q: json.dumps(q, sort_keys=True, ensure_ascii=False))
        | "WriteQuarantine" >> beam.io.WriteToText(FileSystems.join(staging, "quarantine"))
    )
