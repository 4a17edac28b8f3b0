"""Drift and skew: how far a new span's data moved from what came before, in TFDV's measures.

Drift compares a span's training statistics with the span before it; skew compares a span's
validation statistics with its own training statistics. The features, measures (L-infinity
distance for categorical features, Jensen-Shannon divergence for numeric ones) and thresholds
are the reviewed schema's `drift_comparator` and `skew_comparator`, not code. Every distance
TFDV measured becomes a row, past its threshold or not, so that a run records all of them.

Jensen-Shannon divergences are computed here from TFDV's equal-width histograms rather than
taken from TFDV: TFDV 1.16 reports the maximum, 1, when one side is a constant (a histogram of
one zero-width bucket, as the width of pre-resized images is), as if the two had nothing in
common. Here both histograms are put on the same buckets (the union of their edges), a constant
lands in the bucket that holds its value, and the divergence is taken in bits (0 to 1).
"""

from __future__ import annotations

import bisect
import math

from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from components.validate.failures import ValidationFailed

MEASURES = {
    anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "L-infinity",
    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "Jensen-Shannon",
    anomalies_pb2.DriftSkewInfo.Measurement.NORMALIZED_ABSOLUTE_DIFFERENCE: "normalized abs diff",
}
COLUMNS = ("span", "kind", "against", "feature", "measure", "threshold", "value")


def rows(
    span: str,
    kind: str,
    against: str,
    anomalies: anomalies_pb2.Anomalies,
    current: statistics_pb2.DatasetFeatureStatisticsList | None = None,
    baseline: statistics_pb2.DatasetFeatureStatisticsList | None = None,
) -> list[dict]:
    """One row per measured distance of `kind` ("drift" or "skew") in TFDV's answer; with the
    two statistics compared, Jensen-Shannon values computed here (see the module's note)."""
    found = []
    for info in anomalies.drift_skew_info:
        measurements = info.drift_measurements if kind == "drift" else info.skew_measurements
        feature = ".".join(info.path.step)
        for measurement in measurements:
            value = float(measurement.value)
            row = {
                "span": span,
                "kind": kind,
                "against": against,
                "feature": feature,
                "measure": MEASURES.get(measurement.type, str(measurement.type)),
                "threshold": round(float(measurement.threshold), 6),
            }
            js = anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE
            if measurement.type == js and current is not None and baseline is not None:
                ours = _feature_divergence(current, baseline, list(info.path.step))
                if ours is not None:
                    row["tfdv_value"] = round(value, 6)
                    value = ours
            row["value"] = round(value, 6)
            row["drifted"] = value > float(measurement.threshold)
            found.append(row)
    return sorted(found, key=lambda r: r["feature"])


Bucket = tuple[float, float, float]  # low, high, count


def _standard_histogram(
    stats: statistics_pb2.DatasetFeatureStatisticsList, path: list[str]
) -> list[Bucket] | None:
    for feature in stats.datasets[0].features if stats.datasets else []:
        if list(feature.path.step) == path or (not feature.path.step and [feature.name] == path):
            if not feature.HasField("num_stats"):
                return None
            for histogram in feature.num_stats.histograms:
                if histogram.type == statistics_pb2.Histogram.STANDARD:
                    return [(b.low_value, b.high_value, b.sample_count) for b in histogram.buckets]
    return None


def _feature_divergence(current, baseline, path: list[str]) -> float | None:
    ours, theirs = _standard_histogram(current, path), _standard_histogram(baseline, path)
    if not ours or not theirs:
        return None
    return jensen_shannon(ours, theirs)


def jensen_shannon(first: list[Bucket], second: list[Bucket]) -> float:
    """The Jensen-Shannon divergence (bits, 0 to 1) of two histograms of one numeric feature,
    both spread over the union of their bucket edges: a bucket's count is shared among the
    common buckets it overlaps, in proportion; a zero-width bucket (a constant) goes whole to
    the common bucket holding its value (low < value <= high, as TFDV fills them), or stands on
    its own outside every bucket."""
    edges = sorted({e for low, high, _ in first + second if high > low for e in (low, high)})

    def spread(buckets: list[Bucket]) -> dict:
        mass: dict = {}
        for low, high, count in buckets:
            if count <= 0:
                continue
            if high > low:
                start = bisect.bisect_right(edges, low) - 1
                for i in range(max(start, 0), len(edges) - 1):
                    if edges[i] >= high:
                        break
                    overlap = min(high, edges[i + 1]) - max(low, edges[i])
                    if overlap > 0:
                        mass[i] = mass.get(i, 0.0) + count * overlap / (high - low)
            elif edges and edges[0] <= low <= edges[-1]:
                i = max(bisect.bisect_left(edges, low) - 1, 0)
                mass[i] = mass.get(i, 0.0) + count
            else:
                mass[("at", low)] = mass.get(("at", low), 0.0) + count
        total = sum(mass.values())
        return {k: v / total for k, v in mass.items()} if total else {}

    p, q = spread(first), spread(second)
    if not p or not q:
        return 0.0
    divergence = 0.0
    for key in set(p) | set(q):
        a, b = p.get(key, 0.0), q.get(key, 0.0)
        m = (a + b) / 2
        if a:
            divergence += 0.5 * a * math.log2(a / m)
        if b:
            divergence += 0.5 * b * math.log2(b / m)
    return min(1.0, max(0.0, divergence))


def format_table(found: list[dict]) -> str:
    """A fixed-width text table of drift rows."""
    widths = {c: max([len(c)] + [len(_shown(r[c])) for r in found]) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines.append("  ".join("-" * widths[c] for c in COLUMNS))
    for row in found:
        lines.append("  ".join(_shown(row[c]).ljust(widths[c]) for c in COLUMNS))
    return "\n".join(lines)


def _shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def described(row: dict) -> str:
    """One row in words: 'span 02 width drift (Jensen-Shannon against span 01) 1 > 0.3'."""
    return (
        f"span {row['span']} {row['feature']} {row['kind']} ({row['measure']} against "
        f"{row['against']}) {row['value']:.4g} > {row['threshold']:.4g}"
    )


class DriftDetected(ValidationFailed):
    """New data moved past the schema's thresholds; `drift` holds every measured row."""

    hint = "drift"

    def __init__(self, drift: list[dict]):
        past = [row for row in drift if row["drifted"]]
        listed = "; ".join(described(r) for r in past[:5])
        more = f"; and {len(past) - 5} more" if len(past) > 5 else ""
        super().__init__(
            [],
            drift,
            f"{len(past)} distances past their thresholds: {listed}{more}\n{format_table(past)}",
        )
