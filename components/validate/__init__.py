"""Validation: TFDV statistics of each split checked against the reviewed schema.

    python -m components.validate --data DATA_DIR --output OUT [Beam options]

Fails (exit 1, `ValidationFailed`) on any anomaly: schema anomalies found by TFDV, an image domain
that is not all JPEG, or a record count that differs from what ingestion wrote (metadata.json).
Statistics, the bound schema and the anomaly table are written to OUT.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from components import atomic, dataset, events
from components.dataset import SPLITS
from components.ingest.runners import resolve_beam_args, runner_name
from components.schema import reviewed_schema, with_label_domain

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


class ValidationFailed(RuntimeError):
    """Raised when the data has anomalies; `anomalies` holds the table rows."""

    def __init__(self, anomalies: list[dict]):
        self.anomalies = anomalies
        super().__init__(f"{len(anomalies)} data anomalies:\n{format_table(anomalies)}")


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of anomaly rows (split, feature, problem, detail)."""
    columns = ("split", "feature", "problem", "detail")
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    widths["detail"] = min(widths["detail"], 100)
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append("  ".join(str(row[c])[: widths[c]].ljust(widths[c]) for c in columns))
    return "\n".join(lines)


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


def write_statistics_page(statistics: dict, path: Path) -> str | None:
    """TFDV's statistics page (Facets Overview) of the splits, train and validation side by side
    so that skew between them shows: per feature its distribution, missing values, and the
    image sizes and labels. The page loads Facets from the web when opened."""
    from tensorflow_data_validation.utils.display_util import get_statistics_html

    if not statistics:
        return None
    names = list(statistics)
    html = get_statistics_html(
        statistics[names[0]],
        statistics[names[1]] if len(names) > 1 else None,
        lhs_name=names[0],
        rhs_name=names[1] if len(names) > 1 else "rhs_statistics",
    )
    path.write_text(html)
    return str(path)


def validate(config: ValidateConfig, on_event: events.OnEvent | None = None) -> dict:
    """Computes statistics per split and checks them; returns the result or raises. Progress
    goes to `on_event` (components/events.py; default: this module's logger). The dataset is
    held against rewriting meanwhile (components/dataset.py)."""
    on_event = on_event or events.log_to(log)
    with dataset.locked(config.data_dir, False, lambda m: on_event(events.stage(COMPONENT, m))):
        return _validate(config, on_event)


def _validate(config: ValidateConfig, on_event: events.OnEvent) -> dict:
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions

    data = config.data_dir
    metadata = dataset.read_metadata(data)
    num_classes = int(metadata["num_classes"])
    schema = with_label_domain(reviewed_schema(), num_classes)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, str(out / "schema.pbtxt"))
    options = tfdv.StatsOptions(
        schema=schema, infer_type_from_schema=True, enable_semantic_domain_stats=True
    )
    beam_args = statistics_beam_args(config.beam_args, on_event)
    anomalies: list[dict] = []
    summary = {}
    statistics = {}
    for split in SPLITS:
        expected = int(metadata["records"][split])
        if expected == 0:
            anomalies.append(
                {
                    "split": split,
                    "feature": "*",
                    "problem": "empty split",
                    "detail": "ingestion wrote no records for this split",
                }
            )
            continue
        on_event(
            events.stage(COMPONENT, f"computing TFDV statistics for {split} ({expected} records)")
        )
        stats = tfdv.generate_statistics_from_tfrecord(
            dataset.shard_pattern(data, split),
            output_path=str(out / f"{split}.stats.tfrecord"),
            stats_options=options,
            pipeline_options=PipelineOptions(beam_args),
        )
        statistics[split] = stats
        counted = int(stats.datasets[0].num_examples)
        summary[split] = {"examples": counted, "expected": expected}
        if counted != expected:
            anomalies.append(
                {
                    "split": split,
                    "feature": "*",
                    "problem": "record count",
                    "detail": f"statistics saw {counted} examples, ingestion wrote "
                    f"{expected} (metadata.json)",
                }
            )
        result = tfdv.validate_statistics(stats, schema)
        for name, info in sorted(result.anomaly_info.items()):
            anomalies.append(
                {
                    "split": split,
                    "feature": name,
                    "problem": info.short_description,
                    "detail": info.description,
                }
            )
        anomalies += image_domain_anomalies(split, stats)
    report = {
        "passed": not anomalies,
        "anomalies": anomalies,
        "num_classes": num_classes,
        "splits": summary,
        "statistics_html": write_statistics_page(statistics, out / "statistics.html"),
    }
    atomic.write_json(out / "anomalies.json", report)
    verdict = f"{len(anomalies)} anomalies" if anomalies else "no anomalies"
    page = report["statistics_html"]
    shown = f"; statistics page: {page}" if page else ""
    on_event(events.stage(COMPONENT, verdict + shown))
    if anomalies:
        raise ValidationFailed(anomalies)
    return report
