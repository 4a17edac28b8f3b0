"""Validation: TFDV statistics of each split checked against the reviewed schema.

    python -m components.validate --data DATA_DIR --output OUT [Beam options]

Fails (exit 1, `ValidationFailed`) on any anomaly: schema anomalies found by TFDV, an image domain
that is not all JPEG, or a record count that differs from what ingestion wrote (metadata.json).
Statistics are computed per span (components/spans.py) and kept in the span's folder, so a span
is counted once however many runs read it. Each new span is compared with the span before it
(drift) and its validation images with its training images (skew), against the thresholds of
the reviewed schema; past one, the run stops with `DriftDetected` unless `accept_drift`.
Statistics, the bound schema, the anomaly table and every drift distance are written to OUT.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from components import atomic, dataset, events, spans
from components.dataset import SPLITS
from components.ingest import STATISTICS
from components.ingest.runners import resolve_beam_args, runner_name
from components.schema import SCHEMA_PATH, reviewed_schema, with_label_domain
from components.validate import drift
from components.validate.drift import DriftDetected
from components.validate.failures import ValidationFailed, format_table

__all__ = ["DriftDetected", "ValidateConfig", "ValidationFailed", "format_table", "validate"]

log = logging.getLogger(__name__)
COMPONENT = "validate"


class ValidateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: str = Field(description="output folder of components.ingest")
    output: str = Field(description="statistics, anomalies and the bound schema go here")
    beam_args: list[str] = Field(
        default_factory=list,
        description="Beam runner options for TFDV, the same as ingestion's; empty: local runner",
    )
    new_spans: list[str] | None = Field(
        None,
        description="the spans to check for drift and skew (those the champion did not learn "
        "from); None: every span",
    )
    accept_drift: bool = Field(False, description="record drift past a threshold, do not stop")
    accept_leaks: bool = Field(
        False,
        description="go on when more validation images than the schema allows are copies of "
        "training images (the gate leaves them out either way)",
    )


def image_domain_anomalies(split: str, stats) -> list[dict]:
    """The schema's image domain: TFDV's image format histogram must show JPEG only."""
    rows = []
    for feature in stats.datasets[0].features:
        if feature.path.step[:1] != ["image"]:
            continue
        for custom in feature.custom_stats:
            if custom.name != "image_format_histogram":
                continue
            for bucket in custom.rank_histogram.buckets:
                if bucket.label != "jpeg" and bucket.sample_count > 0:
                    rows.append(
                        {
                            "split": split,
                            "feature": "image",
                            "problem": "not JPEG",
                            "detail": f"{bucket.sample_count:.0f} values are {bucket.label}",
                        }
                    )
    return rows


def statistics_beam_args(beam_args: list[str], on_event: events.OnEvent) -> list[str]:
    """The runner options for TFDV: ingestion's, except on Dask.

    Beam's DaskRunner cannot run TFDV's statistics pipeline (its combiners receive malformed
    accumulators there, and file sinks with side inputs fail), so statistics of a Dask-ingested
    dataset are computed with the local runner, which reads the same shards.
    """
    if runner_name(beam_args).lower() == "daskrunner":
        on_event(
            events.stage(
                COMPONENT,
                "TFDV cannot run on Beam's DaskRunner: computing statistics with the local runner",
            )
        )
        return resolve_beam_args([], 1)
    return resolve_beam_args(beam_args, 1)


def write_statistics_page(
    statistics: dict,
    path: Path,
    anomalies: list[dict] | None = None,
    drift_rows: list[dict] | None = None,
    duplicates: dict | None = None,
) -> str | None:
    """The statistics page of two sets of statistics side by side (a span's train and
    validation splits, or a new span and the span before it), so that skew or drift shows: the
    anomalies, drift and copies first, then per feature its distribution, missing values, mean
    and range. Self-contained (components/validate/pages.py): it draws with no internet access.
    TFDV's own page (Facets, which loads its scripts from the web) is written beside it as
    `<name>-facets.html`, for where it loads."""
    from tensorflow_data_validation.utils.display_util import get_statistics_html

    from components.validate.pages import statistics_page

    if not statistics:
        return None
    names = list(statistics)
    title = " vs ".join(names) + " — statistics"
    path.write_text(statistics_page(title, statistics, anomalies, drift_rows, duplicates))
    facets = get_statistics_html(
        statistics[names[0]],
        statistics[names[1]] if len(names) > 1 else None,
        lhs_name=names[0],
        rhs_name=names[1] if len(names) > 1 else "rhs_statistics",
    )
    path.with_name(f"{path.stem}-facets.html").write_text(facets)
    return str(path)


def validate(config: ValidateConfig, on_event: events.OnEvent | None = None) -> dict:
    """Computes statistics per span and split and checks them; returns the result or raises.
    Progress goes to `on_event` (components/events.py; default: this module's logger). The
    dataset is held against rewriting meanwhile (components/dataset.py)."""
    on_event = on_event or events.log_to(log)
    with dataset.locked(config.data_dir, False, lambda m: on_event(events.stage(COMPONENT, m))):
        return _validate(config, on_event)


class _Statistics:
    """Statistics of one span's split: from the span's folder when computed before for the same
    schema and TFDV, else computed (and kept there, when the folder can be written)."""

    def __init__(self, config: ValidateConfig, schema, beam_args: list[str], on_event):
        import tensorflow_data_validation as tfdv

        self.config, self.beam_args, self.on_event = config, beam_args, on_event
        self.options = tfdv.StatsOptions(
            schema=schema, infer_type_from_schema=True, enable_semantic_domain_stats=True
        )
        key = f"{SCHEMA_PATH.read_text()}\0{tfdv.__version__}\0{schema.SerializeToString()!r}"
        self.version = hashlib.sha256(key.encode()).hexdigest()[:12]

    def __call__(self, span: dict, split: str, label: str):
        import tensorflow_data_validation as tfdv
        from apache_beam.options.pipeline_options import PipelineOptions

        folder = spans.span_folder(self.config.data_dir, span)
        pattern = dataset.shard_pattern(folder, split)
        kept = dataset.join(
            folder, STATISTICS, f"{split}-{self._signature(pattern)}.stats.tfrecord"
        )
        out = Path(self.config.output) / "statistics" / span["name"]
        out.mkdir(parents=True, exist_ok=True)
        local = out / f"{split}.stats.tfrecord"
        if dataset.exists(kept):
            try:
                atomic.write_bytes(local, dataset.read_bytes(kept))
                return tfdv.load_statistics(str(local))
            except Exception as err:  # noqa: BLE001 - a torn copy is computed again
                self.on_event(events.stage(COMPONENT, f"ignoring {kept}: {err}"))
        expected = int(span["records"][split])
        message = f"computing TFDV statistics for {label}{split} ({expected} records)"
        self.on_event(events.stage(COMPONENT, message))
        stats = tfdv.generate_statistics_from_tfrecord(
            pattern,
            output_path=str(local),
            stats_options=self.options,
            pipeline_options=PipelineOptions(self.beam_args),
        )
        try:  # kept for the next run; a dataset this run may not write is computed each time
            dataset.write_bytes(kept, local.read_bytes())
        except OSError as err:
            self.on_event(events.stage(COMPONENT, f"statistics not kept in {kept}: {err}"))
        return stats

    def _signature(self, pattern: str) -> str:
        """The schema, TFDV's version and every shard's name, size and time: statistics are
        reused only for exactly these records (a shard changed by hand is counted again)."""
        from apache_beam.io.filesystems import FileSystems

        shards = sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path)
        listed = "".join(
            f"{m.path.rsplit('/', 1)[-1]}\0{m.size_in_bytes}\0{m.last_updated_in_seconds}\n"
            for m in shards
        )
        return hashlib.sha256(f"{self.version}\0{listed}".encode()).hexdigest()[:16]


def _validate(config: ValidateConfig, on_event: events.OnEvent) -> dict:
    import tensorflow_data_validation as tfdv

    data = config.data_dir
    metadata = dataset.read_metadata(data)
    window = spans.manifest(data)
    num_classes = int(metadata["num_classes"])
    schema = with_label_domain(reviewed_schema(), num_classes)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, str(out / "schema.pbtxt"))
    statistics_of = _Statistics(
        config, schema, statistics_beam_args(config.beam_args, on_event), on_event
    )
    anomalies: list[dict] = []
    summary = {
        split: {"examples": 0, "expected": int(metadata["records"][split])} for split in SPLITS
    }
    computed: dict[tuple[str, str], object] = {}
    for split in SPLITS:
        if summary[split]["expected"] == 0:
            anomalies.append(
                {
                    "split": split,
                    "feature": "*",
                    "problem": "empty split",
                    "detail": "ingestion wrote no records for this split",
                }
            )
    for span in window:
        where = "" if len(window) == 1 else f"span {span['name']} "
        for split in SPLITS:
            expected = int(span["records"][split])
            if expected == 0:
                continue
            stats = computed[(span["name"], split)] = statistics_of(span, split, where)
            counted = int(stats.datasets[0].num_examples)
            summary[split]["examples"] += counted
            if counted != expected:
                anomalies.append(
                    {
                        "split": split,
                        "feature": "*",
                        "problem": "record count",
                        "detail": f"{where}statistics saw {counted} examples, "
                        f"ingestion wrote {expected} (metadata.json)",
                    }
                )
            result = tfdv.validate_statistics(stats, schema)
            for name, info in sorted(result.anomaly_info.items()):
                anomalies.append(
                    {
                        "split": split,
                        "feature": name,
                        "problem": info.short_description,
                        "detail": where + info.description,
                    }
                )
            anomalies += image_domain_anomalies(split, stats)
    leaks = leak_rows(data, metadata, window, max_leaked_fraction(schema))
    if leaks and not config.accept_leaks:
        anomalies += leaks
    measured, pair = _drift(
        config, window, computed, schema, metadata.get("previous_span"), statistics_of
    )
    newest = next((s["name"] for s in reversed(window) if (s["name"], "train") in computed), None)
    pages = {
        ("" if len(window) == 1 else f"span {newest} ") + split: computed[(newest, split)]
        for split in SPLITS
        if (newest, split) in computed
    }
    drift_page = _drift_page(pair, computed, out, measured)
    drifted = [row for row in measured if row["drifted"]]
    report = {
        "passed": not anomalies and (not drifted or config.accept_drift),
        "anomalies": anomalies,
        "drift": measured,
        "drift_accepted": drifted if config.accept_drift else [],
        "leaks_accepted": leaks if config.accept_leaks else [],
        "duplicates": metadata.get("duplicates"),
        "num_classes": num_classes,
        "spans": [s["name"] for s in window],
        "splits": summary,
        "statistics_html": write_statistics_page(
            pages, out / "statistics.html", anomalies, measured, metadata.get("duplicates")
        ),
        "drift_html": drift_page,
    }
    atomic.write_json(out / "anomalies.json", report)
    verdict = f"{len(anomalies)} anomalies" if anomalies else "no anomalies"
    if measured:
        verdict += f"; {len(drifted)} of {len(measured)} drift/skew distances past their thresholds"
        verdict += " (accepted)" if drifted and config.accept_drift else ""
    page = report["statistics_html"]
    on_event(events.stage(COMPONENT, verdict + (f"; statistics page: {page}" if page else "")))
    if anomalies:
        raise ValidationFailed(anomalies, measured)
    for row in drifted:  # one line each: a log shows each line on its own
        on_event(events.stage(COMPONENT, drift.described(row)))
    if drifted and not config.accept_drift:
        raise DriftDetected(measured)
    return report


LEAK_TAG = "max_leaked_validation_fraction="


def max_leaked_fraction(schema) -> float:
    """The reviewed schema's bound on validation images that are copies of training images (a
    schema-level `annotation { tag: "max_leaked_validation_fraction=F" }`); 0 without one."""
    for tag in schema.annotation.tag:
        if tag.startswith(LEAK_TAG):
            return float(tag[len(LEAK_TAG) :])
    return 0.0


def leak_rows(data: str, metadata: dict, window: list[dict], bound: float) -> list[dict]:
    """Anomaly rows when more validation images than `bound` (a fraction) are exact or near
    copies of training images (found by ingestion, components/ingest/similarity.py): one row
    with the count, then the first pairs by name."""
    found = metadata.get("duplicates") or {}
    leaked = int(found.get("leaked_validation", 0))
    total = int(metadata["records"][dataset.VALIDATION]) or 1
    if leaked <= bound * total:
        return []
    rows = [
        {
            "split": dataset.VALIDATION,
            "feature": "image",
            "problem": "copies of training images",
            "detail": f"{leaked} of {total} validation images ({leaked / total:.2%}) are exact "
            f"or near copies of training images, more than the schema's {bound:.2%} "
            "(max_leaked_validation_fraction): they would inflate top-1 (the gate leaves them "
            "out); remove them from validation, or run with accept_leaks",
        }
    ]
    # The dataset's (or view's) own file, which pairs spans too; else each span's (a view
    # written before views searched their spans together).
    paths = [dataset.join(data, "duplicates.json")]
    if not dataset.exists(paths[0]):
        paths = [dataset.join(spans.span_folder(data, s), "duplicates.json") for s in window]
    for path in paths:
        if not dataset.exists(path):
            continue
        for pair in json.loads(dataset.read_text(path))["pairs"]:
            if pair["scope"] == "validation-train" and len(rows) <= 5:
                rows.append(
                    {
                        "split": dataset.VALIDATION,
                        "feature": "image",
                        "problem": f"{pair['kind']} copy ({pair['bits']} bits)",
                        "detail": f"{pair['validation']} = {pair['train']}",
                    }
                )
    return rows


def _drift(
    config: ValidateConfig,
    window: list[dict],
    computed: dict,
    schema,
    previous: dict | None,
    statistics_of: _Statistics,
) -> tuple[list[dict], tuple[str, str] | None]:
    """Every drift and skew distance of the spans to check: each against the nearest span
    before it with training images (for a window's first, the span before the window), and
    its validation images against its training images. Also the last (span, baseline) pair."""
    import tensorflow_data_validation as tfdv

    checked = set(config.new_spans) if config.new_spans is not None else None
    found, pair = [], None
    for index, span in enumerate(window):
        name = span["name"]
        if (checked is not None and name not in checked) or (name, "train") not in computed:
            continue
        train = computed[(name, "train")]
        before = next(
            (s["name"] for s in reversed(window[:index]) if (s["name"], "train") in computed),
            None,
        )
        if before is None and previous is not None and int(previous["records"]["train"]):
            before = previous["name"]
            if (before, "train") not in computed:
                computed[(before, "train")] = statistics_of(previous, "train", f"span {before} ")
        if before is not None:
            answer = tfdv.validate_statistics(
                train, schema, previous_statistics=computed[(before, "train")]
            )
            found += drift.rows(
                name, "drift", f"span {before}", answer, train, computed[(before, "train")]
            )
            pair = (name, before)
        if (name, "validation") in computed:
            answer = tfdv.validate_statistics(
                train, schema, serving_statistics=computed[(name, "validation")]
            )
            found += drift.rows(
                name, "skew", "its training images", answer, computed[(name, "validation")], train
            )
    return found, pair


def _drift_page(
    pair: tuple[str, str] | None, computed: dict, out: Path, measured: list[dict]
) -> str | None:
    """A span's training statistics beside those of the span before it."""
    if pair is None:
        return None
    name, before = pair
    pages = {
        f"span {name} train": computed[(name, "train")],
        f"span {before} train": computed[(before, "train")],
    }
    return write_statistics_page(pages, out / "drift.html", drift_rows=measured)
